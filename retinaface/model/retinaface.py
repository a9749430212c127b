"""The RetinaFace network: one forward for training (losses) and inference (detections)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops.misc import Conv2dNormActivation

from .anchors import AnchorGenerator
from .backbones import build_backbone
from ..config import InferenceConfig, LossConfig, ModelConfig
from .heads import FusedRetinaFaceHeads, HeadOutputs, RetinaFaceHeads, RoIMeshHead
from .base import DetectionModel, ImageBatch, box_coder_for, build_detection_stages, image_list
from .loss import MultiTaskLoss
from .matcher import AnchorMatcher
from .neck import FeaturePyramid, SSHContext
from .postprocess import DetectionPostProcessor
from .targets import TargetAssigner
from .transform import ImagePreprocessor

if TYPE_CHECKING:  # the mesh branch needs pytorch3d and torch-geometric; detection alone does not
    from ..mesh.branch import MeshBranch


class RetinaFace(DetectionModel):
    """Single-stage face detector: backbone -> FPN -> SSH per level -> score/box/landmark/mesh heads.

    The mesh head is ``config.mesh_head``'s: the paper's per-anchor 1x1 conv (``"anchor"``, the released
    weights) or :class:`~retinaface.model.heads.RoIMeshHead` (``"roi"``), which reads each face's box on the
    SSH features and so runs after detection, at the kept boxes (and in training at the pixel term's faces).

    ``forward(images, targets=None)``:

    - ``images``: list of ``Tensor[3, H, W]`` BGR 0-255 images (sizes may differ), or ``Tensor[N, 3, H, W]``.
    - with ``targets`` (one dict per image, see :class:`~retinaface.targets.TargetAssigner`, coordinates in
      original-image pixels): returns a dict of weighted losses whose sum is the training objective;
      ``generator`` (keyword) draws the faces the mesh pixel loss renders.
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
            mesh_head=roi_mesh_head_builder(config) if config.mesh_head == "roi" else None,
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

    def network(
        self, batch: Tensor, *, dense_mesh: bool = True, images: Tensor | None = None
    ) -> tuple[HeadOutputs, list[tuple[int, int]]]:
        """Backbone to heads on a preprocessed ``Tensor[N, 3, H, W]``: raw outputs and the feature-map sizes.

        ``dense_mesh=False`` returns mesh coefficients evaluated lazily for indexed anchors only. ``images``:
        the same batch in the layout the RoI mesh head's pixel crops read fastest (default: ``batch``).
        """
        contexts = self.context_features(batch)
        heads = self.heads(contexts, dense_mesh=dense_mesh, images=batch if images is None else images)
        return heads, [(int(f.shape[-2]), int(f.shape[-1])) for f in contexts]

    def head_outputs(self, batch: Tensor, *, dense_mesh: bool = True, images: Tensor | None = None) -> tuple[HeadOutputs, Tensor]:
        """Run the network on a preprocessed ``Tensor[N, 3, H, W]`` (``images``: see :meth:`network`).

        Returns the raw :class:`HeadOutputs` and the matching anchors ``Tensor[A, 4]`` (cx, cy, w, h).
        """
        outputs, feature_shapes = self.network(batch, dense_mesh=dense_mesh, images=images)
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

    @property
    def input_memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.fused else torch.contiguous_format

    def run_network(self, batch: Tensor) -> tuple[HeadOutputs, Tensor]:
        """Inference form of :meth:`head_outputs`: channels-last when fused; mesh coefficients evaluated lazily
        (they are only needed at kept detections)."""
        images = batch  # RoI Align converts a channels-last input whole: the pixel crops read the plain layout
        if self.fused:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.head_outputs(batch, dense_mesh=False, images=images)

    def forward(
        self, images: ImageBatch, targets: list[dict[str, Tensor]] | None = None, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if targets is None:
            return self.detect(images)
        return self.losses(images, targets, generator=generator)

    def losses(
        self, images: ImageBatch, targets: list[dict[str, Tensor]], *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Weighted training losses for ``images`` and their ``targets`` (see :class:`RetinaFace`)."""
        images = image_list(images)
        if not images:
            return {}
        if self.fused:
            raise RuntimeError("this model was fused for inference (BatchNorm folded) and cannot compute training losses")
        if len(targets) != len(images):
            raise ValueError(f"got {len(images)} images but {len(targets)} targets")
        batch, _, _, scaled_targets = self.preprocessor(images, targets)
        # mesh coefficients are only needed at sampled positives: evaluate them sparsely
        outputs, anchors = self.head_outputs(batch, dense_mesh=False)
        images_rgb = ((batch + self.preprocessor.pixel_mean) / 255.0).flip(1)  # back to RGB in [0, 1] for the pixel loss
        return self.loss(outputs, anchors, scaled_targets, images_rgb=images_rgb, mesh_branch=self.mesh_branch, generator=generator)


def roi_mesh_head_builder(config: ModelConfig) -> Callable[[], RoIMeshHead]:
    """Builds the :class:`RoIMeshHead` of ``config`` (on the SSH features, levels as the anchors')."""
    return functools.partial(
        RoIMeshHead,
        config.fpn_channels,
        strides=config.anchor_strides,
        anchor_sizes=config.anchor_sizes,
        num_coefficients=config.num_mesh_coefficients,
        pool_size=config.mesh_roi_size,
        num_convs=config.mesh_roi_convs,
        pixel_channels=config.mesh_roi_pixels,
        test_offset=config.mesh_roi_test_offset,
    )


def build_retinaface(
    config: ModelConfig,
    inference: InferenceConfig | None = None,
    *,
    loss: LossConfig | None = None,
    imagenet_weights: str | Path | None = None,
    mesh: bool = True,
    prior_decoder: bool = True,
) -> RetinaFace:
    """Assemble a :class:`RetinaFace` from its configs (weights randomly initialised, the mesh decoder
    pre-trained on the face prior: see :func:`build_mesh_branch`; defaults: the configs' own).

    ``mesh=False`` leaves out the mesh branch (decoder, renderer, pixel loss), which needs pytorch3d and
    torch-geometric; the heads still predict mesh coefficients. ``prior_decoder=False`` keeps the decoder
    as randomly drawn (the released weights store that one: ``retinaface.model.convert``).
    """
    inference = inference or InferenceConfig()
    loss = loss or LossConfig()
    # Creation order fixes the random initialisation (backbone, mesh decoder, then FPN and heads), which the
    # released weights' untrained mesh tensors were drawn with.
    backbone = build_backbone(config.backbone, imagenet_weights=imagenet_weights)
    mesh_branch = build_mesh_branch(config, loss, prior_decoder=prior_decoder) if mesh else None
    stages = build_detection_stages(config, inference)
    return RetinaFace(
        config=config,
        backbone=backbone,
        preprocessor=stages.preprocessor,
        anchor_generator=stages.anchor_generator,
        postprocessor=stages.postprocessor,
        loss=MultiTaskLoss(
            assigner=TargetAssigner(
                matcher=AnchorMatcher(positive_iou=loss.positive_iou, negative_iou=loss.negative_iou), box_coder=box_coder_for(config)
            ),
            negative_ratio=loss.negative_ratio,
            min_negatives=loss.min_negatives,
            cls_weight=loss.cls_weight,
            box_weight=loss.box_weight,
            landmark_weight=loss.landmark_weight,
            pixel_weight=loss.pixel_weight,
            mesh_landmark_weight=loss.mesh_landmark_weight,
            mesh_truth_weight=loss.mesh_truth_weight,
            mesh_truth_light_weight=loss.mesh_truth_light_weight,
            mesh_truth_shape_weight=loss.mesh_truth_shape_weight,
            mesh_truth_vertex_weight=loss.mesh_truth_vertex_weight,
            face_prior=_face_prior() if loss.mesh_truth_vertex_weight > 0 else None,
            mesh_truth_reads=loss.mesh_truth_reads,
            mesh_truth_jitter=loss.mesh_truth_jitter,
        ),
        mesh_branch=mesh_branch,
    )


def _face_prior():
    from ..mesh.prior import load_prior

    return load_prior()


def build_mesh_branch(config: ModelConfig, loss: LossConfig, *, prior_decoder: bool = True) -> MeshBranch:
    """The mesh decoder and renderer of ``config``, with the pixel loss of ``loss`` when its weight is not 0.

    A decoder of the shipped architecture (the default ``mesh_decoder_channels`` and ``mesh_chebyshev_order``)
    starts as the one pre-trained on the face-shape prior (``mesh/assets/prior_decoder.safetensors``), as the
    released weights are loaded: its latent is then the prior's identity and expression, the synthetic
    faces' shape truth is in the head's own terms, and a zero latent is the upright mean face the synthetic
    poses are relative to. Another architecture, or ``prior_decoder=False``, starts random. Weights loaded
    afterwards replace it.
    """
    try:
        from ..mesh.branch import MeshBranch, MeshPixelLoss
        from ..mesh.decoder import MeshDecoder, load_prior_decoder
        from ..mesh.template import load_template
    except ImportError as exc:
        raise ImportError(f"the mesh branch needs pytorch3d and torch-geometric, which are not importable ({exc})") from None

    template = load_template()
    pixel_loss = None
    if loss.pixel_weight > 0:
        pixel_loss = MeshPixelLoss(
            template=template,
            crop_size=loss.mesh_crop_size,
            max_faces=loss.max_mesh_faces,
            latent_weight=loss.mesh_latent_weight,
            smoothness_weight=loss.mesh_smoothness_weight,
            levels=loss.mesh_pixel_levels,
            box_weight=loss.mesh_box_weight,
        )
    decoder = MeshDecoder(template=template, channels=config.mesh_decoder_channels, chebyshev_order=config.mesh_chebyshev_order)
    shipped = (ModelConfig.mesh_decoder_channels, ModelConfig.mesh_chebyshev_order)
    if prior_decoder and (config.mesh_decoder_channels, config.mesh_chebyshev_order) == shipped:
        load_prior_decoder(decoder)  # after the random draws, which stay as they were (creation order above)
    return MeshBranch(template=template, decoder=decoder, pixel_loss=pixel_loss)
