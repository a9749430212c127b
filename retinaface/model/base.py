"""The inference pipeline shared by both backends: preprocess -> network -> postprocess -> map back."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import InferenceConfig, ModelConfig
from ..utils.threads import torch_threads
from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .heads import HeadOutputs
from .postprocess import DetectionPostProcessor
from .transform import ImagePreprocessor

ImageBatch = list[Tensor] | Tensor


class DetectionStages(NamedTuple):
    """The network-independent stages of detection, built from the configs by :func:`build_detection_stages`."""

    preprocessor: ImagePreprocessor
    anchor_generator: AnchorGenerator
    postprocessor: DetectionPostProcessor


def box_coder_for(config: ModelConfig) -> BoxCoder:
    return BoxCoder(center_variance=config.box_variances[0], size_variance=config.box_variances[1])


def build_detection_stages(config: ModelConfig, inference: InferenceConfig) -> DetectionStages:
    """Preprocessor (resize, mean, batching), anchors and postprocessor (decode, NMS) of a network ``config``
    with the test-time settings ``inference``."""
    return DetectionStages(
        preprocessor=ImagePreprocessor(pixel_mean_bgr=config.pixel_mean_bgr, max_size=inference.max_size),
        anchor_generator=AnchorGenerator(sizes_per_level=config.anchor_sizes, strides=config.anchor_strides),
        postprocessor=DetectionPostProcessor(
            box_coder=box_coder_for(config),
            score_threshold=inference.score_threshold,
            nms_threshold=inference.nms_threshold,
            pre_nms_top_k=inference.pre_nms_top_k,
            max_detections=inference.max_detections,
        ),
    )


def image_list(images: ImageBatch) -> list[Tensor]:
    """``Tensor[N, 3, H, W]`` or a sequence of ``Tensor[3, H, W]`` as a list of images."""
    return list(images.unbind(0)) if isinstance(images, Tensor) else list(images)


class DetectionModel(nn.Module):
    """A face detector with the pipeline preprocess -> :meth:`run_network` -> postprocess -> map back.

    Subclasses set ``preprocessor``, ``anchor_generator`` and ``postprocessor`` (from
    :func:`build_detection_stages`) and implement ``run_network(batch) -> (HeadOutputs, anchors)``, or
    override :meth:`detect_resized` as a whole (the onnxruntime backend, whose graph also post-processes).
    :meth:`detect` returns one dict per image with ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2, original-image
    pixels, clipped), ``scores`` ``Tensor[K]``, ``landmarks`` ``Tensor[K, 5, 2]`` (original pixels) and
    ``mesh_coefficients`` ``Tensor[K, M]``, sorted by descending score.
    """

    preprocessor: ImagePreprocessor
    anchor_generator: AnchorGenerator
    postprocessor: DetectionPostProcessor
    pipeline_threads: int | None = None
    """PyTorch threads for :meth:`detect` (``None``: the caller's). A backend whose network runs outside
    PyTorch sets 1: pre- and post-processing are small, and PyTorch's parallel regions would wait for
    cores the network's own threads hold."""

    @property
    def input_memory_format(self) -> torch.memory_format:
        """Memory format :meth:`detect` builds the network input in (the network's own, to skip a conversion)."""
        return torch.contiguous_format

    def run_network(self, batch: Tensor) -> tuple[HeadOutputs, Tensor]:
        """Raw outputs for a preprocessed ``Tensor[N, 3, H, W]`` and its anchors ``Tensor[A, 4]`` (cx, cy, w, h)."""
        raise NotImplementedError

    def detect(self, images: ImageBatch, *, mesh: bool = True) -> list[dict[str, Tensor]]:
        """Detections for BGR 0-255 ``images`` (a list of ``Tensor[3, H, W]`` of any sizes, or ``Tensor[N, 3, H, W]``).
        ``mesh=False``: the mesh head is not run and ``mesh_coefficients`` is ``Tensor[K, 0]`` (for callers that
        read only boxes and landmarks; a backend that computes the head inside its graph may still return them)."""
        images = image_list(images)
        if not images:
            return []
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        with torch_threads(self.pipeline_threads):
            detections, scales = self.detect_resized(images, mesh=mesh)
            return self.preprocessor.map_back(detections, scales, original_sizes)

    def detect_resized(self, images: list[Tensor], *, mesh: bool = True) -> tuple[list[dict[str, Tensor]], list[float]]:
        """Detections (as :meth:`detect`, but in the pixels of the images as resized for the network) and each
        image's resize factor."""
        batch, _, scales, _ = self.preprocessor(images, memory_format=self.input_memory_format)
        outputs, anchors = self.run_network(batch)
        if not mesh:
            # a per-anchor tensor with no coefficients: the post-processor indexes it at the kept anchors for free
            outputs = outputs._replace(mesh_coefficients=outputs.class_logits.new_zeros((*outputs.class_logits.shape[:2], 0)))
        return self.postprocessor(outputs, anchors), scales
