"""Detecting over views of an image: the four 90-degree rotations, an image pyramid and mirroring (through
:class:`~retinaface.tta.TestTimeAugmentation`), and a pixel budget that keeps huge photos within memory."""

from __future__ import annotations

import warnings
from typing import Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

from ..faces.face import Face
from .detector import Detector, ViewsDetector
from .tta import TestTimeAugmentation

DEFAULT_MAX_PIXELS = 36_000_000
"""Largest image (pixels fed to the network per view) detected without downscaling. A 12000x8000 photo is
downscaled by 0.61 and detection peaks at 2.8 GB resident memory with mobilenet0.25 on the CPU, against
5.3 GB unbounded (README, "Huge images")."""
ROTATIONS = (0, 90, 180, 270)


class LargeImageWarning(UserWarning):
    """An image was downscaled for detection to stay within the pixel budget."""


def rotation_matrix(degrees: int, width: int, height: int) -> np.ndarray:
    """``ndarray[2, 3]`` taking original pixel coordinates to those of the image turned ``degrees``
    counter-clockwise (``np.rot90(image, degrees // 90)``)."""
    if degrees == 0:
        return np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    if degrees == 90:
        return np.array([[0, 1, 0], [-1, 0, width]], np.float64)
    if degrees == 180:
        return np.array([[-1, 0, width], [0, -1, height]], np.float64)
    if degrees == 270:
        return np.array([[0, -1, height], [1, 0, 0]], np.float64)
    raise ValueError(f"rotation must be one of {ROTATIONS}, got {degrees}")


def merge_faces(faces: Sequence[Face], iou_threshold: float, views: Sequence[int] | None = None, *, cross_view_overlap: float = 0.5) -> list[Face]:
    """Greedy suppression over faces found in different views of one frame, best score first.

    A face is dropped when its IoU with a kept face reaches ``iou_threshold``, or, for faces from different
    ``views``, when their intersection covers ``cross_view_overlap`` of the smaller box: a face seen turned
    gets a box of a different shape than seen upright, so IoU alone leaves duplicates.
    """
    if not faces:
        return []
    boxes = torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float64))
    views = list(views) if views is not None else [0] * len(faces)
    order = torch.argsort(torch.tensor([f.score for f in faces]), descending=True).tolist()
    iou = box_iou(boxes, boxes)
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    inter = iou * (areas[:, None] + areas[None, :]) / (1 + iou)
    over_smaller = inter / torch.minimum(areas[:, None], areas[None, :]).clamp(min=1e-9)
    kept: list[int] = []
    for i in order:
        if all(iou[i, k] < iou_threshold and (views[i] == views[k] or over_smaller[i, k] < cross_view_overlap) for k in kept):
            kept.append(i)
    return [faces[i] for i in kept]


class MultiViewDetector(ViewsDetector):
    """A :class:`Detector` run over several views of each image, faces merged in the original frame.

    - ``rotations``: also detect in the image turned 90, 180 and 270 degrees (faces of people lying down,
      scans, photos without EXIF); each face's :attr:`Face.roll` then tells its in-plane angle.
    - ``scale_factors`` / ``flip``: image pyramid and mirroring, as in the WIDER benchmark's test-time
      augmentation.
    - ``max_pixels``: views whose network input would exceed this many pixels are downscaled first, with a
      :class:`LargeImageWarning` (``None``: no bound).

    A :class:`~retinaface.inference.detector.FaceDetector`: the per-face stages of ``detector`` (refine, track,
    mesh) run once on the merged faces.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        rotations: bool = False,
        scale_factors: Sequence[float] = (1.0,),
        flip: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if any(not f > 0 for f in scale_factors) or not scale_factors:
            raise ValueError(f"scales must be positive numbers, got {list(scale_factors)}")
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"the pixel budget must be positive, got {max_pixels}")
        super().__init__(detector)
        self.rotations = ROTATIONS if rotations else (0,)
        self.augmentation = TestTimeAugmentation(detector, scale_factors=tuple(scale_factors), flip=flip)
        self.max_pixels = max_pixels

    def budget_scale(self, height: int, width: int) -> float:
        """Factor (<= 1) the image is downscaled by before detection to respect ``max_pixels``."""
        if self.max_pixels is None:
            return 1.0
        network = 1.0
        if self.detector.max_size:  # the detector's own downscale already limits what the network sees
            network = min(1.0, self.detector.max_size / max(height, width))
        largest = max(self.augmentation.scale_factors) * network
        pixels = height * width * largest * largest
        return min(1.0, float(np.sqrt(self.max_pixels / pixels)))

    def find(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Per image, the faces of every view merged in its pixels; one network batch when no view changes
        anything."""
        plain = len(self.rotations) == 1 and self.augmentation.is_identity
        if plain and all(self.budget_scale(*im.shape[:2]) == 1.0 for im in images):
            return self.detector.find(images)
        return [self._find_one(image) for image in images]

    def _find_one(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        scale = self.budget_scale(height, width)
        if scale < 1.0:
            warnings.warn(
                f"{width}x{height} image downscaled by {scale:.2f} for detection to stay within "
                f"{self.max_pixels / 1e6:.0f} megapixels (max_pixels); faces under about {16 / scale:.0f} px may be missed",
                LargeImageWarning, stacklevel=2,
            )
            image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        small_h, small_w = image.shape[:2]
        faces: list[Face] = []
        views: list[int] = []
        for degrees in self.rotations:
            view = np.ascontiguousarray(np.rot90(image, degrees // 90)) if degrees else image
            back = cv2.invertAffineTransform(rotation_matrix(degrees, small_w, small_h))
            if scale < 1.0:
                back = back / scale  # rotation first, then undo the budget's downscale
            found = self.augmentation.find([view])[0]
            faces.extend(found if degrees == 0 and scale == 1.0 else (f.transformed(back, (width, height)) for f in found))
            views.extend([degrees] * len(found))
        if len(self.rotations) == 1:
            return faces
        return merge_faces(faces, self.nms_threshold, views)
