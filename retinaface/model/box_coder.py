"""Encoding of boxes and landmarks relative to anchors (SSD-style, with variances)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# exp() of a log-size offset beyond this would overflow float16 and means a meaningless box anyway.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


class BoxCoder:
    """Map boxes and landmarks to regression targets and back.

    Anchors are ``Tensor[..., 4]`` (cx, cy, w, h); boxes are (x1, y1, x2, y2); landmarks are
    ``Tensor[..., 5, 2]`` (x, y); all in the same pixel frame.

    - box: ``((cx_b - cx_a) / (v_c w_a), (cy_b - cy_a) / (v_c h_a), log(w_b / w_a) / v_s, log(h_b / h_a) / v_s)``
    - landmark point: ``((x - cx_a) / (v_c w_a), (y - cy_a) / (v_c h_a))``
    """

    def __init__(self, *, center_variance: float = 0.1, size_variance: float = 0.2) -> None:
        self.center_variance = center_variance
        self.size_variance = size_variance

    def encode_boxes(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """``boxes`` ``Tensor[..., 4]`` x1 y1 x2 y2 -> deltas ``Tensor[..., 4]``."""
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2
        sizes = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1e-6)
        offset = (centres - anchors[..., :2]) / (self.center_variance * anchors[..., 2:])
        log_scale = torch.log(sizes / anchors[..., 2:]) / self.size_variance
        return torch.cat([offset, log_scale], dim=-1)

    def decode_boxes(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Deltas ``Tensor[..., 4]`` -> boxes ``Tensor[..., 4]`` x1 y1 x2 y2."""
        centres = anchors[..., :2] + deltas[..., :2] * self.center_variance * anchors[..., 2:]
        log_scale = (deltas[..., 2:] * self.size_variance).clamp(max=_MAX_LOG_SCALE)
        sizes = anchors[..., 2:] * torch.exp(log_scale)
        return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)

    def encode_landmarks(self, landmarks: Tensor, anchors: Tensor) -> Tensor:
        """``landmarks`` ``Tensor[..., 5, 2]`` -> deltas ``Tensor[..., 10]``."""
        scale = (self.center_variance * anchors[..., 2:]).unsqueeze(-2)
        return ((landmarks - anchors[..., None, :2]) / scale).flatten(-2)

    def decode_landmarks(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Deltas ``Tensor[..., 10]`` -> landmarks ``Tensor[..., 5, 2]``."""
        points = deltas.unflatten(-1, (-1, 2))
        return anchors[..., None, :2] + points * self.center_variance * anchors[..., None, 2:]
