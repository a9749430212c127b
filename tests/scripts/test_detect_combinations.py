"""``detect --mesh`` with every test-time view option and smoothing, on a photo, a folder and a video.

The per-face stages (refine, track, fit) run once on each frame's final faces, whatever views were merged
to find them, so every face written has a mesh, and that mesh belongs to the landmarks written beside it:
the template's own five landmark points of the fitted mesh lie on the reported landmarks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from retinaface.cli.detect import main as detect_main
from retinaface.samples import ASTRONAUT, ASTRONAUT_FACE_BOX, write_demo_video
from retinaface.mesh.template import load_template

OPTIONS = {"flip": ["--flip"], "scales": ["--scales", "0.75,1"], "rotations": ["--rotations"], "smooth": ["--smooth"]}


def _detect(tmp_path: Path, source: Path, name: str, *extra: str) -> list[dict]:
    json_path = tmp_path / f"{name}.jsonl"
    code = detect_main([str(source), "--mesh", "--mesh-steps", "1", "--no-draw", "--no-progress", "--json", str(json_path), *extra])
    assert code == 0
    return [json.loads(line) for line in json_path.read_text().splitlines()]


def _assert_meshed(record: dict, expected_faces: int) -> None:
    """Every face has a fitted mesh whose five landmark points lie on the face's reported landmarks."""
    assert len(record["faces"]) == expected_faces
    template = load_template()
    for face in record["faces"]:
        assert face["pose"] is not None and len(face["mesh_vertices"]) == 468
        vertices = torch.tensor(face["mesh_vertices"], dtype=torch.float32)
        mesh_points = template.landmarks(vertices)[:, :2].numpy()
        landmarks = np.array(face["landmarks"])
        x1, y1, x2, y2 = face["box"]
        # within 8 % of the face size: the mesh was fitted to these landmarks, not to another view's
        assert np.linalg.norm(mesh_points - landmarks, axis=1).max() < 0.08 * max(x2 - x1, y2 - y1)
        inside = (vertices[:, 0] > x1 - 5) & (vertices[:, 0] < x2 + 5) & (vertices[:, 1] > y1 - 5) & (vertices[:, 1] < y2 + 25)
        assert float(inside.float().mean()) > 0.9


@pytest.fixture(scope="module")
def turned_photo(tmp_path_factory) -> Path:
    """The sample photo turned 90 degrees clockwise: only --rotations finds an upright face in it."""
    path = tmp_path_factory.mktemp("turned") / "turned.png"
    cv2.imwrite(str(path), np.ascontiguousarray(np.rot90(cv2.imread(str(ASTRONAUT)), -1)))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, turned_photo) -> Path:
    path = tmp_path_factory.mktemp("folder")
    shutil.copy(ASTRONAUT, path / "a.jpg")
    shutil.copy(turned_photo, path / "b.png")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_demo_video(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=4)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_photo_gets_one_meshed_face_with_every_option(tmp_path, turned_photo, option):
    source = turned_photo if option == "rotations" else ASTRONAUT
    (record,) = _detect(tmp_path, source, option, *OPTIONS[option])
    _assert_meshed(record, 1)
    if option != "rotations":
        box = torch.tensor([record["faces"][0]["box"]])
        from torchvision.ops import box_iou

        assert float(box_iou(box, torch.tensor([ASTRONAUT_FACE_BOX]))) > 0.6  # the hand-drawn box


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_folder_images_get_meshes_with_every_option(tmp_path, folder, option):
    records = {Path(r["source"]).name: r for r in _detect(tmp_path, folder, option, *OPTIONS[option])}
    assert sorted(records) == ["a.jpg", "b.png"]
    _assert_meshed(records["a.jpg"], 1)
    if option == "rotations":
        _assert_meshed(records["b.png"], 1)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_video_frames_get_meshes_and_tracks_with_every_option(tmp_path, clip, option):
    records = _detect(tmp_path, clip, option, "--track", *OPTIONS[option])
    assert len(records) == 4
    for record in records:
        assert len(record["faces"]) >= 2  # at least the two larger of the three pasted faces
        _assert_meshed(record, len(record["faces"]))
        assert all(face["track_id"] is not None for face in record["faces"])
