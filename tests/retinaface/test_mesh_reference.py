"""Mesh and head-pose accuracy held against a committed mediapipe FaceMesh reference (an independent judge).

``tests/data/mediapipe_faces.json`` holds mediapipe FaceMesh 0.10.14's 468 points (Apache-2.0 software; its
output on two public-domain portraits) for the faces of the astronaut sample and matplotlib's Grace Hopper
portrait, written by ``python scripts/make_mediapipe_fixture.py``. The thresholds sit a little above what
``scripts/bench_mesh_accuracy.py`` measures on these faces (NME 0.026 each; pose 7.6 and 1.6 degrees), so a
change that makes meshes or poses worse fails here without mediapipe installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface import Detector
from retinaface.evaluation.mesh_accuracy import (
    nme,
    pose_error,
    template_vertices_in_boxes,
)
from retinaface.faces.pose import head_model_vertices
from retinaface.media.images import read_image
from retinaface.samples import ASTRONAUT

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "mediapipe_faces.json"
PHOTOS = {"astronaut.jpg": ASTRONAUT, "grace_hopper.jpg": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}


@pytest.fixture(scope="module")
def scored():
    """Per reference face: (our face, reference points ndarray[468, 3], reference box)."""
    detector = Detector.from_pretrained(device="cpu", mesh=True)
    rows = []
    for photo in json.loads(REFERENCE.read_text())["photos"]:
        faces = detector(read_image(PHOTOS[photo["name"]]))
        assert len(faces) == len(photo["faces"]) == 1
        for reference in photo["faces"]:
            iou = box_iou(torch.tensor([reference["box"]]), torch.tensor(np.stack([f.box for f in faces])))[0]
            assert float(iou.max()) > 0.8  # the detection the reference crop was taken around
            rows.append((faces[int(iou.argmax())], np.array(reference["points"]), np.array(reference["box"])))
    return rows


def test_fitted_meshes_stay_close_to_mediapipe_and_beat_the_template(scored):
    assert len(scored) == 2
    for face, points, box in scored:
        ours = nme(face.mesh_vertices, points, box)
        template = nme(template_vertices_in_boxes(face.box[None])[0], points, box)
        assert ours < 0.035, ours
        assert ours < 0.6 * template, (ours, template)


def test_head_poses_agree_with_mediapipe(scored):
    template = head_model_vertices()  # the head frame our poses are measured in
    errors = [pose_error(face.pose, points, template).angle for face, points, _ in scored]
    assert len(errors) == 2 and max(errors) < 10.0, errors
