"""Per-level 1x1 conv heads predicting, for every anchor, score, box and landmarks; and the two mesh heads:
the paper's per-anchor one and one that reads each face's box (RoI Align)."""

from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align
from torchvision.ops.misc import Conv2dNormActivation


class SparseMeshCoefficients:
    """Mesh coefficients of the per-anchor head evaluated only for the anchors that are indexed.

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
        self.locations_per_level = list(locations_per_level)
        self.anchors_per_location = weight.shape[1]

    def locate(self, anchor_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Where anchors ``Tensor[K]`` sit: their feature location (index into ``features``' dim 1), pyramid
        level and anchor slot at that location, ``Tensor[K]`` each."""
        locations = anchor_ids // self.anchors_per_location
        level_ends = torch.tensor(list(itertools.accumulate(self.locations_per_level)), device=locations.device)
        return locations, torch.bucketize(locations, level_ends, right=True), anchor_ids % self.anchors_per_location

    def __getitem__(self, index: tuple[Tensor, Tensor]) -> Tensor:
        image_ids, anchor_ids = index
        locations, levels, slots = self.locate(anchor_ids)
        picked = self.features[image_ids, locations].float()  # [K, C]
        # One product with every (level, slot) head, then pick each anchor's own block: a few large ops
        # instead of a Python loop over (level, slot) pairs. 6x the (tiny) FLOPs, no per-anchor weight copies.
        num_levels, slots_per_location, coefficients, channels = self.weight.shape
        every_head = picked @ self.weight.reshape(-1, channels).T + self.bias.reshape(-1)  # [K, L*S*M]
        block = levels * self.anchors_per_location + slots
        rows = torch.arange(len(block), device=block.device)
        return every_head.view(-1, num_levels * slots_per_location, coefficients)[rows, block]

    def dependencies(self) -> tuple[Tensor, ...]:
        """The tensors the coefficients are computed from (a zero multiple of them keeps the head in the graph)."""
        return self.weight, self.bias, self.features


class RoIMeshCoefficients:
    """Mesh coefficients of a :class:`RoIMeshHead`, computed on demand for the faces asked for: the head reads
    each face's box, so there is nothing per anchor to index. ``at(image_ids, boxes)`` -> ``Tensor[K, M]``.

    - ``head``: the :class:`RoIMeshHead`
    - ``features``: ``list[Tensor[N, C, H_l, W_l]]`` the context features of the batch, one per level
    - ``images``: the preprocessed batch ``Tensor[N, 3, H, W]`` the features came from (read by a head with
      a pixel branch; ``None`` for one without)
    """

    def __init__(self, head: "RoIMeshHead", features: list[Tensor], images: Tensor | None = None) -> None:
        self.head = head
        self.features = features
        self.images = images

    def at(self, image_ids: Tensor, boxes: Tensor) -> Tensor:
        """Coefficients ``Tensor[K, M]`` of the faces at ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2, network-input
        pixels) in images ``image_ids`` ``Tensor[K]``."""
        return self.head(self.features, image_ids, boxes, images=self.images)

    def __getitem__(self, index: object) -> Tensor:
        raise TypeError("the RoI mesh head reads faces by their boxes, not by anchor: use mesh_coefficients_at()")

    def dependencies(self) -> tuple[Tensor, ...]:
        """The head's parameters and the features it reads (see :meth:`SparseMeshCoefficients.dependencies`)."""
        return (*self.head.parameters(), *self.features)


MeshOutputs = Tensor | SparseMeshCoefficients | RoIMeshCoefficients


def mesh_coefficients_at(mesh: MeshOutputs, image_ids: Tensor, anchor_ids: Tensor, boxes: Tensor) -> Tensor:
    """Mesh coefficients ``Tensor[K, M]`` of faces found at anchors ``(image_ids, anchor_ids)`` ``Tensor[K]``
    with boxes ``Tensor[K, 4]`` (x1 y1 x2 y2, network-input pixels): read at the anchor for the per-anchor
    head (dense or sparse), computed from the box for the RoI head."""
    if isinstance(mesh, RoIMeshCoefficients):
        return mesh.at(image_ids, boxes)
    return mesh[image_ids, anchor_ids]


class HeadOutputs(NamedTuple):
    """Raw network outputs for all anchors of a batch, anchors ordered level, row, column, size.

    - ``class_logits``: ``Tensor[N, A, 2]`` (background, face)
    - ``box_deltas``: ``Tensor[N, A, 4]`` encoded with :class:`~retinaface.box_coder.BoxCoder`
    - ``landmark_deltas``: ``Tensor[N, A, 10]`` encoded, five (x, y) points
    - ``mesh_coefficients``: the per-anchor head's ``Tensor[N, A, M]`` raw mesh parameters (M = 144 by
      default) or a :class:`SparseMeshCoefficients` indexed the same way; for the RoI head a
      :class:`RoIMeshCoefficients`. :func:`mesh_coefficients_at` reads any of them.
    """

    class_logits: Tensor
    box_deltas: Tensor
    landmark_deltas: Tensor
    mesh_coefficients: MeshOutputs


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


class AnchorMeshHead(PredictionHead):
    """The paper's mesh head: a 1x1 conv per level giving every anchor ``num_coefficients`` coefficients.

    Zero-initialised: zero coefficients are the template face until the head is trained.
    ``forward(features)`` gives the dense ``Tensor[N, A, M]``; :meth:`outputs` the lazy form.
    """

    def __init__(self, in_channels: int, *, num_levels: int, anchors_per_location: int, num_coefficients: int):
        super().__init__(in_channels, num_levels=num_levels, anchors_per_location=anchors_per_location, values_per_anchor=num_coefficients)
        for conv in self.convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def parameters_per_anchor(self) -> tuple[Tensor, Tensor]:
        """The head as ``weight`` ``Tensor[levels, S, M, C]`` and ``bias`` ``Tensor[levels, S, M]``."""
        values = self.values_per_anchor
        weight = torch.stack([conv.weight.flatten(1).unflatten(0, (-1, values)) for conv in self.convs])
        bias = torch.stack([conv.bias.unflatten(0, (-1, values)) for conv in self.convs])
        return weight, bias

    def sparse(self, features: list[Tensor]) -> SparseMeshCoefficients:
        flat = torch.cat([f.permute(0, 2, 3, 1).flatten(1, 2) for f in features], dim=1)
        weight, bias = self.parameters_per_anchor()
        return SparseMeshCoefficients(flat, weight, bias, [f.shape[-2] * f.shape[-1] for f in features])

    def outputs(self, features: list[Tensor], *, dense: bool, images: Tensor | None = None) -> Tensor | SparseMeshCoefficients:
        """Every anchor's coefficients (``dense``) or the lazily indexed :class:`SparseMeshCoefficients`
        (``images`` is not read: this head is a conv on the features alone)."""
        return self(features) if dense else self.sparse(features)


def level_boundaries(anchor_sizes: Sequence[Sequence[int]]) -> list[float]:
    """Face sizes (pixels, ``sqrt(w h)``) where one pyramid level hands over to the next: the geometric mean
    of neighbouring levels' typical anchor sizes (each level's own geometric mean), so a face goes to the
    level whose anchors fit it best. Default anchors: 45.3 and 181 px."""
    typical = [math.exp(sum(math.log(s) for s in sizes) / len(sizes)) for sizes in anchor_sizes]
    return [math.sqrt(a * b) for a, b in zip(typical, typical[1:])]


def standardise_crops(crops: Tensor) -> Tensor:
    """``crops`` ``Tensor[K, 3, S, S]`` shifted and scaled to zero mean and unit variance over each crop's
    pixels and channels together: the shading pattern and the colours' ratios are kept, the exposure and
    contrast of the photo are not (the head learns from synthetic faces, whose exposure is not a photo's)."""
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    # the sample standard deviation written out: torch.std warns when there are no faces at all
    values = crops.shape[1] * crops.shape[2] * crops.shape[3]
    spread = ((crops - mean).square().sum(dim=(1, 2, 3), keepdim=True) / (values - 1)).sqrt()
    return (crops - mean) / (spread + 1e-3)


class RoIMeshHead(nn.Module):
    """A mesh head that reads the face: RoI Align of the face's box on the pyramid level whose anchors fit its
    size, ``num_convs`` 3x3 convs (ReLU; the last with stride 2) and a linear layer to ``num_coefficients``.

    With ``pixel_channels > 0`` it also reads the face's pixels: RoI Align of the box on the preprocessed
    image at 4x the pooled side, two 3x3 convs with stride 2 (ReLU) down to the pooled grid, whose
    ``pixel_channels`` maps join the pooled features before the convs. The detector's features are trained
    to find faces whatever their lighting, so they carry little of it; the pixels do (docs/training.md).

    The final layer is zero-initialised, so an untrained head gives exactly zero coefficients (the template
    face), like the per-anchor head. It runs on the boxes it is given only: the kept detections at inference,
    the faces of the pixel term in training.

    In eval mode with ``test_offset > 0`` each box is read four times (:meth:`test_boxes`: copies moved by
    ``test_offset`` of its side right, left, down and up) and the readings are averaged: the head's pose
    depends on where the box sits on the face, and readings placed symmetrically about a detection's box
    average part of its misplacement out. In training mode (the loss's own reads) one reading at the box.

    ``forward(features, image_ids, boxes, images=None)``: ``features`` one ``Tensor[N, C, H_l, W_l]`` per
    level (strides ``strides``), ``image_ids`` ``Tensor[K]`` int64, ``boxes`` ``Tensor[K, 4]`` x1 y1 x2 y2
    network-input pixels, ``images`` the preprocessed ``Tensor[N, 3, H, W]`` (needed with a pixel branch)
    -> ``Tensor[K, num_coefficients]``.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        strides: Sequence[int],
        anchor_sizes: Sequence[Sequence[int]],
        num_coefficients: int,
        pool_size: int,
        num_convs: int,
        pixel_channels: int = 0,
        test_offset: float = 0.0,
    ) -> None:
        super().__init__()
        if len(strides) != len(anchor_sizes):
            raise ValueError("strides and anchor_sizes need one entry per pyramid level")
        if not 0 <= test_offset < 0.5:
            raise ValueError("test_offset must be in [0, 0.5)")
        self.test_offset = float(test_offset)
        self.strides = tuple(strides)
        self.pool_size = pool_size
        self.register_buffer("boundaries", torch.tensor(level_boundaries(anchor_sizes), dtype=torch.float32), persistent=False)
        self.pixels: nn.Sequential | None = None
        if pixel_channels:
            self.pixels = nn.Sequential(
                Conv2dNormActivation(3, max(pixel_channels // 2, 1), kernel_size=3, stride=2, norm_layer=None, activation_layer=nn.ReLU),
                Conv2dNormActivation(max(pixel_channels // 2, 1), pixel_channels, kernel_size=3, stride=2, norm_layer=None, activation_layer=nn.ReLU),
            )
        read = in_channels + pixel_channels
        self.convs = nn.Sequential(*(
            Conv2dNormActivation(read if i == 0 else in_channels, in_channels, kernel_size=3, stride=2 if i == num_convs - 1 else 1,
                                 norm_layer=None, activation_layer=nn.ReLU)
            for i in range(num_convs)
        ))
        side = -(-pool_size // 2) if num_convs else pool_size
        self.output = nn.Linear((in_channels if num_convs else read) * side * side, num_coefficients)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    @property
    def pixel_size(self) -> int:
        """Side (pixels) of the face crops the pixel branch reads (0 without one)."""
        return 4 * self.pool_size if self.pixels is not None else 0

    def levels(self, boxes: Tensor) -> Tensor:
        """The pyramid level ``Tensor[K]`` (int64) each box is read on (see :func:`level_boundaries`)."""
        size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
        # a count of boundaries passed rather than bucketize: the same, and it exports to ONNX
        return (size[:, None] >= self.boundaries.to(size)).long().sum(dim=1)

    @staticmethod
    def _rois(image_ids: Tensor, boxes: Tensor) -> Tensor:
        return torch.cat([image_ids[:, None].to(boxes), boxes], dim=1).float()

    def pool(self, features: list[Tensor], image_ids: Tensor, boxes: Tensor) -> Tensor:
        """Each box's ``Tensor[K, C, pool_size, pool_size]`` RoI Align on its level."""
        rois = self._rois(image_ids, boxes)
        levels = self.levels(boxes)
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return self._pool_own_levels(features, rois, levels)
        pooled = None
        # Traced for ONNX: every level for every box, then each box's own, one fixed graph without a
        # data-dependent split; the extra bilinear samples cost little next to the convs at inference.
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            on_level = self._align(feature, rois, stride)
            pooled = on_level if pooled is None else torch.where((levels == level)[:, None, None, None], on_level, pooled)
        return pooled

    def _pool_own_levels(self, features: list[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """:meth:`pool` with each box read on its own level only: the same values, and in training a third of
        the RoI Align backward, which torchvision runs in one thread over every box it was given (the fixed
        graph's zero gradients included), about a fifth of a CPU training step."""
        pooled = rois.new_zeros((len(rois), features[0].shape[1], self.pool_size, self.pool_size))
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            on_level = (levels == level).nonzero().squeeze(1)
            if len(on_level):
                pooled = pooled.index_copy(0, on_level, self._align(feature, rois[on_level], stride))
        return pooled

    def _align(self, feature: Tensor, rois: Tensor, stride: int) -> Tensor:
        """RoI Align of ``rois`` ``Tensor[K, 5]`` (image index, x1 y1 x2 y2 input pixels) on one level."""
        return roi_align(feature.float(), rois, output_size=self.pool_size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)

    def pool_pixels(self, images: Tensor, image_ids: Tensor, boxes: Tensor) -> Tensor:
        """Each box's crop ``Tensor[K, 3, pixel_size, pixel_size]`` of the preprocessed ``images``
        ``Tensor[N, 3, H, W]`` (mean-subtracted BGR), divided by 255 so that the convs see values near 1."""
        crops = roi_align(images.float(), self._rois(image_ids, boxes), output_size=self.pixel_size, spatial_scale=1.0,
                          sampling_ratio=2, aligned=True)
        return crops / 255.0

    def test_boxes(self, boxes: Tensor) -> Tensor:
        """The boxes ``Tensor[4, K, 4]`` an eval-mode head reads ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2) at: each
        box moved by ``test_offset`` of its width to the right and to the left, then by ``test_offset`` of its
        height down and up (same size)."""
        d = self.test_offset
        moves = boxes.new_tensor([[d, 0.0], [-d, 0.0], [0.0, d], [0.0, -d]])  # fractions of width, height
        shifts = (moves[:, None] * (boxes[None, :, 2:] - boxes[None, :, :2])).repeat(1, 1, 2)
        return boxes[None] + shifts

    def forward(self, features: list[Tensor], image_ids: Tensor, boxes: Tensor, images: Tensor | None = None) -> Tensor:
        if self.training or self.test_offset == 0:
            return self.read(features, image_ids, boxes, images)
        reads = self.test_boxes(boxes)
        coefficients = self.read(features, image_ids.repeat(len(reads)), reads.flatten(0, 1), images)
        return coefficients.unflatten(0, (len(reads), -1)).mean(dim=0)

    def read(self, features: list[Tensor], image_ids: Tensor, boxes: Tensor, images: Tensor | None = None) -> Tensor:
        """One reading ``Tensor[K, num_coefficients]`` of the head at ``boxes`` (what :meth:`forward` gives in
        training mode)."""
        pixels = None
        if self.pixels is not None:
            if images is None:
                raise ValueError("this mesh head reads the face's pixels too: pass the preprocessed images")
            pixels = self.pool_pixels(images, image_ids, boxes)
        return self.from_pooled(self.pool(features, image_ids, boxes), pixels)

    def from_pooled(self, pooled: Tensor, pixels: Tensor | None = None) -> Tensor:
        """Coefficients ``Tensor[K, num_coefficients]`` from :meth:`pool`'s ``Tensor[K, C, pool_size, pool_size]``
        and, with a pixel branch, :meth:`pool_pixels`' crops (training on a frozen trunk pools once and runs
        only this)."""
        if self.pixels is not None:
            if pixels is None:
                raise ValueError("this mesh head reads the face's pixels too: pass pool_pixels' crops")
            pooled = torch.cat([pooled, self.pixels(standardise_crops(pixels))], dim=1)
        return self.output(self.convs(pooled).flatten(1))

    def outputs(self, features: list[Tensor], *, dense: bool = False, images: Tensor | None = None) -> RoIMeshCoefficients:
        """The lazy :class:`RoIMeshCoefficients` (there is no per-anchor form, dense or not)."""
        return RoIMeshCoefficients(self, features, images)


MeshHead = AnchorMeshHead | RoIMeshHead


class RetinaFaceHeads(nn.Module):
    """The four task heads sharing the SSH features.

    ``mesh_head`` builds the mesh head (default: the paper's :class:`AnchorMeshHead`); it is called after the
    other heads are made, so that the per-anchor head's random draws come in the order the released
    weights' untrained tensors were drawn in.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_levels: int,
        anchors_per_location: int,
        num_mesh_coefficients: int,
        mesh_head: Callable[[], MeshHead] | None = None,
    ):
        super().__init__()
        make = lambda k: PredictionHead(  # noqa: E731
            in_channels, num_levels=num_levels, anchors_per_location=anchors_per_location, values_per_anchor=k
        )
        self.classification = make(2)
        self.box = make(4)
        self.landmarks = make(10)
        if mesh_head is None:
            self.mesh: MeshHead = AnchorMeshHead(
                in_channels, num_levels=num_levels, anchors_per_location=anchors_per_location, num_coefficients=num_mesh_coefficients
            )
        else:
            self.mesh = mesh_head()

    def forward(self, features: list[Tensor], *, dense_mesh: bool = True, images: Tensor | None = None) -> HeadOutputs:
        """Raw outputs; ``images``, the preprocessed batch ``Tensor[N, 3, H, W]``, is what a RoI mesh head's
        pixel branch reads."""
        mesh = self.mesh.outputs(features, dense=dense_mesh, images=images)
        return HeadOutputs(self.classification(features), self.box(features), self.landmarks(features), mesh)


class FusedRetinaFaceHeads(nn.Module):
    """Inference form of :class:`RetinaFaceHeads`: score, box and landmark heads as one 1x1 conv per level.

    Each output channel is the same dot product as in the separate heads, so results agree up to float
    rounding; one wider conv per level replaces three narrow ones (fewer kernel launches and, in
    onnxruntime, fewer layout conversions). The returned ``class_logits`` / ``box_deltas`` /
    ``landmark_deltas`` are views into one ``Tensor[N, A, 16]``. The mesh head is kept as it is.
    """

    def __init__(self, heads: RetinaFaceHeads) -> None:
        super().__init__()
        parts = (heads.classification, heads.box, heads.landmarks)
        self.values_per_task = [part.values_per_anchor for part in parts]
        self.mesh = heads.mesh
        first = parts[0].convs[0]
        anchors_per_location = first.out_channels // parts[0].values_per_anchor
        self.detection = PredictionHead(
            first.in_channels,
            num_levels=len(parts[0].convs),
            anchors_per_location=anchors_per_location,
            values_per_anchor=sum(self.values_per_task),
        ).to(first.weight.device)
        for level, merged in enumerate(self.detection.convs):
            convs = [part.convs[level] for part in parts]
            # Output channels ordered anchor-major, then task, so that [N, H*W*S, 16] rows hold one anchor.
            weights = [conv.weight.unflatten(0, (anchors_per_location, -1)) for conv in convs]
            biases = [conv.bias.unflatten(0, (anchors_per_location, -1)) for conv in convs]
            with torch.no_grad():
                merged.weight.copy_(torch.cat(weights, dim=1).flatten(0, 1))
                merged.bias.copy_(torch.cat(biases, dim=1).flatten())

    def merged_outputs(self, features: list[Tensor]) -> Tensor:
        """``Tensor[N, A, 16]``: per anchor the 2 class logits, 4 box deltas and 10 landmark deltas."""
        return self.detection(features)

    def split(self, merged: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Views ``(class_logits, box_deltas, landmark_deltas)`` of a :meth:`merged_outputs` tensor."""
        class_logits, box_deltas, landmark_deltas = merged.split(self.values_per_task, dim=-1)
        return class_logits, box_deltas, landmark_deltas

    def forward(self, features: list[Tensor], *, dense_mesh: bool = True, images: Tensor | None = None) -> HeadOutputs:
        mesh = self.mesh.outputs(features, dense=dense_mesh, images=images)
        return HeadOutputs(*self.split(self.merged_outputs(features)), mesh)
