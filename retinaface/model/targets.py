"""Training targets per anchor: which face each anchor learns, and its encoded box and landmarks."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

from .box_coder import BoxCoder
from .matcher import AnchorMatcher


class AnchorTargets(NamedTuple):
    """Stacked targets for a batch of ``N`` images over the same ``A`` anchors.

    - ``labels``: ``Tensor[N, A]`` int64: 1 face, 0 background, -1 ignored (between the IoU thresholds)
    - ``matched_boxes``: ``Tensor[N, A, 4]`` x1 y1 x2 y2 pixels of each positive's face (0 elsewhere)
    - ``box_targets``: ``Tensor[N, A, 4]`` encoded boxes (0 where not positive)
    - ``landmark_targets``: ``Tensor[N, A, 10]`` encoded landmarks (0 where not ``landmarks_valid``)
    - ``landmarks_valid``: ``Tensor[N, A]`` bool, positives whose face has landmarks
    - ``matched_faces``: ``Tensor[N, A]`` int64, index of each positive's face in its image's target (-1 elsewhere)
    """

    labels: Tensor
    matched_boxes: Tensor
    box_targets: Tensor
    landmark_targets: Tensor
    landmarks_valid: Tensor
    matched_faces: Tensor

    @property
    def positive(self) -> Tensor:
        return self.labels == 1

    @property
    def negative(self) -> Tensor:
        return self.labels == 0


class TargetAssigner:
    """Match anchors to ground-truth faces by IoU (:class:`AnchorMatcher`) and encode what positives regress to.

    ``__call__(anchors, targets)`` takes anchors ``Tensor[A, 4]`` (cx, cy, w, h) and one target dict per image:
    ``boxes`` ``Tensor[G, 4]`` x1 y1 x2 y2 in network-input pixels, optional ``landmarks`` ``Tensor[G, 5, 2]`` and
    ``landmarks_valid`` ``Tensor[G]`` (bool; default: all valid when ``landmarks`` is given). Runs without
    gradient; returns :class:`AnchorTargets`.
    """

    def __init__(self, *, matcher: AnchorMatcher, box_coder: BoxCoder) -> None:
        self.matcher = matcher
        self.box_coder = box_coder

    @torch.no_grad()
    def __call__(self, anchors: Tensor, targets: list[dict[str, Tensor]]) -> AnchorTargets:
        anchor_boxes = box_convert(anchors, "cxcywh", "xyxy")
        num_anchors = anchors.shape[0]
        labels, boxes, points, valid, faces = [], [], [], [], []
        for target in targets:
            gt_boxes = target["boxes"].to(anchors)
            matches = self.matcher(box_iou(gt_boxes, anchor_boxes))
            positive = matches >= 0
            labels.append(torch.where(positive, 1, torch.where(matches == AnchorMatcher.NEGATIVE, 0, -1)))
            faces.append(torch.where(positive, matches, -1))
            # Gather every anchor's face (face 0 stands in for unmatched anchors; masked by ``positive``).
            index = matches.clamp(min=0)
            if gt_boxes.shape[0] == 0:
                boxes.append(anchors.new_zeros(num_anchors, 4))
                points.append(anchors.new_zeros(num_anchors, 5, 2))
                valid.append(torch.zeros_like(positive))
                continue
            boxes.append(torch.where(positive[:, None], gt_boxes[index], 0.0))
            if "landmarks" in target:
                face_valid = target.get("landmarks_valid")
                if face_valid is None:
                    face_valid = torch.ones(gt_boxes.shape[0], dtype=torch.bool, device=anchors.device)
                has_points = positive & face_valid.to(anchors.device)[index]
                points.append(torch.where(has_points[:, None, None], target["landmarks"].to(anchors)[index], 0.0))
                valid.append(has_points)
            else:
                points.append(anchors.new_zeros(num_anchors, 5, 2))
                valid.append(torch.zeros_like(positive))
        labels_t, boxes_t, points_t, valid_t = (torch.stack(v) for v in (labels, boxes, points, valid))
        positive_t = labels_t == 1
        box_targets = torch.where(positive_t[..., None], self.box_coder.encode_boxes(boxes_t, anchors), 0.0)
        landmark_targets = torch.where(valid_t[..., None], self.box_coder.encode_landmarks(points_t, anchors), 0.0)
        return AnchorTargets(labels_t, boxes_t, box_targets, landmark_targets, valid_t, torch.stack(faces).long())
