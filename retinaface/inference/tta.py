"""Test-time resizing, flipping and multi-scale merging around a :class:`Detector`."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from .detector import Detector
from ..faces.face import Face
from ..faces.landmarks import FLIPPED_LANDMARK_ORDER
SCALE_MODES = ("original", "mxnet")


def base_scale(height: int, width: int, mode: str, *, short_side: int = 1600, long_side_max: int = 2150) -> float:
    """Resize factor for a scale mode: ``original`` (1.0) or ``mxnet`` (short side to 1600 px, long side at
    most 2150 px, as in the RetinaFace authors' WIDER evaluation)."""
    if mode == "original":
        return 1.0
    if mode == "mxnet":
        scale = short_side / min(height, width)
        if round(scale * max(height, width)) > long_side_max:
            scale = long_side_max / max(height, width)
        return scale
    raise ValueError(f"unknown scale mode {mode!r}; choose one of {SCALE_MODES}")


class TestTimeAugmentation:
    """Run ``detector`` at several scales and optionally mirrored, then merge with NMS.

    ``scale_factors`` multiply the mode's base scale (e.g. ``(0.5, 1.0, 1.5)``). With one scale and no flip
    this is exactly ``detector(image)`` at that scale. Results are in original-image pixels.
    """

    __test__ = False  # not a pytest class despite the name

    def __init__(
        self,
        detector: Detector,
        *,
        scale_mode: str = "original",
        scale_factors: Sequence[float] = (1.0,),
        flip: bool = False,
    ) -> None:
        base_scale(1, 1, scale_mode)  # validates the mode
        self.detector = detector
        self.scale_mode = scale_mode
        self.scale_factors = tuple(scale_factors)
        self.flip = flip

    @property
    def is_identity(self) -> bool:
        return self.scale_mode == "original" and self.scale_factors == (1.0,) and not self.flip

    def __call__(self, image: np.ndarray) -> list[Face]:
        if self.is_identity:
            return self.detector(image)
        height, width = image.shape[:2]
        base = base_scale(height, width, self.scale_mode)
        passes: list[Face] = []
        for factor in self.scale_factors:
            scale = base * factor
            resized = image
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            sx, sy = resized.shape[1] / width, resized.shape[0] / height
            for mirrored in (False, True) if self.flip else (False,):
                view = np.ascontiguousarray(resized[:, ::-1]) if mirrored else resized
                for face in self.detector(view):
                    box, points = face.box.copy(), face.landmarks.copy()
                    if mirrored:
                        box[[0, 2]] = view.shape[1] - box[[2, 0]]
                        points[:, 0] = view.shape[1] - points[:, 0]
                        points = points[FLIPPED_LANDMARK_ORDER]
                    box[[0, 2]] /= sx
                    box[[1, 3]] /= sy
                    points = points / [sx, sy]
                    passes.append(Face(box, face.score, points, face.mesh_coefficients, image_size=(width, height)))
        if not passes:
            return []
        boxes = torch.from_numpy(np.stack([f.box for f in passes]).astype(np.float32))
        scores = torch.tensor([f.score for f in passes], dtype=torch.float32)
        keep = batched_nms(boxes, scores, torch.zeros(len(passes), dtype=torch.int64), self.detector.nms_threshold)
        return [passes[i] for i in keep.tolist()]  # poses: estimated from the merged landmarks when read
