"""Turn raw head outputs into per-image detections: score filter, top-k, decode, NMS."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from .box_coder import BoxCoder
from .heads import HeadOutputs


def face_probability(class_logits: Tensor) -> Tensor:
    """``softmax(class_logits)[..., 1]`` for ``Tensor[..., 2]`` (background, face) logits, as a sigmoid of the
    logit difference: the same value, but one vectorised pass (a softmax over a last dimension of size 2
    costs more than the rest of post-processing together on the CPU)."""
    logits = class_logits.float()
    return torch.sigmoid(logits[..., 1] - logits[..., 0])


class DetectionPostProcessor(nn.Module):
    """Decode and suppress detections for a batch in one ``batched_nms`` call.

    Returns, per image, a dict with ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2, network-input pixels),
    ``scores`` ``Tensor[K]`` (face probability), ``landmarks`` ``Tensor[K, 5, 2]`` and
    ``mesh_coefficients`` ``Tensor[K, M]``, sorted by descending score.
    """

    def __init__(
        self,
        *,
        box_coder: BoxCoder,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        pre_nms_top_k: int = 5000,
        max_detections: int = 750,
    ) -> None:
        super().__init__()
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.pre_nms_top_k = pre_nms_top_k
        self.max_detections = max_detections

    def forward(self, outputs: HeadOutputs, anchors: Tensor) -> list[dict[str, Tensor]]:
        scores = face_probability(outputs.class_logits)  # [N, A]
        batch_size = scores.shape[0]
        image_ids, anchor_ids = [], []
        for image in range(batch_size):
            candidates = torch.nonzero(scores[image] > self.score_threshold).squeeze(1)
            if candidates.numel() > self.pre_nms_top_k:
                top = scores[image, candidates].topk(self.pre_nms_top_k).indices
                candidates = candidates[top]
            anchor_ids.append(candidates)
            image_ids.append(torch.full_like(candidates, image))
        image_ids_t = torch.cat(image_ids)
        anchor_ids_t = torch.cat(anchor_ids)

        kept_anchors = anchors[anchor_ids_t]
        boxes = self.box_coder.decode_boxes(outputs.box_deltas[image_ids_t, anchor_ids_t].float(), kept_anchors)
        kept_scores = scores[image_ids_t, anchor_ids_t]
        keep = batched_nms(boxes, kept_scores, image_ids_t, self.nms_threshold)  # sorted by score

        landmarks = self.box_coder.decode_landmarks(
            outputs.landmark_deltas[image_ids_t[keep], anchor_ids_t[keep]].float(), kept_anchors[keep]
        )
        mesh = outputs.mesh_coefficients[image_ids_t[keep], anchor_ids_t[keep]].float()
        boxes, kept_scores, image_of = boxes[keep], kept_scores[keep], image_ids_t[keep]

        detections = []
        for image in range(batch_size):
            mine = torch.nonzero(image_of == image).squeeze(1)[: self.max_detections]
            detections.append(
                {
                    "boxes": boxes[mine],
                    "scores": kept_scores[mine],
                    "landmarks": landmarks[mine],
                    "mesh_coefficients": mesh[mine],
                }
            )
        return detections
