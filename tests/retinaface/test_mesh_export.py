"""68-point landmarks read off the fitted mesh, and meshes written as PLY files (``--mesh-export``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retinaface.cli.detect import main as detect_main
from retinaface.samples import ASTRONAUT


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    code = detect_main([str(ASTRONAUT), "--mesh", "--mesh-steps", "5", "--mesh-export", str(folder / "meshes"),
                        "--no-draw", "--no-progress", "--json", str(folder / "faces.jsonl")])
    assert code == 0
    (record,) = [json.loads(line) for line in (folder / "faces.jsonl").read_text().splitlines()]
    (face,) = record["faces"]
    return face


def test_68_landmarks_sit_on_the_detected_eyes_nose_and_mouth(exported):
    points = np.array(exported["landmarks68"])
    five = np.array(exported["landmarks"])
    x1, y1, x2, y2 = exported["box"]
    tolerance = 0.08 * (x2 - x1)
    assert points.shape == (68, 2)
    # iBUG order: eye contours 36-41 (subject's right eye, the image's left) and 42-47, nose tip 30,
    # mouth corners 48 and 54; the detector's five points are image-left eye, image-right eye, nose tip, mouth corners
    assert np.linalg.norm(points[36:42].mean(0) - five[0]) < tolerance
    assert np.linalg.norm(points[42:48].mean(0) - five[1]) < tolerance
    assert np.linalg.norm(points[30] - five[2]) < tolerance
    assert np.linalg.norm(points[48] - five[3]) < tolerance and np.linalg.norm(points[54] - five[4]) < tolerance
    # the jaw runs from the image's left (0) round the chin (8, the lowest point) to the image's right (16)
    assert points[0, 0] < points[8, 0] < points[16, 0] and points[8, 1] == points[:17, 1].max()
    assert points[8, 1] > five[3:, 1].max()  # the chin is below the mouth


def test_exported_mesh_reloads_and_matches_the_json_mesh(exported):
    from pytorch3d.io import IO

    mesh = IO().load_mesh(exported["mesh_file"], include_textures=True)
    vertices = mesh.verts_packed().double().numpy()
    assert vertices.shape == (468, 3) and mesh.faces_packed().shape == (852, 3)
    extent = vertices.max(0) - vertices.min(0)
    assert 10 < extent[1] < 30 and 10 < extent[0] < 25  # a face in centimetres: a hand's span high and wide
    assert vertices[:, 2].argmax() in {1, 4, 5, 195, 197}  # nose tip region nearest the viewer (+z)
    colours = mesh.textures.verts_features_packed().numpy()
    assert colours.shape == (468, 3) and 0.2 < colours.mean() < 0.9
    # the JSON's image-space mesh (x right, y down, depth away) is the exported shape posed and scaled: after
    # flipping y and z to the same handedness, one similarity (scale, rotation, shift) takes one to the other
    image = np.array(exported["mesh_vertices"], np.float64)
    model = vertices * [1.0, -1.0, -1.0]
    a, b = model - model.mean(0), image - image.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, d]) @ vt
    scale = (s * [1, 1, d]).sum() / (a**2).sum()
    residual = np.linalg.norm(scale * a @ rotation - b, axis=1)
    width = exported["box"][2] - exported["box"][0]
    assert d > 0  # no mirror image between the two
    assert np.sqrt((residual**2).mean()) < 0.03 * width  # perspective alone separates them
