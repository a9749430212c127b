"""Track ids across frames and One-Euro smoothing."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from retinaface.samples import demo_frames
from retinaface.faces.tracking import IouTracker, OneEuroFilter


def test_ids_follow_moving_boxes_whatever_their_order():
    tracker = IouTracker()
    boxes = np.array([[0, 0, 10, 10], [50, 50, 70, 70], [100, 0, 120, 30]], np.float64)
    assert tracker.update(boxes) == [0, 1, 2]
    rng = np.random.default_rng(0)
    for step in range(1, 20):
        moved = boxes + [2 * step, step, 2 * step, step]
        order = rng.permutation(3)
        ids = tracker.update(moved[order])
        assert ids == order.tolist()


def test_missed_frames_keep_the_id_until_max_missed():
    tracker = IouTracker(max_missed=2)
    face = np.array([[0, 0, 10, 10]], np.float64)
    assert tracker.update(face) == [0]
    tracker.update(np.zeros((0, 4)))
    tracker.update(np.zeros((0, 4)))
    assert [t.box.tolist() for t in tracker.missing()] == [[0, 0, 10, 10]]
    assert tracker.update(face) == [0]  # back after two missed frames: same id
    for _ in range(3):
        tracker.update(np.zeros((0, 4)))
    assert tracker.missing() == []
    assert tracker.update(face) == [1]  # gone for three: a new track


def test_track_ids_constant_on_a_clip_panning_over_faces(detector):
    tracker = IouTracker()
    per_copy: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for frame, truth in demo_frames(num_frames=20, width=960, height=540):
        faces = detector(frame)
        ids = tracker.update(np.stack([f.box for f in faces]) if faces else np.zeros((0, 4)))
        iou = box_iou(torch.tensor(truth, dtype=torch.float64), torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float64)))
        for copy in range(3):
            best = int(iou[copy].argmax())
            assert iou[copy, best] > 0.5
            per_copy[copy].add(ids[best])
    assert all(len(ids) == 1 for ids in per_copy.values()), per_copy
    assert len(set.union(*per_copy.values())) == 3


def test_one_euro_filter_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(1)
    still = 100 + rng.normal(0, 2, 300)
    filt = OneEuroFilter(frequency=30, min_cutoff=1.0, beta=0.05)
    smoothed = np.array([filt(np.array([v]))[0] for v in still])
    assert smoothed[30:].std() < 0.4 * still[30:].std()
    ramp = np.arange(300) * 5.0  # 150 px/s motion: little lag
    filt = OneEuroFilter(frequency=30, min_cutoff=1.0, beta=0.05)
    followed = np.array([filt(np.array([v]))[0] for v in ramp])
    assert np.abs(followed[100:] - ramp[100:]).max() < 10.0
    filt = OneEuroFilter(frequency=30)
    assert filt(np.array([3.0, 4.0])).tolist() == [3.0, 4.0]


def test_a_briefly_missed_face_keeps_its_id_and_state() -> None:
    tracker = IouTracker(max_missed=2)
    box = np.array([[0, 0, 20, 20.0]])
    (track,) = tracker.update(box)
    tracker.state[track] = "previous fit"
    tracker.update(np.zeros((0, 4)))
    tracker.update(np.zeros((0, 4)))
    assert tracker.update(box) == [track] and tracker.state[track] == "previous fit"
    for _ in range(3):
        tracker.update(np.zeros((0, 4)))
    assert tracker.tracks == [] and tracker.state == {}


def test_detector_hands_each_face_its_previous_frame_for_warm_starts(detector, astronaut_image) -> None:
    from retinaface import Detector
    from retinaface.inference.stages import FaceStages

    class RecordingFitter:
        """Stands in for the mesh fit: records the warm-start states it is given and leaves one per face."""

        calls: list = []

        def __call__(self, image, faces, init=None):
            self.calls.append(list(init))
            for face in faces:
                face.mesh_state = ("fit of frame", len(self.calls) - 1, face.track_id)
            return faces

    fitter = RecordingFitter()
    recording = Detector(detector.model)
    recording.stages = FaceStages(mesh_fitter=fitter)
    tracker = IouTracker()
    shifted = np.roll(astronaut_image, 6, axis=1)  # the face moved a little: same track
    first = recording.detect_batch([astronaut_image, shifted], tracker=tracker)
    second = recording.detect_batch([astronaut_image], tracker=tracker)
    assert [len(f) for f in first + second] == [1, 1, 1]
    assert {f[0].track_id for f in first + second} == {0}
    assert fitter.calls == [[None], [("fit of frame", 0, 0)], [("fit of frame", 1, 0)]]
    assert tracker.state[0].face is second[0][0]
