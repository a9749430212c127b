"""Preprocessing owned by the model: resize, mean subtraction, batching; and the inverse mapping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ImagePreprocessor(nn.Module):
    """Turn a list of BGR images of any sizes into one padded network input.

    Images are ``Tensor[3, H, W]`` in BGR channel order with values 0-255 (uint8 or float).
    Images whose long side exceeds ``max_size`` are downscaled (bilinear, antialiased), the BGR
    mean is subtracted, and the batch is zero-padded (i.e. mean-coloured) at the bottom/right to
    a common size, rounded up to ``size_divisible``.
    """

    def __init__(
        self, *, pixel_mean_bgr: tuple[float, float, float], max_size: int | None = None, size_divisible: int = 1
    ) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean_bgr, dtype=torch.float32).view(3, 1, 1))
        self.max_size = max_size
        self.size_divisible = size_divisible

    def scale_for(self, height: int, width: int) -> float:
        """Resize factor applied to an image of this size (1.0 when no resize happens)."""
        if self.max_size is None or max(height, width) <= self.max_size:
            return 1.0
        return self.max_size / max(height, width)

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        *,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> tuple[Tensor, list[tuple[int, int]], list[float], list[dict[str, Tensor]] | None]:
        """Returns ``(batch Tensor[N, 3, Hp, Wp], resized (h, w) per image, scale per image, scaled targets)``;
        the batch in ``memory_format`` (``torch.channels_last`` for a channels-last network: HWC images are
        then copied without a layout change)."""
        resized, sizes, scales = [], [], []
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a Tensor[3, H, W] BGR image, got shape {tuple(image.shape)}")
            height, width = image.shape[-2:]
            scale = self.scale_for(height, width)
            if scale != 1.0:
                new_size = (max(1, round(height * scale)), max(1, round(width * scale)))
                image = image.to(self.pixel_mean.device, torch.float32)
                image = F.interpolate(image[None], size=new_size, mode="bilinear", align_corners=False, antialias=True)[0]
            resized.append(image)
            sizes.append((int(image.shape[-2]), int(image.shape[-1])))
            scales.append(scale)

        divisor = self.size_divisible
        pad_h = -(-max(h for h, _ in sizes) // divisor) * divisor
        pad_w = -(-max(w for _, w in sizes) // divisor) * divisor
        # Copy (and convert) every image straight into the batch, then subtract the mean in place: one pass
        # over the pixels for the layout change and one for the mean, and padding stays exactly zero.
        batch = torch.empty((len(resized), 3, pad_h, pad_w), device=self.pixel_mean.device, memory_format=memory_format)
        for slot, image in zip(batch, resized):
            height, width = image.shape[-2:]
            slot[:, :height, :width].copy_(image).sub_(self.pixel_mean)
            slot[:, height:].zero_()
            slot[:, :height, width:].zero_()

        if targets is not None:
            targets = [self._scale_target(t, s) for t, s in zip(targets, scales)]
        return batch, sizes, scales, targets

    @staticmethod
    def _scale_target(target: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
        if scale == 1.0:
            return target
        scaled = dict(target)
        for key in ("boxes", "landmarks", "mesh_placement"):
            if key in scaled:
                scaled[key] = scaled[key] * scale
        return scaled

    @staticmethod
    def map_back(
        detections: list[dict[str, Tensor]], scales: list[float], original_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Undo the resize: boxes and landmarks to original-image pixels; boxes clipped to the image."""
        mapped = []
        for detection, scale, (height, width) in zip(detections, scales, original_sizes):
            out = dict(detection)
            boxes = detection["boxes"]
            # One clamp against per-column limits; no division at scale 1 (each op costs more than its arithmetic).
            limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
            out["boxes"] = (boxes if scale == 1.0 else boxes / scale).clamp(min=torch.zeros_like(limits), max=limits)
            out["landmarks"] = detection["landmarks"] if scale == 1.0 else detection["landmarks"] / scale
            mapped.append(out)
        return mapped
