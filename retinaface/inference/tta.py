"""Test-time resizing, flipping and multi-scale merging around a :class:`Detector`."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from ..faces.face import Face
from ..faces.landmarks import mirror_matrix
from .detector import Detector, ViewsDetector

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


class TestTimeAugmentation(ViewsDetector):
    """Run ``detector``'s network at several scales and optionally mirrored, then merge with NMS.

    ``scale_factors`` multiply the mode's base scale (e.g. ``(0.5, 1.0, 1.5)``). With one scale and no flip
    this is exactly ``detector(image)`` at that scale. Results are in original-image pixels; the per-face
    stages (``detector.stages``: refine, track, mesh) run once on the merged faces.
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
        super().__init__(detector)
        self.scale_mode = scale_mode
        self.scale_factors = tuple(scale_factors)
        self.flip = flip

    @property
    def is_identity(self) -> bool:
        return self.scale_mode == "original" and self.scale_factors == (1.0,) and not self.flip

    def find(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Per image, the faces of every scale and mirror image merged by NMS, in the image's pixels."""
        if self.is_identity:
            return self.detector.find(images)
        return [self._find_one(image) for image in images]

    def _find_one(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        base = base_scale(height, width, self.scale_mode)
        passes: list[Face] = []
        for factor in self.scale_factors:
            scale = base * factor
            resized = image
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            to_original = np.array([[width / resized.shape[1], 0, 0], [0, height / resized.shape[0], 0]])
            views = [(resized, to_original)]
            if self.flip:  # mirror back first, then undo the resize
                views.append((np.ascontiguousarray(resized[:, ::-1]), to_original @ np.vstack([mirror_matrix(resized.shape[1]), [0, 0, 1]])))
            for (view, back), found in zip(views, self.detector.find([view for view, _ in views])):
                passes += [face.transformed(back, (width, height)) for face in found]
        if not passes:
            return []
        boxes = torch.from_numpy(np.stack([f.box for f in passes]).astype(np.float32))
        scores = torch.tensor([f.score for f in passes], dtype=torch.float32)
        keep = batched_nms(boxes, scores, torch.zeros(len(passes), dtype=torch.int64), self.detector.nms_threshold)
        return [passes[i] for i in keep.tolist()]
