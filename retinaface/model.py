"""The RetinaFace network: one forward for training (losses) and inference (detections)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .backbones import build_backbone
from .box_coder import BoxCoder
from .config import InferenceConfig, ModelConfig
from .heads import HeadOutputs, RetinaFaceHeads
from .loss import MultiTaskLoss
from .matcher import AnchorMatcher
from .neck import FeaturePyramid, SSHContext
from .postprocess import DetectionPostProcessor
from .transform import ImagePreprocessor

ImageBatch = list[Tensor] | Tensor


class RetinaFace(nn.Module):
    """Single-stage face detector: backbone -> FPN -> SSH per level -> score/box/landmark/mesh heads.

    ``forward(images, targets=None)``:

    - ``images``: list of ``Tensor[3, H, W]`` BGR 0-255 images (sizes may differ), or ``Tensor[N, 3, H, W]``.
    - with ``targets`` (one dict per image, see :class:`~retinaface.loss.MultiTaskLoss`, coordinates in
      original-image pixels): returns a dict of weighted losses whose sum is the training objective.
    - without: returns one dict per image with ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2, original-image
      pixels, clipped), ``scores`` ``Tensor[K]``, ``landmarks`` ``Tensor[K, 5, 2]`` (x, y, original pixels;
      order: left eye, right eye, nose, left mouth corner, right mouth corner as seen in the image)
      and ``mesh_coefficients`` ``Tensor[K, 144]``.
    """

    def __init__(
        self,
        *,
        config: ModelConfig,
        backbone: nn.Module,
        preprocessor: ImagePreprocessor,
        anchor_generator: AnchorGenerator,
        postprocessor: DetectionPostProcessor,
        loss: MultiTaskLoss,
    ) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = preprocessor
        self.backbone = backbone
        channels = config.fpn_channels
        self.fpn = FeaturePyramid(list(backbone.out_channels), channels)
        self.context = nn.ModuleList(SSHContext(channels, channels) for _ in config.anchor_strides)
        self.heads = RetinaFaceHeads(
            channels,
            num_levels=len(config.anchor_strides),
            anchors_per_location=anchor_generator.num_anchors_per_location,
            num_mesh_coefficients=config.num_mesh_coefficients,
        )
        self.anchor_generator = anchor_generator
        self.postprocessor = postprocessor
        self.loss = loss

    def head_outputs(self, batch: Tensor) -> tuple[HeadOutputs, Tensor]:
        """Run the network on a preprocessed ``Tensor[N, 3, H, W]``.

        Returns the raw :class:`HeadOutputs` and the matching anchors ``Tensor[A, 4]`` (cx, cy, w, h).
        """
        features = list(self.backbone(batch).values())
        pyramid = self.fpn(features)
        contexts = [module(level) for module, level in zip(self.context, pyramid)]
        anchors = self.anchor_generator(
            [tuple(f.shape[-2:]) for f in contexts], device=batch.device, dtype=torch.float32
        )
        return self.heads(contexts), anchors

    def forward(
        self, images: ImageBatch, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        image_list = list(images.unbind(0)) if isinstance(images, Tensor) else list(images)
        if not image_list:
            return {} if targets is not None else []
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in image_list]
        batch, _, scales, scaled_targets = self.preprocessor(image_list, targets)
        outputs, anchors = self.head_outputs(batch)
        if scaled_targets is not None:
            if len(scaled_targets) != len(image_list):
                raise ValueError(f"got {len(image_list)} images but {len(scaled_targets)} targets")
            return self.loss(outputs, anchors, scaled_targets)
        detections = self.postprocessor(outputs, anchors)
        return self.preprocessor.map_back(detections, scales, original_sizes)


def build_retinaface(
    config: ModelConfig,
    inference: InferenceConfig | None = None,
    *,
    imagenet_weights: str | Path | None = None,
) -> RetinaFace:
    """Assemble a :class:`RetinaFace` from its configs (weights randomly initialised)."""
    inference = inference or InferenceConfig()
    box_coder = BoxCoder(center_variance=config.box_variances[0], size_variance=config.box_variances[1])
    return RetinaFace(
        config=config,
        backbone=build_backbone(config.backbone, imagenet_weights=imagenet_weights),
        preprocessor=ImagePreprocessor(pixel_mean_bgr=config.pixel_mean_bgr, max_size=inference.max_size),
        anchor_generator=AnchorGenerator(sizes_per_level=config.anchor_sizes, strides=config.anchor_strides),
        postprocessor=DetectionPostProcessor(
            box_coder=box_coder,
            score_threshold=inference.score_threshold,
            nms_threshold=inference.nms_threshold,
            pre_nms_top_k=inference.pre_nms_top_k,
            max_detections=inference.max_detections,
        ),
        loss=MultiTaskLoss(matcher=AnchorMatcher(), box_coder=box_coder),
    )
