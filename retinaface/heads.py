"""Per-level 1x1 conv heads predicting, for every anchor, score, box, landmarks and mesh coefficients."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class SparseMeshCoefficients:
    """Mesh coefficients evaluated only for the anchors that are indexed.

    The mesh head is a 1x1 convolution per level, so one anchor's coefficients are a linear map of the
    context feature at its location; computing them for the few kept detections instead of every anchor
    saves about 14% of the network's FLOPs at inference. Index like the dense
    ``Tensor[N, A, M]``: ``coefficients[image_ids, anchor_ids]`` -> ``Tensor[K, M]``.

    - ``features``: ``Tensor[N, L, C]`` context features per location (levels, rows, columns flattened)
    - ``weight``: ``Tensor[levels, S, M, C]`` and ``bias`` ``Tensor[levels, S, M]`` (S anchors per location)
    - ``locations_per_level``: number of locations of each level, in order
    """

    def __init__(self, features: Tensor, weight: Tensor, bias: Tensor, locations_per_level: list[int]) -> None:
        self.features = features
        self.weight = weight
        self.bias = bias
        self.level_starts = torch.tensor([0, *locations_per_level], device=features.device).cumsum(0)
        self.anchors_per_location = weight.shape[1]

    def __getitem__(self, index: tuple[Tensor, Tensor]) -> Tensor:
        image_ids, anchor_ids = index
        locations = anchor_ids // self.anchors_per_location
        slots = anchor_ids % self.anchors_per_location
        levels = torch.bucketize(locations, self.level_starts[1:], right=True)
        picked = self.features[image_ids, locations].float()  # [K, C]
        out = picked.new_empty((len(anchor_ids), self.weight.shape[2]))
        for level in range(self.weight.shape[0]):
            for slot in range(self.anchors_per_location):
                rows = torch.nonzero((levels == level) & (slots == slot)).squeeze(1)
                if rows.numel():
                    out[rows] = picked[rows] @ self.weight[level, slot].T + self.bias[level, slot]
        return out


class HeadOutputs(NamedTuple):
    """Raw network outputs for all anchors of a batch, anchors ordered level, row, column, size.

    - ``class_logits``: ``Tensor[N, A, 2]`` (background, face)
    - ``box_deltas``: ``Tensor[N, A, 4]`` encoded with :class:`~retinaface.box_coder.BoxCoder`
    - ``landmark_deltas``: ``Tensor[N, A, 10]`` encoded, five (x, y) points
    - ``mesh_coefficients``: ``Tensor[N, A, M]`` raw mesh parameters (M = 144 by default), or a
      :class:`SparseMeshCoefficients` indexed the same way
    """

    class_logits: Tensor
    box_deltas: Tensor
    landmark_deltas: Tensor
    mesh_coefficients: Tensor | SparseMeshCoefficients


class PredictionHead(nn.Module):
    """One 1x1 conv per pyramid level producing ``values_per_anchor`` numbers per anchor."""

    def __init__(self, in_channels: int, *, num_levels: int, anchors_per_location: int, values_per_anchor: int):
        super().__init__()
        self.values_per_anchor = values_per_anchor
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, anchors_per_location * values_per_anchor, kernel_size=1) for _ in range(num_levels)
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        outputs = []
        for conv, feature in zip(self.convs, features):
            out = conv(feature)  # [N, A*K, H, W] -> [N, H*W*A, K], anchor-size fastest
            outputs.append(out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, self.values_per_anchor))
        return torch.cat(outputs, dim=1)


class RetinaFaceHeads(nn.Module):
    """The four task heads sharing the SSH features."""

    def __init__(self, in_channels: int, *, num_levels: int, anchors_per_location: int, num_mesh_coefficients: int):
        super().__init__()
        make = lambda k: PredictionHead(  # noqa: E731
            in_channels, num_levels=num_levels, anchors_per_location=anchors_per_location, values_per_anchor=k
        )
        self.classification = make(2)
        self.box = make(4)
        self.landmarks = make(10)
        self.mesh = make(num_mesh_coefficients)
        # The mesh head starts at zero coefficients, i.e. the template face, until trained.
        for conv in self.mesh.convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[Tensor], *, dense_mesh: bool = True) -> HeadOutputs:
        mesh = self.mesh(features) if dense_mesh else self.sparse_mesh(features)
        return HeadOutputs(self.classification(features), self.box(features), self.landmarks(features), mesh)

    def mesh_parameters(self) -> tuple[Tensor, Tensor]:
        """Mesh head as ``weight`` ``Tensor[levels, S, M, C]`` and ``bias`` ``Tensor[levels, S, M]``."""
        values = self.mesh.values_per_anchor
        weight = torch.stack([conv.weight.flatten(1).unflatten(0, (-1, values)) for conv in self.mesh.convs])
        bias = torch.stack([conv.bias.unflatten(0, (-1, values)) for conv in self.mesh.convs])
        return weight, bias

    def sparse_mesh(self, features: list[Tensor]) -> SparseMeshCoefficients:
        flat = torch.cat([f.permute(0, 2, 3, 1).flatten(1, 2) for f in features], dim=1)
        weight, bias = self.mesh_parameters()
        return SparseMeshCoefficients(flat, weight, bias, [f.shape[-2] * f.shape[-1] for f in features])
