"""The mesh branch: 144 coefficients per face -> decoded coloured mesh -> rendering -> pixel loss."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_area, roi_align

from ..config import LossConfig
from .coefficients import MeshCoefficients, split_coefficients
from .decoder import DecodedMesh, MeshDecoder
from .hierarchy import face_edges
from .renderer import RenderedFaces, render, sanitize
from .template import FaceTemplate, load_template


def uniform_laplacian(num_vertices: int, edge_index: Tensor) -> Tensor:
    """Dense ``Tensor[V, V]`` uniform graph Laplacian ``I - D^-1 A`` (rows sum to zero)."""
    adjacency = torch.zeros(num_vertices, num_vertices)
    adjacency[edge_index[0], edge_index[1]] = 1.0
    return torch.eye(num_vertices) - adjacency / adjacency.sum(dim=1, keepdim=True).clamp(min=1)


def pyramid_l1(image: Tensor, target: Tensor, levels: int = 1) -> Tensor:
    """L1 between ``image`` and ``target`` ``Tensor[K, C, S, S]``, summed over channels and averaged over pixels
    and images, averaged over ``levels`` resolutions (full, then average-pooled by 2, 4, ...)."""
    total = (image - target).abs().sum(dim=1).mean()
    for level in range(1, levels):
        size = 2**level
        total = total + (F.avg_pool2d(image, size) - F.avg_pool2d(target, size)).abs().sum(dim=1).mean()
    return total / levels


class MeshBranch(nn.Module):
    """Decoder + renderer for the per-face mesh coefficients predicted by the detector heads.

    ``forward(coefficients, aspect=None)`` returns the decoded mesh and its rendering into the face's
    square crop. Non-finite coefficients are replaced (NaN -> 0, +-inf -> +-10) and counted in
    :attr:`sanitized_faces`, with a warning, instead of propagating NaN. For training the branch owns its
    self-supervised loss (``pixel_loss``, a :class:`MeshPixelLoss`; ``None`` for inference only), which
    :meth:`pixel_loss` evaluates.
    """

    def __init__(
        self,
        *,
        template: FaceTemplate | None = None,
        decoder: MeshDecoder | None = None,
        image_size: int = 112,
        pixel_loss: MeshPixelLoss | None = None,
    ) -> None:
        super().__init__()
        self.template = template or load_template()
        self.decoder = decoder or MeshDecoder(template=self.template)
        self.image_size = image_size
        self.pixel_criterion = pixel_loss
        self.register_buffer("render_faces", self.template.render_faces.clone(), persistent=False)
        self.sanitized_faces = 0

    def pixel_loss(
        self, coefficients: Tensor, images_rgb: Tensor, boxes: Tensor, image_index: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """This branch's self-supervised pixel loss (:class:`MeshPixelLoss`, given at construction) for
        ``coefficients`` ``Tensor[K, 144]`` of faces at ``boxes`` ``Tensor[K, 4]`` in images ``image_index``."""
        if self.pixel_criterion is None:
            raise RuntimeError("this mesh branch was built without a pixel loss")
        return self.pixel_criterion(self, coefficients, images_rgb, boxes, image_index, generator=generator)

    def pixel_faces(self, boxes: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Indices ``Tensor[k]`` of the faces at ``boxes`` ``Tensor[K, 4]`` that the pixel loss renders
        (:meth:`MeshPixelLoss.select`): drawing them before the head is read lets a head that runs per face
        (the RoI head) run on these only. :meth:`pixel_loss` on the selection draws nothing further."""
        if self.pixel_criterion is None:
            raise RuntimeError("this mesh branch was built without a pixel loss")
        return self.pixel_criterion.select(boxes, generator=generator)

    def landmark_distance(self, coefficients: Tensor, boxes: Tensor, landmarks: Tensor) -> Tensor:
        """``Tensor[K]``: mean distance between the mesh's five landmark vertices, placed in the image by
        ``coefficients`` ``Tensor[K, 144]`` for crops at ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2 pixels), and
        ``landmarks`` ``Tensor[K, 5, 2]`` (same pixels, detector order), in the crop's NDC units (a crop
        spans 2 in x and in y, so the figure does not depend on the face's size)."""
        vertices, _ = self.image_vertices(coefficients, boxes)
        projected = self.template.landmarks(vertices[..., :2])
        half_sizes = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp(min=1e-3)[:, None, :]
        return ((projected - landmarks) / half_sizes).norm(dim=-1).mean(dim=1)

    def clean(self, coefficients: Tensor) -> MeshCoefficients:
        cleaned, bad = sanitize(coefficients)
        if bad:
            self.sanitized_faces += bad
            warnings.warn(f"{bad} faces had non-finite mesh coefficients; replaced by finite values", RuntimeWarning, stacklevel=3)
        return split_coefficients(cleaned)

    def decode(self, coefficients: Tensor) -> DecodedMesh:
        return self.decoder(self.clean(coefficients).latent)

    def forward(
        self,
        coefficients: Tensor,
        aspect: Tensor | None = None,
        image_size: int | None = None,
        *,
        mesh: DecodedMesh | None = None,
    ) -> tuple[DecodedMesh, RenderedFaces]:
        """Decode ``coefficients`` ``Tensor[K, 144]`` (unless ``mesh``, their decoded mesh, is given) and render
        each face into a square ``image_size`` crop whose width/height is ``aspect`` ``Tensor[K]``."""
        parts = self.clean(coefficients)
        if mesh is None:
            mesh = self.decoder(parts.latent)
        rendered = render(
            mesh.vertices, mesh.colours, self.render_faces, parts.camera, parts.illumination,
            image_size=image_size or self.image_size, aspect=aspect,
        )
        return mesh, rendered

    def image_vertices(self, coefficients: Tensor, boxes: Tensor) -> tuple[Tensor, DecodedMesh]:
        """Decoded meshes placed in the image: ``Tensor[K, V, 3]`` (x, y in pixels; view depth), and the decoded
        meshes themselves (model space, colours), for faces whose crops are ``boxes`` ``Tensor[K, 4]``
        (x1 y1 x2 y2, pixels)."""
        parts = self.clean(coefficients)
        mesh = self.decoder(parts.latent)
        return place_in_boxes(mesh.vertices, parts.camera, boxes), mesh


def place_in_boxes(vertices: Tensor, camera: Tensor, boxes: Tensor) -> Tensor:
    """Model-space ``vertices`` ``Tensor[K, V, 3]`` seen by the renderer's ``camera`` ``Tensor[K, 7]`` (its
    parameters for a crop at each of ``boxes`` ``Tensor[K, 4]``, x1 y1 x2 y2 pixels), placed in the image:
    ``Tensor[K, V, 3]`` (x, y pixels; view depth)."""
    from .renderer import camera_from_params, project

    widths, heights = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3), (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    ndc = project(vertices, camera_from_params(camera, widths / heights))
    x = boxes[:, None, 0] + (1 - ndc[..., 0]) / 2 * widths[:, None]
    y = boxes[:, None, 1] + (1 - ndc[..., 1]) / 2 * heights[:, None]
    return torch.stack([x, y, ndc[..., 2]], dim=-1)


def placement_distance(vertices: Tensor, camera: Tensor, boxes: Tensor, true_vertices: Tensor) -> Tensor:
    """How far model-space ``vertices`` ``Tensor[K, V, 3]``, placed in the image by ``camera`` ``Tensor[K, 7]``
    at ``boxes`` ``Tensor[K, 4]`` (:func:`place_in_boxes`), lie from ``true_vertices`` ``Tensor[K, V, 2]``
    (x, y pixels, the same vertices where the face really is): the mean distance per face ``Tensor[K]``, in
    units of its box's side (the square root of its area), so faces of every size count alike. Pose,
    camera and shape together: a head that turns the face wrongly moves every vertex."""
    placed = place_in_boxes(vertices, camera, boxes)[..., :2]
    sides = box_area(boxes).clamp(min=1).sqrt()
    return (placed - true_vertices).norm(dim=-1).mean(dim=1) / sides


class MeshPixelLoss(nn.Module):
    """Self-supervised pixel loss of the RetinaFace paper, ``1/(W H) sum |R(D(P_ST), P_cam, P_ill) - I*|_1``.

    ``I*`` is the face crop at the ground-truth box resampled to ``crop_size`` (``roi_align``); the
    face is rendered into the same frame. Pixels the render does not cover show the crop itself
    (so they cost nothing): the face model only explains the face, not the background. At most
    ``max_faces`` faces per call are used (a random subset) to bound the cost. Two light regularisers,
    absent from the paper, stand in for the 3D supervision we do not have: ``latent_weight * mean(P_ST^2)``
    and ``smoothness_weight * mean(|L offsets|^2)`` (uniform Laplacian of the offsets from the decoder's base
    shape).

    Two further departures from the paper make pose learnable (measured in the README's training section):

    - ``levels`` > 1 averages the L1 over a pyramid (the composite and the crop average-pooled by 2, 4, ...):
      the full-resolution L1 barely changes when the face turns (hard rasterisation gives the silhouette
      no gradient), while coarse levels see where the face's features are;
    - ``box_weight`` > 0 adds ``box_weight * mean|extent - box|``: the projected mesh's extent (min/max of its
      vertices in NDC) against the crop's edges (the face box). Without it, covering less of the crop is free
      (uncovered pixels cost nothing), and distance and focal length get the largest gradients.
    """

    def __init__(
        self,
        *,
        template: FaceTemplate | None = None,
        crop_size: int = LossConfig.mesh_crop_size,
        max_faces: int = LossConfig.max_mesh_faces,
        latent_weight: float = LossConfig.mesh_latent_weight,
        smoothness_weight: float = LossConfig.mesh_smoothness_weight,
        levels: int = LossConfig.mesh_pixel_levels,
        box_weight: float = LossConfig.mesh_box_weight,
    ) -> None:
        super().__init__()
        if levels < 1 or crop_size % 2 ** (levels - 1):
            raise ValueError(f"crop_size {crop_size} must be divisible by 2^(levels - 1) = {2 ** (levels - 1)}")
        template = template or load_template()
        self.crop_size = crop_size
        self.levels = levels
        self.box_weight = box_weight
        self.max_faces = max_faces
        self.latent_weight = latent_weight
        self.smoothness_weight = smoothness_weight
        laplacian = uniform_laplacian(template.num_vertices, face_edges(template.faces))
        self.register_buffer("laplacian", laplacian, persistent=False)

    def select(self, boxes: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Indices ``Tensor[k]`` of the faces at ``boxes`` ``Tensor[K, 4]`` the loss uses: those with a finite
        box at least 1 px wide and high, at most ``max_faces`` of them, a random subset drawn from
        ``generator`` (a CPU generator; default: the global CPU one) when there are more. Selecting a
        selection again returns it whole and draws nothing."""
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        usable = torch.isfinite(boxes).all(dim=1) & (widths >= 1) & (heights >= 1)
        picked = torch.nonzero(usable).squeeze(1)
        if picked.numel() > self.max_faces:
            order = torch.randperm(picked.numel(), generator=generator).to(picked.device)
            picked = picked[order[: self.max_faces]]
        return picked

    def forward(
        self,
        branch: MeshBranch,
        coefficients: Tensor,
        images_rgb: Tensor,
        boxes: Tensor,
        image_index: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Pixel loss of ``branch`` for ``coefficients`` ``Tensor[K, 144]`` of positive anchors, ``images_rgb``
        ``Tensor[N, 3, H, W]`` in [0, 1], their ground-truth ``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2, pixels
        of ``images_rgb``) and ``image_index`` ``Tensor[K]``. Returns the scalar loss (0 when ``K == 0``).
        The faces used are :meth:`select`'s."""
        picked = self.select(boxes, generator=generator)
        if picked.numel() == 0:
            return coefficients.sum() * 0.0
        boxes, coefficients = boxes[picked].float(), coefficients[picked].float()
        rois = torch.cat([image_index[picked, None].to(boxes), boxes], dim=1)
        crops = roi_align(images_rgb.float(), rois, output_size=self.crop_size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        mesh, rendered = branch(coefficients, aspect=(boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]), image_size=self.crop_size)
        composite = rendered.mask * rendered.image + (1 - rendered.mask) * crops
        pixel = pyramid_l1(composite, crops, self.levels)
        if self.box_weight > 0:
            ndc = rendered.ndc[..., :2]
            extent = torch.stack([ndc.amin(dim=1), ndc.amax(dim=1)], dim=1)  # [K, 2 (min, max), 2 (x, y)]
            edges = torch.tensor([-1.0, 1.0], device=ndc.device)[None, :, None]
            pixel = pixel + self.box_weight * (extent - edges).abs().mean()
        latent = split_coefficients(coefficients).latent
        # offsets from the decoder's own base shape (the template, or the prior's mean face for the
        # prior-trained decoder): the mean face itself is not penalised
        offsets = mesh.vertices - branch.decoder.template_vertices.to(mesh.vertices)
        smooth = (self.laplacian @ offsets).square().sum(-1).mean()
        return pixel + self.latent_weight * latent.square().mean() + self.smoothness_weight * smooth
