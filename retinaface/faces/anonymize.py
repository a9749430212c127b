"""Blurring or pixelating faces, with masks that follow each face."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

METHODS = ("blur", "pixelate")


def face_mask(shape: tuple[int, int], box: np.ndarray, *, mesh_vertices: np.ndarray | None = None, margin: float = 0.0) -> np.ndarray:
    """``ndarray[H, W]`` uint8 mask (255 = face) of one face.

    Without a mesh: the ellipse through the four corners of ``box`` (x1 y1 x2 y2; half-axes sqrt(2) times the
    box's), so every pixel of the box is covered and the corners taper like a head. With ``mesh_vertices``
    (``[V, 3]`` image pixels): the convex hull of the mesh, the face's silhouette. ``margin`` grows either
    mask by that fraction of the face size.
    """
    height, width = shape
    mask = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = (float(v) for v in box)
    size = max(x2 - x1, y2 - y1, 1.0)
    if mesh_vertices is not None and len(mesh_vertices) >= 3:
        hull = cv2.convexHull(np.round(np.asarray(mesh_vertices)[:, :2] * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_8, shift=4)
        grow = int(round(margin * size))
        if grow > 0:
            mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        return mask
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    # Through the corners of the box grown by a pixel, so pixels the box only partly covers are inside too.
    axes = ((x2 - x1 + 2) / 2 * np.sqrt(2) + margin * size, (y2 - y1 + 2) / 2 * np.sqrt(2) + margin * size)
    cv2.ellipse(
        mask, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
        (int(np.ceil(axes[0] * 16)), int(np.ceil(axes[1] * 16))), 0, 0, 360, 255, -1, cv2.LINE_8, shift=4,
    )
    return mask


def _blurred(region: np.ndarray, face_size: float, strength: float) -> np.ndarray:
    # Sigma grows with the face so a large face is as unrecognisable as a small one.
    sigma = max(1.0, strength * face_size / 6.0)
    return cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def _pixelated(region: np.ndarray, face_size: float, strength: float) -> np.ndarray:
    # strength 1 leaves about 6 blocks across the face; 0.5 about 12.
    block = max(2, int(round(strength * face_size / 6.0)))
    height, width = region.shape[:2]
    small = cv2.resize(region, (max(1, width // block), max(1, height // block)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def anonymize(
    image: np.ndarray,
    boxes: Sequence[np.ndarray],
    *,
    method: str = "blur",
    strength: float = 1.0,
    mesh_vertices: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (``ndarray[H, W, 3]``) with each face in ``boxes`` (``[4]`` x1 y1 x2 y2) blurred or
    pixelated inside its :func:`face_mask`.

    ``strength`` scales the effect with the face size: for ``blur`` the Gaussian sigma is ``strength`` times
    a sixth of the face's longer side; for ``pixelate`` the block side is the same. Faces are processed
    independently, on a padded patch around each, so the cost grows with face area, not image size.
    """
    if method not in METHODS:
        raise ValueError(f"unknown anonymisation method {method!r}; choose one of {', '.join(METHODS)}")
    if not strength > 0:
        raise ValueError(f"anonymisation strength must be positive, got {strength}")
    output = image.copy()
    height, width = image.shape[:2]
    meshes = list(mesh_vertices) if mesh_vertices is not None else [None] * len(boxes)
    for box, mesh in zip(boxes, meshes):
        x1, y1, x2, y2 = (float(v) for v in box)
        size = max(x2 - x1, y2 - y1, 1.0)
        pad = size * (0.5 + strength)  # the mask's reach beyond the box, plus room for the blur kernel
        left, top = max(0, int(x1 - pad)), max(0, int(y1 - pad))
        right, bottom = min(width, int(np.ceil(x2 + pad))), min(height, int(np.ceil(y2 + pad)))
        if right <= left or bottom <= top:
            continue
        shift = np.array([left, top, left, top], np.float64)
        local_mesh = None if mesh is None else np.asarray(mesh)[:, :2] - [left, top]
        mask = face_mask((bottom - top, right - left), np.asarray(box, np.float64) - shift, mesh_vertices=local_mesh)
        patch = output[top:bottom, left:right]
        effect = (_blurred if method == "blur" else _pixelated)(patch, size, strength)
        np.copyto(patch, effect, where=mask[:, :, None].astype(bool))
    return output


def keep_largest(boxes: Sequence[np.ndarray]) -> int | None:
    """Index of the largest box by area (the face a presenter-style video wants left visible); None if empty."""
    if len(boxes) == 0:
        return None
    areas = [(float(b[2]) - float(b[0])) * (float(b[3]) - float(b[1])) for b in boxes]
    return int(np.argmax(areas))
