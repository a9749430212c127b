"""Multi-task detection loss: classification with hard negative mining, box and landmark regression."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from .box_coder import BoxCoder
from .heads import HeadOutputs, SparseMeshCoefficients
from .matcher import AnchorMatcher

if TYPE_CHECKING:
    from .mesh.branch import MeshBranch, MeshPixelLoss


class MultiTaskLoss(nn.Module):
    """``L = cls_weight L_cls + box_weight L_box + landmark_weight L_pts + pixel_weight L_pixel``
    (paper: 1, 0.25, 0.1, 0.01).

    ``forward`` returns the weighted terms as a dict ``{"loss_cls", "loss_box", "loss_landmarks", "loss_pixel"}``
    (``loss_pixel`` when a ``pixel_loss`` is configured and images and a mesh branch are passed),
    so the training objective is the sum of its values. Per image, negatives are the
    ``negative_ratio x num_positives`` background anchors with the highest classification loss
    (online hard example mining), at least ``min_negatives`` so images without faces still teach
    background. Classification and box terms are normalised by the number of positives in the batch,
    the landmark term by the number of positives whose face has landmarks.

    Targets per image: ``boxes`` ``Tensor[G, 4]`` x1 y1 x2 y2 in network-input pixels, optional
    ``landmarks`` ``Tensor[G, 5, 2]`` and ``landmarks_valid`` ``Tensor[G]`` (bool; default: all valid
    when ``landmarks`` is given).
    """

    def __init__(
        self,
        *,
        matcher: AnchorMatcher,
        box_coder: BoxCoder,
        negative_ratio: float = 3.0,
        min_negatives: int = 16,
        cls_weight: float = 1.0,
        box_weight: float = 0.25,
        landmark_weight: float = 0.1,
        pixel_loss: MeshPixelLoss | None = None,
        pixel_weight: float = 0.01,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.box_coder = box_coder
        self.negative_ratio = negative_ratio
        self.min_negatives = min_negatives
        self.cls_weight = cls_weight
        self.box_weight = box_weight
        self.landmark_weight = landmark_weight
        self.pixel_loss = pixel_loss
        self.pixel_weight = pixel_weight

    def forward(
        self,
        outputs: HeadOutputs,
        anchors: Tensor,
        targets: list[dict[str, Tensor]],
        *,
        images_rgb: Tensor | None = None,
        mesh_branch: MeshBranch | None = None,
    ) -> dict[str, Tensor]:
        """``images_rgb`` ``Tensor[N, 3, H, W]`` in [0, 1] (the network input, same pixel frame as the targets)
        and ``mesh_branch`` are needed for the pixel term."""
        anchor_boxes = box_convert(anchors, "cxcywh", "xyxy")
        cls_terms, box_terms, landmark_terms = [], [], []
        num_positives = 0
        num_landmark_positives = 0
        mesh_rows: list[Tensor] = []
        mesh_boxes: list[Tensor] = []
        mesh_images: list[Tensor] = []
        for index, target in enumerate(targets):
            boxes = target["boxes"].to(anchors)
            matches = self.matcher(box_iou(boxes, anchor_boxes))
            positive = matches >= 0
            negative = matches == AnchorMatcher.NEGATIVE

            labels = positive.long()
            per_anchor_cls = F.cross_entropy(outputs.class_logits[index].float(), labels, reduction="none")
            num_pos = int(positive.sum())
            num_neg = min(int(negative.sum()), max(int(self.negative_ratio * num_pos), self.min_negatives))
            # Hard negatives: rank background anchors by their loss, without letting the ranking carry gradient.
            mining_loss = per_anchor_cls.detach().masked_fill(~negative, -1.0)
            hard_negatives = mining_loss.topk(num_neg).indices if num_neg > 0 else mining_loss.new_empty(0).long()
            cls_terms.append(per_anchor_cls[positive].sum() + per_anchor_cls[hard_negatives].sum())
            num_positives += num_pos

            matched = matches[positive]
            pos_anchors = anchors[positive]
            box_targets = self.box_coder.encode_boxes(boxes[matched], pos_anchors)
            box_terms.append(F.smooth_l1_loss(outputs.box_deltas[index][positive].float(), box_targets, reduction="sum"))
            if self.pixel_loss is not None and images_rgb is not None:
                positive_ids = torch.nonzero(positive).squeeze(1)
                mesh_rows.append(outputs.mesh_coefficients[torch.full_like(positive_ids, index), positive_ids])
                mesh_boxes.append(boxes[matched])
                mesh_images.append(torch.full_like(matched, index))

            if "landmarks" in target:
                valid = target.get("landmarks_valid")
                if valid is None:
                    valid = torch.ones(boxes.shape[0], dtype=torch.bool, device=boxes.device)
                with_landmarks = valid.to(boxes.device)[matched]
                landmark_targets = self.box_coder.encode_landmarks(
                    target["landmarks"].to(anchors)[matched][with_landmarks], pos_anchors[with_landmarks]
                )
                predicted = outputs.landmark_deltas[index][positive][with_landmarks].float()
                landmark_terms.append(F.smooth_l1_loss(predicted, landmark_targets, reduction="sum"))
                num_landmark_positives += int(with_landmarks.sum())

        zero = outputs.class_logits.sum() * 0.0  # keeps the graph connected when a term is empty
        cls_loss = torch.stack(cls_terms).sum() / max(num_positives, 1)
        box_loss = torch.stack(box_terms).sum() / max(num_positives, 1)
        landmark_loss = (
            torch.stack(landmark_terms).sum() / max(num_landmark_positives, 1) if landmark_terms else zero
        )
        # Landmark and mesh heads get a zero-valued term so DDP sees every parameter used.
        mesh = outputs.mesh_coefficients
        mesh_terms = (mesh.weight, mesh.bias, mesh.features) if isinstance(mesh, SparseMeshCoefficients) else (mesh,)
        unused = outputs.landmark_deltas.sum() * 0.0 + sum(t.sum() * 0.0 for t in mesh_terms)
        losses = {
            "loss_cls": self.cls_weight * cls_loss + zero,
            "loss_box": self.box_weight * box_loss + zero,
            "loss_landmarks": self.landmark_weight * landmark_loss + unused,
        }
        if mesh_rows and mesh_branch is not None:
            pixel = self.pixel_loss(mesh_branch, torch.cat(mesh_rows), images_rgb, torch.cat(mesh_boxes), torch.cat(mesh_images))
            # every decoder parameter takes part in the graph even when no face is sampled (DDP)
            unused_mesh = sum(p.sum() * 0.0 for p in mesh_branch.parameters())
            losses["loss_pixel"] = self.pixel_weight * pixel + unused_mesh
        return losses
