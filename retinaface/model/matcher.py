"""Assignment of anchors to ground-truth faces by IoU."""

from __future__ import annotations

import torch
from torch import Tensor


class AnchorMatcher:
    """IoU matching with an ignore band and a guaranteed anchor per face.

    ``__call__(iou)`` takes ``Tensor[G, A]`` (ground truth x anchors) and returns ``Tensor[A]`` (int64):
    the matched ground-truth index for positives, :attr:`NEGATIVE` (-1) for background and
    :attr:`IGNORE` (-2) for anchors between the two thresholds. Each face with any overlap keeps
    its best anchor as a positive even below ``positive_iou`` (tiny faces would otherwise get none).
    """

    NEGATIVE = -1
    IGNORE = -2

    def __init__(self, *, positive_iou: float = 0.5, negative_iou: float = 0.3) -> None:
        if negative_iou > positive_iou:
            raise ValueError("negative_iou must not exceed positive_iou")
        self.positive_iou = positive_iou
        self.negative_iou = negative_iou

    def __call__(self, iou: Tensor) -> Tensor:
        num_gt, num_anchors = iou.shape
        if num_gt == 0:
            return torch.full((num_anchors,), self.NEGATIVE, dtype=torch.int64, device=iou.device)
        best_iou, matches = iou.max(dim=0)
        matches = matches.clone()
        matches[best_iou < self.positive_iou] = self.IGNORE
        matches[best_iou < self.negative_iou] = self.NEGATIVE
        # Give every face its best anchor; processed in gt order so a later face wins a shared anchor,
        # which is deterministic and rare (two faces whose best anchor coincides).
        best_anchor_iou, best_anchor = iou.max(dim=1)
        has_overlap = best_anchor_iou > 0
        gt_indices = torch.arange(num_gt, device=iou.device)[has_overlap]
        matches[best_anchor[has_overlap]] = gt_indices
        return matches
