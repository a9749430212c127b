"""Jitter measurement: known motion in, the same motion out; the noisy clip is what it claims."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from retinaface.faces.face import Face
from retinaface.evaluation.jitter import measure_jitter, still_face_clip


class ScriptedDetector:
    """Returns one face per frame whose box and landmarks move right by ``step`` px each frame, plus a
    second face that appears only in every other frame (it must not be the track measured)."""

    def __init__(self, step: float) -> None:
        self.step, self.frame = step, 0
        self.model = SimpleNamespace()  # no mesh branch

    def detect_batch(self, images, *, tracker=None):
        shift = self.step * self.frame
        box = np.array([100 + shift, 100, 200 + shift, 200.0])  # sqrt(area) = 100
        landmarks = np.array([[130, 130], [170, 130], [150, 150], [135, 170], [165, 170.0]]) + [shift, 0]
        boxes = [box] + ([np.array([400, 400, 450, 450.0])] if self.frame % 2 == 0 else [])
        ids = tracker.update(np.stack(boxes))
        faces = [Face(b, 0.9, landmarks, np.zeros(144), track_id=int(i)) for b, i in zip(boxes, ids)]
        self.frame += 1
        return [faces]


def test_known_motion_is_measured_exactly() -> None:
    report = measure_jitter(ScriptedDetector(step=1.5), [None] * 10)
    assert report["frames"] == 10 and report["tracked_frames"] == 10
    assert report["face_size_px"] == pytest.approx(100.0)
    for key in ("box", "landmarks"):
        assert report[key]["median_px"] == pytest.approx(1.5)
        assert report[key]["p95_rel"] == pytest.approx(0.015)
    assert "mesh" not in report and "pose_std_deg" not in report


def test_still_face_clip_adds_independent_noise_of_the_requested_size() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    a, b = still_face_clip(image, frames=2, noise=3.0, seed=1)
    assert (a.astype(float) - 128).std() == pytest.approx(3.0, rel=0.1)
    assert np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1] < 0.1
