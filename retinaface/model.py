"""The RetinaFace network: one forward for training (losses) and inference (detections)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops.misc import Conv2dNormActivation

from .anchors import AnchorGenerator
from .backbones import build_backbone
from .box_coder import BoxCoder
from .config import InferenceConfig, ModelConfig
from .heads import FusedRetinaFaceHeads, HeadOutputs, RetinaFaceHeads
from .loss import MultiTaskLoss
from .matcher import AnchorMatcher
from .neck import FeaturePyramid, SSHContext
from .postprocess import DetectionPostProcessor
from .transform import ImagePreprocessor

if TYPE_CHECKING:  # the mesh branch needs pytorch3d and torch-geometric; detection alone does not
    from .mesh.branch import MeshBranch

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
        mesh_branch: MeshBranch | None = None,
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
        self.mesh_branch = mesh_branch
        self.fused = False

    def context_features(self, batch: Tensor) -> list[Tensor]:
        """Backbone, FPN and SSH on a preprocessed ``Tensor[N, 3, H, W]``: one ``Tensor[N, C, H_l, W_l]`` per level."""
        pyramid = self.fpn(list(self.backbone(batch).values()))
        return [module(level) for module, level in zip(self.context, pyramid)]

    def network(self, batch: Tensor, *, dense_mesh: bool = True) -> tuple[HeadOutputs, list[tuple[int, int]]]:
        """Backbone to heads on a preprocessed ``Tensor[N, 3, H, W]``: raw outputs and the feature-map sizes.

        ``dense_mesh=False`` returns mesh coefficients evaluated lazily for indexed anchors only.
        """
        contexts = self.context_features(batch)
        return self.heads(contexts, dense_mesh=dense_mesh), [(int(f.shape[-2]), int(f.shape[-1])) for f in contexts]

    def head_outputs(self, batch: Tensor, *, dense_mesh: bool = True) -> tuple[HeadOutputs, Tensor]:
        """Run the network on a preprocessed ``Tensor[N, 3, H, W]``.

        Returns the raw :class:`HeadOutputs` and the matching anchors ``Tensor[A, 4]`` (cx, cy, w, h).
        """
        outputs, feature_shapes = self.network(batch, dense_mesh=dense_mesh)
        return outputs, self.anchor_generator(feature_shapes, device=batch.device, dtype=torch.float32)

    @torch.no_grad()
    def fuse_for_inference(self) -> "RetinaFace":
        """Fold every BatchNorm into its convolution, merge the score/box/landmark heads into one conv per
        level (:class:`~retinaface.heads.FusedRetinaFaceHeads`) and switch to channels-last memory (in place).

        Outputs are unchanged up to float rounding; the model is then for inference only
        (the folded convs no longer have BatchNorm statistics to train). Calling it twice is harmless.
        """
        self.eval()
        for module in self.modules():
            if isinstance(module, Conv2dNormActivation) and isinstance(module[1], nn.BatchNorm2d):
                module[0] = fuse_conv_bn_eval(module[0], module[1])
                module[1] = nn.Identity()
        if isinstance(self.heads, RetinaFaceHeads):
            self.heads = FusedRetinaFaceHeads(self.heads)
        self.fused = True
        return self.to(memory_format=torch.channels_last)

    def forward(
        self, images: ImageBatch, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        image_list = list(images.unbind(0)) if isinstance(images, Tensor) else list(images)
        if not image_list:
            return {} if targets is not None else []
        if targets is not None and self.fused:
            raise RuntimeError("this model was fused for inference (BatchNorm folded) and cannot compute training losses")
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in image_list]
        batch, _, scales, scaled_targets = self.preprocessor(image_list, targets)
        if self.fused:
            batch = batch.contiguous(memory_format=torch.channels_last)
        # mesh coefficients are only needed at kept detections / sampled positives: evaluate them sparsely
        outputs, anchors = self.head_outputs(batch, dense_mesh=False)
        if scaled_targets is not None:
            if len(scaled_targets) != len(image_list):
                raise ValueError(f"got {len(image_list)} images but {len(scaled_targets)} targets")
            mean = self.preprocessor.pixel_mean
            images_rgb = ((batch + mean) / 255.0).flip(1)  # network input back to RGB in [0, 1] for the pixel loss
            return self.loss(outputs, anchors, scaled_targets, images_rgb=images_rgb, mesh_branch=self.mesh_branch)
        detections = self.postprocessor(outputs, anchors)
        return self.preprocessor.map_back(detections, scales, original_sizes)


def build_retinaface(
    config: ModelConfig,
    inference: InferenceConfig | None = None,
    *,
    imagenet_weights: str | Path | None = None,
    mesh: bool = True,
) -> RetinaFace:
    """Assemble a :class:`RetinaFace` from its configs (weights randomly initialised).

    ``mesh=False`` leaves out the mesh branch (decoder, renderer, pixel loss), which needs pytorch3d and
    torch-geometric; the heads still predict mesh coefficients.
    """
    inference = inference or InferenceConfig()
    # Creation order fixes the random initialisation (backbone, mesh decoder, then FPN and heads), which the
    # released weights' untrained mesh tensors were drawn with.
    backbone = build_backbone(config.backbone, imagenet_weights=imagenet_weights)
    pixel_loss = mesh_branch = None
    if mesh:
        try:
            from .mesh.branch import MeshBranch, MeshPixelLoss
            from .mesh.decoder import MeshDecoder
        except ImportError as exc:
            raise ImportError(f"the mesh branch needs pytorch3d and torch-geometric, which are not importable ({exc})") from None

        pixel_loss = MeshPixelLoss()
        mesh_branch = MeshBranch(
            decoder=MeshDecoder(channels=config.mesh_decoder_channels, chebyshev_order=config.mesh_chebyshev_order)
        )
    box_coder = BoxCoder(center_variance=config.box_variances[0], size_variance=config.box_variances[1])
    return RetinaFace(
        config=config,
        backbone=backbone,
        preprocessor=ImagePreprocessor(pixel_mean_bgr=config.pixel_mean_bgr, max_size=inference.max_size),
        anchor_generator=AnchorGenerator(sizes_per_level=config.anchor_sizes, strides=config.anchor_strides),
        postprocessor=DetectionPostProcessor(
            box_coder=box_coder,
            score_threshold=inference.score_threshold,
            nms_threshold=inference.nms_threshold,
            pre_nms_top_k=inference.pre_nms_top_k,
            max_detections=inference.max_detections,
        ),
        loss=MultiTaskLoss(matcher=AnchorMatcher(), box_coder=box_coder, pixel_loss=pixel_loss),
        mesh_branch=mesh_branch,
    )
