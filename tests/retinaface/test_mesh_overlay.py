"""The mesh overlay: the same pixels as the plain algorithm (every triangle in painter's order, the whole
rectangle blended), for overlapping, clipped, small and turned faces, at any opacity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.faces.face import Face
from retinaface.faces.mesh_overlay import AMBIENT, EDGE_SHADE, MESH_TINT, MIN_WIREFRAME_SIZE, _template, draw_meshes
from retinaface.utils.resources import package_path


def _plain_overlay(image: np.ndarray, faces: list[Face], opacity: float) -> np.ndarray:
    """The overlay as first written: one triangle at a time, then a float blend of the whole frame."""
    triangles, _ = _template()
    layer, mask = image.copy(), np.zeros(image.shape[:2], np.uint8)
    for face in faces:
        vertices = face.mesh_vertices
        corners3d = vertices[triangles].astype(np.float64)
        normals = np.cross(corners3d[:, 1] - corners3d[:, 0], corners3d[:, 2] - corners3d[:, 0])
        facing = np.abs(normals[:, 2]) / np.linalg.norm(normals, axis=1).clip(min=1e-9)
        colours = MESH_TINT * (AMBIENT + (1 - AMBIENT) * facing)[:, None]
        order = np.argsort(-vertices[triangles, 2].mean(axis=1))
        corners = np.round(vertices[triangles][:, :, :2] * 16).astype(np.int32)
        for t in order:
            cv2.fillConvexPoly(layer, corners[t], colours[t].tolist(), cv2.LINE_8, shift=4)
        cv2.fillPoly(mask, list(corners), 255, cv2.LINE_8, shift=4)
        if max(face.box[2] - face.box[0], face.box[3] - face.box[1]) >= MIN_WIREFRAME_SIZE:
            edge = (np.median(colours, axis=0) * EDGE_SHADE).tolist()
            cv2.polylines(layer, list(corners[order[len(order) // 3:]]), True, edge, 1, cv2.LINE_AA, shift=4)
    alpha = (mask.astype(np.float32) / 255.0 * opacity)[..., None]
    return np.clip(image.astype(np.float32) * (1 - alpha) + layer.astype(np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)


def _face(centre: tuple[float, float], size: float, yaw: float, roll: float) -> Face:
    with np.load(package_path("retinaface.mesh", "assets/face_template.npz")) as data:
        template = data["vertices"].astype(np.float64)
    c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    turned = template @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    turned[:, :2] = turned[:, :2] @ np.array([[c, -s], [s, c]]).T
    vertices = (turned * [size / 2, -size / 2, size / 2] + [*centre, 0]).astype(np.float32)
    box = np.concatenate([vertices[:, :2].min(0), vertices[:, :2].max(0)])
    return Face(box=box, score=0.9, landmarks=np.zeros((5, 2)), mesh_coefficients=np.zeros(144), mesh_vertices=vertices)


@pytest.mark.parametrize("opacity", [0.5, 0.3, 1.0])
def test_overlay_has_the_plain_algorithms_pixels(opacity):
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    faces = [_face((80.3, 90.7), 110, yaw=35, roll=10), _face((130.1, 110.4), 90, yaw=-50, roll=-20),  # overlapping
             _face((300.2, 20.5), 80, yaw=0, roll=170),  # partly outside the frame
             _face((250.6, 200.2), 24, yaw=20, roll=0)]  # too small for edges
    drawn = draw_meshes(image, faces, opacity=opacity)
    assert (drawn != image).mean() > 0.1
    np.testing.assert_array_equal(drawn, _plain_overlay(image, faces, opacity))


def test_overlay_leaves_its_input_and_faces_without_meshes_alone():
    image = np.full((64, 64, 3), 90, np.uint8)
    bare = Face(box=np.array([5.0, 5.0, 40.0, 40.0]), score=0.9, landmarks=np.zeros((5, 2)), mesh_coefficients=np.zeros(144))
    broken = _face((30.0, 30.0), 40, yaw=0, roll=0)
    broken.mesh_vertices[3, 0] = np.nan
    drawn = draw_meshes(image, [bare, broken])
    np.testing.assert_array_equal(drawn, image)
    assert drawn is not image and (image == 90).all()
