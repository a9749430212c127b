"""The five facial landmarks: their order, and how affine maps (scalings, mirrorings, rotations) move faces."""

from __future__ import annotations

import numpy as np

LANDMARK_NAMES = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")
"""Order of the five points (left/right as seen in the image), as in WIDER's RetinaFace annotations."""

FLIPPED_LANDMARK_ORDER = [1, 0, 2, 4, 3]
"""Index order of the points after a horizontal flip: eyes swap, nose stays, mouth corners swap."""


def mirror_matrix(width: float) -> np.ndarray:
    """``ndarray[2, 3]`` of the horizontal flip of an image ``width`` pixels wide (``x -> width - x``: pixel
    edges, so a box ``[x1, x2]`` maps to ``[width - x2, width - x1]``)."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0]])


def transform_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``landmarks`` (``ndarray[..., 5, 2]``, x y pixels) moved by the affine ``matrix`` (``ndarray[2, 3]``).
    A map that mirrors (negative determinant) also swaps the left and right points, so that each point keeps
    its meaning (the left eye is the one on the image's left)."""
    matrix = np.asarray(matrix, np.float64)
    moved = np.asarray(landmarks, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    if np.linalg.det(matrix[:, :2]) < 0:
        moved = moved[..., FLIPPED_LANDMARK_ORDER, :]
    return moved


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``boxes`` (``ndarray[..., 4]``, x1 y1 x2 y2 pixels) moved by the affine ``matrix``: the axis-aligned
    bounds of the four mapped corners (exact for scalings, mirrorings and 90-degree rotations)."""
    matrix = np.asarray(matrix, np.float64)
    boxes = np.asarray(boxes, np.float64)
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    corners = np.stack([np.stack(c, -1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], axis=-2)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    return np.concatenate([mapped.min(-2), mapped.max(-2)], axis=-1)


def in_plane_angles(landmarks: np.ndarray) -> np.ndarray:
    """Each face's roll in the image, ``ndarray[...]`` radians (clockwise: the image-right eye lower), from its
    ``landmarks`` ``ndarray[..., 5, 2]``: the direction of the eye line blended with the perpendicular of the
    eyes-to-mouth line, so that neither a turned head (eyes close together) nor a wide-open mouth dominates.
    Rotating the image by minus this angle about the face levels it."""
    points = np.asarray(landmarks, np.float64)
    eyes = (points[..., 0, :] + points[..., 1, :]) / 2
    mouth = (points[..., 3, :] + points[..., 4, :]) / 2
    eye_line = points[..., 1, :] - points[..., 0, :]
    down = mouth - eyes
    across = eye_line + np.stack([down[..., 1], -down[..., 0]], -1)  # eyes-to-mouth turned a quarter anticlockwise
    return np.arctan2(across[..., 1], across[..., 0])
