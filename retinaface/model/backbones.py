"""Feature extractors returning three maps at strides 8, 16 and 32."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import Conv2dNormActivation


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    negative_slope: float | None = 0.0,
) -> Conv2dNormActivation:
    """Conv (no bias) + BatchNorm + activation as one ``Sequential`` (indices 0, 1, 2).

    ``negative_slope=None`` drops the activation, ``0.0`` is ReLU, anything else LeakyReLU.
    """
    if negative_slope is None:
        activation = None
    elif negative_slope == 0.0:
        activation = nn.ReLU
    else:
        activation = partial(nn.LeakyReLU, negative_slope=negative_slope)
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        groups=groups,
        activation_layer=activation,
        inplace=True,
    )


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 block: 3x3 depthwise conv then 1x1 pointwise conv, each with BN + LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, negative_slope: float) -> None:
        super().__init__(
            conv_bn_act(in_channels, in_channels, stride=stride, groups=in_channels, negative_slope=negative_slope),
            conv_bn_act(in_channels, out_channels, kernel_size=1, negative_slope=negative_slope),
        )


def _resized_conv(
    conv: nn.Conv2d, *, in_channels: int | None = None, out_channels: int | None = None, groups: int | None = None
) -> nn.Conv2d:
    """Copy of ``conv`` with more input/output channels (or groups); the new weights and biases are zero."""
    grown = nn.Conv2d(
        in_channels or conv.in_channels,
        out_channels or conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        groups=groups or conv.groups,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    grown.weight.zero_()
    grown.bias.zero_()
    out, per_group = conv.weight.shape[:2]
    grown.weight[:out, :per_group] = conv.weight
    if conv.bias is not None:
        grown.bias[:out] = conv.bias
    return grown


class MobileNetV1(nn.Module):
    """MobileNetV1 trunk with a width multiplier, as used by the published RetinaFace-MobileNet0.25.

    ``forward`` takes ``Tensor[N, 3, H, W]`` and returns an ordered dict of three feature maps
    at strides 8, 16, 32 with ``out_channels`` channels each.
    """

    def __init__(self, *, width_multiplier: float = 0.25, negative_slope: float = 0.1) -> None:
        super().__init__()
        c = lambda n: int(n * width_multiplier)  # noqa: E731 - channel widths of the x1.0 network
        block = partial(DepthwiseSeparable, negative_slope=negative_slope)
        self.stage1 = nn.Sequential(
            conv_bn_act(3, c(32), stride=2, negative_slope=negative_slope),
            block(c(32), c(64), stride=1),
            block(c(64), c(128), stride=2),
            block(c(128), c(128), stride=1),
            block(c(128), c(256), stride=2),
            block(c(256), c(256), stride=1),
        )
        self.stage2 = nn.Sequential(
            block(c(256), c(512), stride=2),
            *[block(c(512), c(512), stride=1) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(
            block(c(512), c(1024), stride=2),
            block(c(1024), c(1024), stride=1),
        )
        self.out_channels = [c(256), c(512), c(1024)]

    @torch.no_grad()
    def pad_channels(self, multiple: int) -> None:
        """Zero-pad every depthwise-separable block's input channels (and the conv producing them) up to a
        multiple of ``multiple``, in place, on a BatchNorm-folded trunk.

        The padded channels have zero weights and biases, so they carry exact zeros (LeakyReLU(0) = 0) and add
        nothing downstream: outputs are unchanged. It pays in runtimes that store activations in channel blocks
        (onnxruntime's NCHWc layout uses 8 or 16): the x0.25 trunk's 8-channel stem otherwise forces a layout
        round trip and a slow plain-layout conv.
        """
        layers = [layer for stage in (self.stage1, self.stage2, self.stage3) for layer in stage]
        for producer, block in zip(layers, layers[1:]):
            if not isinstance(block, DepthwiseSeparable):
                continue
            channels = block[0][0].in_channels
            padded = -(-channels // multiple) * multiple
            if padded == channels:
                continue
            last = producer[-1] if isinstance(producer, DepthwiseSeparable) else producer
            if not isinstance(last[1], nn.Identity):
                raise RuntimeError("pad_channels needs BatchNorm folded into the convolutions first")
            last[0] = _resized_conv(last[0], out_channels=padded)
            block[0][0] = _resized_conv(block[0][0], in_channels=padded, out_channels=padded, groups=padded)
            block[1][0] = _resized_conv(block[1][0], in_channels=padded)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return OrderedDict([("0", c3), ("1", c4), ("2", c5)])


class ResNet50Trunk(nn.Module):
    """torchvision ResNet-50 returning ``layer2``, ``layer3``, ``layer4`` (strides 8, 16, 32)."""

    def __init__(self, *, imagenet_weights: str | Path | None = None) -> None:
        super().__init__()
        net = resnet50(weights=None)
        if imagenet_weights is not None:
            # Nothing is downloaded at run time: the user passes a local torchvision state dict.
            from ..errors import WeightsError

            try:
                state = torch.load(imagenet_weights, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
            except Exception as exc:  # missing, corrupt, pickled code, or another network's state dict
                first = next((line.strip() for line in str(exc).splitlines() if line.strip() and not line.rstrip().endswith(":")), type(exc).__name__)
                raise WeightsError(f"--imagenet_weights {imagenet_weights} is not a torchvision ResNet-50 state dict ({first})") from None
        self.body = IntermediateLayerGetter(net, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"})
        self.out_channels = [512, 1024, 2048]

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.body(x)


def build_backbone(name: str, *, imagenet_weights: str | Path | None = None) -> nn.Module:
    """Backbone by name; the result has ``out_channels: list[int]`` for its three outputs."""
    if name == "mobilenet0.25":
        return MobileNetV1(width_multiplier=0.25)
    if name == "resnet50":
        return ResNet50Trunk(imagenet_weights=imagenet_weights)
    raise ValueError(f"unknown backbone {name!r}; choose 'mobilenet0.25' or 'resnet50'")
