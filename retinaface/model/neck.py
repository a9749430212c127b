"""Feature pyramid and SSH context modules between the backbone and the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import conv_bn_act


def _slope_for(channels: int) -> float:
    # The published models use LeakyReLU(0.1) in the light (<=64 channel) neck and ReLU otherwise.
    return 0.1 if channels <= 64 else 0.0


class FeaturePyramid(nn.Module):
    """Top-down FPN with BN and activation after every conv (RetinaFace variant).

    The coarsest level has no 3x3 merge conv, matching the published weights.
    ``forward(features)`` maps a list of ``Tensor[N, C_i, H_i, W_i]`` (fine to coarse)
    to a list of ``Tensor[N, out_channels, H_i, W_i]``.
    """

    def __init__(self, in_channels_per_level: list[int], out_channels: int) -> None:
        super().__init__()
        slope = _slope_for(out_channels)
        self.lateral = nn.ModuleList(
            conv_bn_act(c, out_channels, kernel_size=1, negative_slope=slope) for c in in_channels_per_level
        )
        self.merge = nn.ModuleList(
            conv_bn_act(out_channels, out_channels, negative_slope=slope)
            for _ in range(len(in_channels_per_level) - 1)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features)]
        outputs = [laterals[-1]]
        for level in range(len(laterals) - 2, -1, -1):
            top_down = F.interpolate(outputs[0], size=laterals[level].shape[-2:], mode="nearest")
            outputs.insert(0, self.merge[level](laterals[level] + top_down))
        return outputs


class SSHContext(nn.Module):
    """SSH context module: parallel 3x3, 5x5 and 7x7 receptive fields (stacked 3x3 convs).

    Output channels: half from the 3x3 branch, a quarter each from the 5x5 and 7x7 branches.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError("SSH out_channels must be divisible by 4")
        slope = _slope_for(out_channels)
        quarter = out_channels // 4
        self.branch3 = conv_bn_act(in_channels, out_channels // 2, negative_slope=None)
        self.context_reduce = conv_bn_act(in_channels, quarter, negative_slope=slope)
        self.branch5 = conv_bn_act(quarter, quarter, negative_slope=None)
        self.context_expand = conv_bn_act(quarter, quarter, negative_slope=slope)
        self.branch7 = conv_bn_act(quarter, quarter, negative_slope=None)

    def forward(self, x: Tensor) -> Tensor:
        shared = self.context_reduce(x)
        out3 = self.branch3(x)
        out5 = self.branch5(shared)
        out7 = self.branch7(self.context_expand(shared))
        return torch.relu(torch.cat([out3, out5, out7], dim=1))
