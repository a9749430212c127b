"""Drawing face meshes over images, shaded and semi-transparent, from their vertices in image pixels.

The overlay draws whatever mesh a face carries (``Face.mesh_vertices``: the decoded or fitted mesh placed
in the image), so it shows exactly what the JSON holds, whichever way the mesh was obtained. Triangles are
filled far to near (painter's order by depth) in one light tint shaded by how squarely they face the
camera, so the mesh's shape (brows, nose, cheeks, jaw) shows even on a 60 px face and stands apart from
the skin under it; the edges of the nearer triangles are drawn on top of larger faces. NumPy and OpenCV
only; no rendering pipeline is needed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from .face import Face
from ..utils.resources import package_path

MESH_TINT = np.array([255.0, 190.0, 40.0])
"""BGR colour of a triangle facing the camera squarely (a bright azure, far from skin tones)."""
AMBIENT = 0.3
"""Brightness of a triangle seen edge-on; facing the camera it reaches 1."""
EDGE_SHADE = 0.55
"""Edges are drawn in the mesh's median colour times this factor, so its structure shows."""
MIN_WIREFRAME_SIZE = 40.0
"""Faces smaller than this (pixels, box's longer side) get filled triangles only: edges would cover them."""


@lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray]:
    """Triangles ``ndarray[F, 3]`` (surface and filled eye/mouth openings) and colours ``ndarray[V, 3]`` RGB."""
    with np.load(package_path("retinaface.mesh", "assets/face_template.npz")) as data:
        return np.concatenate([data["faces"], data["hole_faces"]]).astype(np.int64), data["colours"].astype(np.float32)


def mesh_vertices_of(faces: Sequence[Face], branch=None) -> list[np.ndarray | None]:
    """Each face's ``ndarray[468, 3]`` image-pixel vertices: ``Face.mesh_vertices``, or, for faces from a
    detector without ``mesh=True``, the mesh decoded from their coefficients by ``branch`` (a ``MeshBranch``;
    ``None``: no mesh)."""
    vertices: list[np.ndarray | None] = [f.mesh_vertices for f in faces]
    missing = [i for i, v in enumerate(vertices) if v is None]
    if missing and branch is not None:
        import torch

        with torch.inference_mode():
            coefficients = torch.from_numpy(np.stack([faces[i].mesh_coefficients for i in missing]).astype(np.float32))
            boxes = torch.from_numpy(np.stack([faces[i].box for i in missing]).astype(np.float32))
            placed, _ = branch.image_vertices(coefficients, boxes)
        for i, v in zip(missing, placed.numpy()):
            vertices[i] = v
    return vertices


def draw_meshes(image: np.ndarray, faces: Sequence[Face], branch=None, *, opacity: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (``ndarray[H, W, 3]`` BGR) with each face's mesh drawn at ``opacity``.

    Faces use ``Face.mesh_vertices`` (x, y pixels, view depth; larger = farther), shaded by each
    triangle's normal (module docstring). Faces without vertices are decoded by ``branch`` when given,
    else skipped; faces with non-finite vertices are skipped.
    """
    canvas = image.copy()
    if not faces:
        return canvas
    triangles, _ = _template()
    meshes = [(face, vertices) for face, vertices in zip(faces, mesh_vertices_of(faces, branch))
              if vertices is not None and np.isfinite(vertices).all()]
    if not meshes:
        return canvas
    # Everything is drawn and blended inside the meshes' bounding rectangle only (a few pixels wider for the
    # antialiased edges): outside it the overlay leaves the picture as it is, and blending the whole frame
    # cost more than drawing. Coordinates shift by whole pixels, so the pixels drawn are the same.
    height, width = canvas.shape[:2]
    points = np.concatenate([vertices[:, :2] for _, vertices in meshes])
    x0, y0 = (np.floor(points.min(axis=0)).astype(int) - 2).clip(0, None)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 3
    x1, y1 = min(max(x1, x0 + 1), width), min(max(y1, y0 + 1), height)
    if x0 >= width or y0 >= height:
        return canvas
    region = canvas[y0:y1, x0:x1]
    original, layer = region.copy(), region.copy()
    mask = np.zeros(layer.shape[:2], dtype=np.uint8)
    origin = np.array([x0, y0]) * 16
    for face, vertices in meshes:
        corners3d = vertices[triangles].astype(np.float64)
        normals = np.cross(corners3d[:, 1] - corners3d[:, 0], corners3d[:, 2] - corners3d[:, 0])
        facing = np.abs(normals[:, 2]) / np.linalg.norm(normals, axis=1).clip(min=1e-9)
        tri_colours = MESH_TINT * (AMBIENT + (1 - AMBIENT) * facing)[:, None]
        order = np.argsort(-vertices[triangles, 2].mean(axis=1))  # far first (painter's order)
        # fixed-point coordinates (4 fractional bits) keep small faces' triangles from snapping to whole pixels
        corners = (np.round(vertices[triangles][:, :, :2] * 16).astype(np.int32) - origin).astype(np.int32)
        fill = cv2.fillConvexPoly
        # about 900 calls per face, where the Python around each call cost more than the call: the triangles
        # come already in painter's order, the arguments positional
        for triangle, colour in zip(list(corners[order]), tri_colours[order].tolist()):
            fill(layer, triangle, colour, cv2.LINE_8, 4)
        cv2.fillPoly(mask, list(corners), 255, cv2.LINE_8, shift=4)
        if max(face.box[2] - face.box[0], face.box[3] - face.box[1]) >= MIN_WIREFRAME_SIZE:
            front = corners[order[len(order) // 3:]]  # the nearer two thirds: hidden edges would clutter
            edge = (np.median(tri_colours, axis=0) * EDGE_SHADE).tolist()
            cv2.polylines(layer, list(front), True, edge, 1, cv2.LINE_AA, shift=4)
    # The mask is 0 or 255: outside it the blend gives back the picture's own pixels, so only the covered
    # pixels are blended, with the same float32 arithmetic as a blend of the whole rectangle. Indexing
    # contiguous copies by flat pixel index costs less than indexing the frame's strided rectangle by rows
    # and columns.
    covered = np.flatnonzero(mask)
    picture, drawn = original.reshape(-1, 3), layer.reshape(-1, 3)
    alpha = (mask.reshape(-1)[covered].astype(np.float32) / 255.0 * opacity)[:, None]
    blended = picture[covered].astype(np.float32) * (1 - alpha) + drawn[covered].astype(np.float32) * alpha
    picture[covered] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    region[...] = original
    return canvas
