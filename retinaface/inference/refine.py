"""Landmark refinement: a second, closer look at every detected face.

The five landmarks of faces a few dozen pixels tall are coarse, and the mesh fit and the head pose inherit
their noise. The refiner cuts a square crop around each face, resamples it so that the face is
``face_size`` pixels across, runs the same detector on the crop (and on its mirror image), and averages the
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
from ..faces.landmarks import mirror_matrix, transform_boxes, transform_landmarks

DetectFn = Callable[[list[Tensor]], list[dict[str, Tensor]]]


def crop_transforms(boxes: np.ndarray, *, face_size: int, context: float) -> tuple[np.ndarray, int]:
    """Scale-and-shift maps ``ndarray[K, 2, 3]`` from image pixels to each face's square crop, and the crop
    side in pixels. The crop is centred on the box, ``context`` times its longer side, resampled so that the
    longer side is ``face_size`` pixels."""
    side = int(round(face_size * context))
    longer = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clip(min=1e-3)
    scale = face_size / longer
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    maps = np.zeros((len(boxes), 2, 3))
    maps[:, 0, 0] = maps[:, 1, 1] = scale
    maps[:, :, 2] = side / 2 - scale[:, None] * centre
    return maps, side


class LandmarkRefiner:
    """Refine the landmarks of one image's faces with ``detect``, the detection model's forward
    (``list[Tensor[3, S, S]]`` uint8 BGR on the CPU -> per image a dict with ``boxes`` ``Tensor[N, 4]`` and
    ``landmarks`` ``Tensor[N, 5, 2]``, crop pixels); ``detect`` moves the crops to its device."""

    def __init__(self, detect: DetectFn, *, face_size: int = RefineConfig.face_size, context: float = RefineConfig.context,
                 flip: bool = RefineConfig.flip, min_iou: float = RefineConfig.min_iou) -> None:
        if face_size < 16 or context < 1.0:
            raise ValueError("face_size must be at least 16 pixels and context at least 1")
        self.detect = detect
        self.face_size, self.context, self.flip, self.min_iou = int(face_size), float(context), bool(flip), float(min_iou)

    def __call__(self, image_bgr: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Refined ``ndarray[K, 5, 2]`` (image pixels) for ``boxes`` ``ndarray[K, 4]`` (x1 y1 x2 y2) and
        ``landmarks`` ``ndarray[K, 5, 2]`` of ``image_bgr`` ``ndarray[H, W, 3]`` uint8. Faces with non-finite
        input, or that the closer look does not find again, keep their landmarks."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
        finite = np.isfinite(boxes).all(1) & np.isfinite(landmarks).all(axis=(1, 2))
        rows = np.flatnonzero(finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        if len(rows) == 0:
            return landmarks.copy()
        maps, side = crop_transforms(boxes[rows], face_size=self.face_size, context=self.context)
        crops = [cv2.warpAffine(image_bgr, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for m in maps]
        views = [(crop, False) for crop in crops] + ([(np.ascontiguousarray(crop[:, ::-1]), True) for crop in crops] if self.flip else [])
        tensors = [torch.from_numpy(view).permute(2, 0, 1) for view, _ in views]
        with torch.inference_mode():
            detections = self.detect(tensors)
        scales, shifts = maps[:, 0, 0], maps[:, :, 2]
        expected = boxes[rows] * scales[:, None] + np.tile(shifts, 2)  # each face's box in its crop
        sums, counts = landmarks[rows].copy(), np.ones(len(rows))
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
            sums[face] += (found_landmarks[best] - shifts[face]) / scales[face]
            counts[face] += 1
        refined = landmarks.copy()
        refined[rows] = sums / counts[:, None, None]
        return refined


