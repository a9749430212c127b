"""Anchor generation from feature-map shapes, cached per shape/device/dtype."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AnchorGenerator(nn.Module):
    """Square anchors centred on every feature-map cell.

    For level ``l`` with stride ``s`` and feature size ``(h, w)``, the anchor of cell ``(i, j)``
    and size ``m`` is ``(cx, cy, w, h) = ((j + 0.5) s, (i + 0.5) s, m, m)`` in input pixels.
    Anchors are ordered level, row, column, size - the order the heads emit predictions in.
    """

    def __init__(self, *, sizes_per_level: tuple[tuple[int, ...], ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        if len(sizes_per_level) != len(strides):
            raise ValueError("sizes_per_level and strides must have one entry per pyramid level")
        self.sizes_per_level = tuple(tuple(s) for s in sizes_per_level)
        self.strides = tuple(strides)
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.sizes_per_level[0])

    def forward(
        self, feature_shapes: list[tuple[int, int]], *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Anchors for feature maps of the given ``(height, width)`` per level.

        Returns ``Tensor[A, 4]`` as (cx, cy, w, h) in pixels of the network input,
        ``A = sum(h * w) * anchors_per_location``.
        """
        key = (tuple(tuple(int(v) for v in s) for s in feature_shapes), str(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        anchors_per_level = []
        for (height, width), stride, sizes in zip(feature_shapes, self.strides, self.sizes_per_level):
            ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride
            xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
            side = torch.tensor(sizes, device=device, dtype=dtype).reshape(1, -1, 1).expand(centres.shape[0], -1, 2)
            anchors_per_level.append(torch.cat([centres, side], dim=-1).reshape(-1, 4))
        anchors = torch.cat(anchors_per_level, dim=0)
        if len(self._cache) > 32:  # many distinct input sizes (e.g. a folder of photos): stay bounded
            self._cache.clear()
        self._cache[key] = anchors
        return anchors

    def feature_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Feature-map ``(height, width)`` per level for an input of ``height x width`` pixels:
        ``ceil(size / stride)``, what stride-2 convs with 'same' padding produce."""
        return [(-(-height // s), -(-width // s)) for s in self.strides]

    def for_image_size(
        self, height: int, width: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Anchors for an input of ``height x width`` pixels (see :meth:`feature_shapes`)."""
        return self(self.feature_shapes(height, width), device=device, dtype=dtype)
