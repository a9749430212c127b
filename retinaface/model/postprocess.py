"""Turn raw head outputs into per-image detections: score filter, top-k, decode, NMS."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, nms

from .box_coder import BoxCoder
from .heads import HeadOutputs, mesh_coefficients_at


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
        # Few tensor ops, each on few rows: at batch 1 this runs right after the network, with cold caches,
        # and its cost is per-op dispatch far more than arithmetic.
        scores = face_probability(outputs.class_logits)  # [N, A]
        image_ids, anchor_ids = torch.nonzero(scores > self.score_threshold, as_tuple=True)  # image-major
        candidate_scores = scores[image_ids, anchor_ids]
        capped = self.cap_per_image(image_ids, candidate_scores, scores.shape[0])
        if capped is not None:
            image_ids, anchor_ids, candidate_scores = image_ids[capped], anchor_ids[capped], candidate_scores[capped]
        candidate_anchors = anchors[anchor_ids]
        boxes = self.box_coder.decode_boxes(outputs.box_deltas[image_ids, anchor_ids].float(), candidate_anchors)
        landmarks = self.box_coder.decode_landmarks(outputs.landmark_deltas[image_ids, anchor_ids].float(), candidate_anchors)
        mesh = outputs.mesh_coefficients
        return self.suppress(
            scores.shape[0], image_ids, candidate_scores, boxes, landmarks,
            lambda keep: mesh_coefficients_at(mesh, image_ids[keep], anchor_ids[keep], boxes[keep]).float(),
        )

    def suppress(
        self,
        batch_size: int,
        image_ids: Tensor,
        scores: Tensor,
        boxes: Tensor,
        landmarks: Tensor,
        mesh_at: Callable[[Tensor], Tensor],
    ) -> list[dict[str, Tensor]]:
        """NMS per image over decoded candidates, then at most ``max_detections`` per image.

        ``image_ids`` ``Tensor[K]`` (ascending), ``scores`` ``Tensor[K]``, ``boxes`` ``Tensor[K, 4]`` and
        ``landmarks`` ``Tensor[K, 5, 2]`` (network-input pixels) describe the candidates above the score
        threshold; ``mesh_at(indices)`` returns the mesh coefficients ``Tensor[k, M]`` of the candidates at
        ``indices``. It is called once, with the final detections only (after NMS and the per-image cap):
        the RoI mesh head runs on exactly the faces returned.
        """
        if batch_size == 1:
            keep = nms(boxes, scores, self.nms_threshold)[: self.max_detections]  # sorted by score
        else:
            keep = batched_nms(boxes, scores, image_ids, self.nms_threshold)  # sorted by score
            kept_images = image_ids[keep]
            keep = torch.cat([keep[kept_images == image][: self.max_detections] for image in range(batch_size)])  # image-major
        kept = {"boxes": boxes[keep], "scores": scores[keep], "landmarks": landmarks[keep], "mesh_coefficients": mesh_at(keep)}
        if batch_size == 1:
            return [kept]
        counts = torch.bincount(image_ids[keep], minlength=batch_size).tolist()
        return [dict(zip(kept, parts)) for parts in zip(*(value.split(counts) for value in kept.values()))]

    def cap_per_image(self, image_ids: Tensor, scores: Tensor, batch_size: int) -> Tensor | None:
        """Indices of each image's ``pre_nms_top_k`` highest-scoring candidates (``image_ids`` ``Tensor[K]``
        ascending, ``scores`` ``Tensor[K]``), in the candidates' order; ``None`` when no image has more."""
        if len(image_ids) <= self.pre_nms_top_k:  # only then can one image exceed its cap
            return None
        kept = []
        for image in range(batch_size):
            mine = torch.nonzero(image_ids == image).squeeze(1)
            if len(mine) > self.pre_nms_top_k:
                mine = mine[scores[mine].topk(self.pre_nms_top_k).indices].sort().values
            kept.append(mine)
        return torch.cat(kept)
