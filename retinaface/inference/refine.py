"""Landmark refinement: a second, closer look at every detected face.

The five landmarks of faces a few dozen pixels tall are coarse, and the mesh fit and the head pose inherit
their noise. The refiner cuts a square crop around each face, resamples it so that the face is
``face_size`` pixels across and, with ``upright``, turns it so that the face is upright by the roll its
first landmarks show, runs the same detector on the crop (and on its mirror image), and averages the
landmarks of the matching detections, mapped back to the image, with the original ones. All crops of an
image go through the network as one batch.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..config import RefineConfig
from ..faces.landmarks import in_plane_angles, mirror_matrix, transform_boxes, transform_landmarks

DetectFn = Callable[[list[Tensor]], list[dict[str, Tensor]]]


def crop_transforms(
    boxes: np.ndarray, *, face_size: int, context: float, angles: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Similarity maps ``ndarray[K, 2, 3]`` from image pixels to each face's square crop, and the crop side in
    pixels. The crop is centred on the box, ``context`` times its longer side, resampled so that the longer
    side is ``face_size`` pixels, and turned by ``-angles`` (``ndarray[K]``, radians, clockwise in the image;
    default none) about the box centre, so that a face rolled by ``angles`` comes out upright."""
    side = int(round(face_size * context))
    longer = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clip(min=1e-3)
    scale = face_size / longer
    angles = np.zeros(len(boxes)) if angles is None else np.asarray(angles, np.float64)
    cos, sin = scale * np.cos(angles), scale * np.sin(angles)
    linear = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)  # scale * rotation by -angle
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    maps = np.zeros((len(boxes), 2, 3))
    maps[:, :, :2] = linear
    maps[:, :, 2] = side / 2 - np.einsum("kij,kj->ki", linear, centre)
    return maps, side


class LandmarkRefiner:
    """Refine the landmarks of one image's faces with ``detect``, the detection model's forward
    (``list[Tensor[3, S, S]]`` uint8 BGR on the CPU -> per image a dict with ``boxes`` ``Tensor[N, 4]`` and
    ``landmarks`` ``Tensor[N, 5, 2]``, crop pixels); ``detect`` moves the crops to its device.

    With ``upright``, each crop is turned so that the face's eyes are level (the roll of its first landmarks,
    :func:`~retinaface.faces.landmarks.in_plane_angles`), or within ``upright_tolerance`` degrees of level, and
    the first landmarks count less the more the face is rolled (:meth:`first_look_weights`). ``only_rolled``:
    faces whose first landmarks count fully are left as they are (not looked at again), the others get a blend
    of their first and their upright landmarks: the refinement for rolled faces only, at no cost for upright
    ones."""

    def __init__(self, detect: DetectFn, *, face_size: int = RefineConfig.face_size, context: float = RefineConfig.context,
                 flip: bool = RefineConfig.flip, upright: bool = RefineConfig.upright,
                 upright_tolerance: float = RefineConfig.upright_tolerance, first_look_rolls: tuple[float, float] = RefineConfig.first_look_rolls,
                 only_rolled: bool = RefineConfig.only_rolled, min_iou: float = RefineConfig.min_iou) -> None:
        if face_size < 16 or context < 1.0:
            raise ValueError("face_size must be at least 16 pixels and context at least 1")
        low, high = (float(roll) for roll in first_look_rolls)
        if not 0.0 <= low < high <= 180.0:
            raise ValueError("first_look_rolls must be two increasing angles between 0 and 180 degrees")
        if not 0.0 <= upright_tolerance <= 180.0:
            raise ValueError("upright_tolerance must be between 0 and 180 degrees")
        if only_rolled and not upright:
            raise ValueError("only_rolled looks at rolled faces upright: it needs upright")
        self.detect = detect
        self.face_size, self.context, self.flip, self.min_iou = int(face_size), float(context), bool(flip), float(min_iou)
        self.upright, self.upright_tolerance = bool(upright), float(upright_tolerance)
        self.first_look_rolls, self.only_rolled = (low, high), bool(only_rolled)

    def first_look_weights(self, rolls: np.ndarray) -> np.ndarray:
        """Weight ``ndarray[K]`` in [0, 1] of the first landmarks of faces rolled by ``rolls`` (``ndarray[K]``,
        radians, :func:`~retinaface.faces.landmarks.in_plane_angles`) against the upright crops' answers: 1 up to
        the first of :attr:`first_look_rolls`, falling linearly to 0 at the second, so that a face whose roll
        drifts across the range (in a video) moves smoothly. The first look saw the face at its own roll, where
        the detector, which learned from mostly upright faces, is less accurate. Without ``upright``: all 1."""
        if not self.upright:
            return np.ones(len(rolls))
        low, high = np.radians(self.first_look_rolls)
        return np.clip((high - np.abs(rolls)) / (high - low), 0.0, 1.0)

    def __call__(self, image_bgr: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Refined ``ndarray[K, 5, 2]`` (image pixels) for ``boxes`` ``ndarray[K, 4]`` (x1 y1 x2 y2) and
        ``landmarks`` ``ndarray[K, 5, 2]`` of ``image_bgr`` ``ndarray[H, W, 3]`` uint8. Faces with non-finite
        input, or that the closer look does not find again, keep their landmarks."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
        finite = np.isfinite(boxes).all(1) & np.isfinite(landmarks).all(axis=(1, 2))
        rows = np.flatnonzero(finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        rolls = in_plane_angles(landmarks[rows])
        first_weight = self.first_look_weights(rolls)
        if self.only_rolled:
            looked_at = first_weight < 1.0
            rows, rolls, first_weight = rows[looked_at], rolls[looked_at], first_weight[looked_at]
        if len(rows) == 0:
            return landmarks.copy()
        # turned by the roll beyond the tolerance, so that the face keeps at most that much
        angles = np.sign(rolls) * np.maximum(np.abs(rolls) - np.radians(self.upright_tolerance), 0.0) if self.upright else None
        maps, side = crop_transforms(boxes[rows], face_size=self.face_size, context=self.context, angles=angles)
        crops = [cv2.warpAffine(image_bgr, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for m in maps]
        views = [(crop, False) for crop in crops] + ([(np.ascontiguousarray(crop[:, ::-1]), True) for crop in crops] if self.flip else [])
        tensors = [torch.from_numpy(view).permute(2, 0, 1) for view, _ in views]
        with torch.inference_mode():
            detections = self.detect(tensors)
        to_image = np.stack([cv2.invertAffineTransform(m) for m in maps])
        expected = np.stack([transform_boxes(box, m) for box, m in zip(boxes[rows], maps)])  # each face's box in its crop
        sums, counts = np.zeros((len(rows), 5, 2)), np.zeros(len(rows))
        for index, ((_, mirrored), found) in enumerate(zip(views, detections)):
            face = index % len(rows)
            found_boxes = found["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
            found_landmarks = found["landmarks"].detach().cpu().double().numpy().reshape(-1, 5, 2)
            if len(found_boxes) == 0:
                continue
            if mirrored:
                found_boxes = transform_boxes(found_boxes, mirror_matrix(side))
                found_landmarks = transform_landmarks(found_landmarks, mirror_matrix(side))
            overlap = box_iou(torch.from_numpy(expected[face : face + 1]), torch.from_numpy(found_boxes))[0].numpy()
            best = int(overlap.argmax())
            if overlap[best] < self.min_iou:
                continue
            sums[face] += transform_landmarks(found_landmarks[best], to_image[face])
            counts[face] += 1
        refined = landmarks.copy()
        seen = counts > 0
        rows, first, weight, views_found = rows[seen], landmarks[rows[seen]], first_weight[seen, None, None], counts[seen, None, None]
        crop_mean = sums[seen] / views_found
        if self.only_rolled:  # a blend of the two: what a face gets moves smoothly as its roll crosses the range
            refined[rows] = weight * first + (1.0 - weight) * crop_mean
        else:  # the first look is one more view, weighted by how upright it was
            refined[rows] = (weight * first + views_found * crop_mean) / (weight + views_found)
        return refined
