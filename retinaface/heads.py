"""Per-level 1x1 conv heads predicting, for every anchor, score, box, landmarks and mesh coefficients."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class HeadOutputs(NamedTuple):
    """Raw network outputs for all anchors of a batch, anchors ordered level, row, column, size.

    - ``class_logits``: ``Tensor[N, A, 2]`` (background, face)
    - ``box_deltas``: ``Tensor[N, A, 4]`` encoded with :class:`~retinaface.box_coder.BoxCoder`
    - ``landmark_deltas``: ``Tensor[N, A, 10]`` encoded, five (x, y) points
    - ``mesh_coefficients``: ``Tensor[N, A, M]`` raw mesh parameters (M = 144 by default)
    """

    class_logits: Tensor
    box_deltas: Tensor
    landmark_deltas: Tensor
    mesh_coefficients: Tensor


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

    def forward(self, features: list[Tensor]) -> HeadOutputs:
        return HeadOutputs(
            self.classification(features), self.box(features), self.landmarks(features), self.mesh(features)
        )
