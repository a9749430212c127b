"""Multi-task detection loss over a batch: classification with hard negative mining, box and landmark
regression, and the mesh branch's pixel loss."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from .heads import HeadOutputs, RoIMeshCoefficients, mesh_coefficients_at
from .targets import AnchorTargets, TargetAssigner

if TYPE_CHECKING:
    from ..mesh.branch import MeshBranch
    from ..mesh.prior import FacePrior


def hard_negatives(per_anchor_loss: Tensor, negative: Tensor, count: Tensor) -> Tensor:
    """Online hard example mining per image: ``Tensor[N, A]`` bool marking, in each row, the ``count[n]``
    anchors of ``negative`` ``Tensor[N, A]`` with the highest ``per_anchor_loss`` ``Tensor[N, A]`` (all rows at
    once: each anchor's rank within its row comes from one sort)."""
    mining = per_anchor_loss.detach().masked_fill(~negative, -1.0)  # the ranking carries no gradient
    order = mining.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank < count[:, None]


class MultiTaskLoss(nn.Module):
    """``L = cls_weight L_cls + box_weight L_box + landmark_weight L_pts + pixel_weight L_pixel``
    (see :class:`~retinaface.config.LossConfig`).

    ``forward`` returns the weighted terms as a dict ``{"loss_cls", "loss_box", "loss_landmarks", "loss_pixel",
    "loss_mesh_landmarks", "loss_mesh_truth"}`` (``loss_pixel`` when ``pixel_weight > 0`` and images and a
    mesh branch are passed; ``loss_mesh_landmarks``, our addition, when ``mesh_landmark_weight > 0`` and a
    mesh branch is passed; ``loss_mesh_truth``, our addition, when ``mesh_truth_weight > 0`` and a target
    carries ``mesh_truth``), so the training objective is the sum of its values. Targets come from the ``assigner``
    (:class:`~retinaface.targets.TargetAssigner`; per image ``boxes``, optional ``landmarks`` and
    ``landmarks_valid``). Per image, negatives are the ``negative_ratio x num_positives`` background anchors
    with the highest classification loss, at least ``min_negatives``. Classification and box terms are
    normalised by the number of positives in the batch, the landmark term by the number of positives whose
    face has landmarks. ``face_prior`` (:class:`~retinaface.mesh.prior.FacePrior`) gives the shapes the
    truth term's vertex distance places; it is needed when ``mesh_truth_vertex_weight > 0``.
    """

    def __init__(
        self,
        *,
        assigner: TargetAssigner,
        negative_ratio: float,
        min_negatives: int,
        cls_weight: float,
        box_weight: float,
        landmark_weight: float,
        pixel_weight: float,
        mesh_landmark_weight: float,
        mesh_truth_weight: float,
        mesh_truth_light_weight: float,
        mesh_truth_shape_weight: float,
        mesh_truth_reads: int,
        mesh_truth_jitter: float,
        mesh_truth_vertex_weight: float = 0.0,
        face_prior: FacePrior | None = None,
    ) -> None:
        super().__init__()
        self.assigner = assigner
        self.negative_ratio = negative_ratio
        self.min_negatives = min_negatives
        self.cls_weight = cls_weight
        self.box_weight = box_weight
        self.landmark_weight = landmark_weight
        self.pixel_weight = pixel_weight
        self.mesh_landmark_weight = mesh_landmark_weight
        self.mesh_truth_weight = mesh_truth_weight
        self.mesh_truth_light_weight = mesh_truth_light_weight
        self.mesh_truth_shape_weight = mesh_truth_shape_weight
        self.mesh_truth_reads = mesh_truth_reads
        self.mesh_truth_jitter = mesh_truth_jitter
        if mesh_truth_vertex_weight > 0 and face_prior is None:
            raise ValueError("the vertex placement distance needs the face prior (face_prior)")
        self.mesh_truth_vertex_weight = mesh_truth_vertex_weight
        self.face_prior = face_prior

    def forward(
        self,
        outputs: HeadOutputs,
        anchors: Tensor,
        targets: list[dict[str, Tensor]],
        *,
        images_rgb: Tensor | None = None,
        mesh_branch: MeshBranch | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``images_rgb`` ``Tensor[N, 3, H, W]`` in [0, 1] (the network input, same pixel frame as the targets)
        and ``mesh_branch`` are needed for the pixel term; ``generator`` draws its subset of faces."""
        assigned = self.assigner(anchors, targets)
        losses = self.detection_losses(outputs, assigned)
        if self.pixel_weight > 0 and mesh_branch is not None and images_rgb is not None:
            losses["loss_pixel"] = self.pixel_weight * self.pixel_term(
                outputs, anchors, assigned, images_rgb, mesh_branch, generator, pixel_term_faces(targets))
        if self.mesh_landmark_weight > 0 and mesh_branch is not None:
            losses["loss_mesh_landmarks"] = self.mesh_landmark_weight * self.mesh_landmark_term(outputs, anchors, assigned, targets, mesh_branch)
        if self.mesh_truth_weight > 0 and any("mesh_truth" in target for target in targets):
            distances = self.mesh_truth_term(
                outputs, anchors, assigned, targets, reads=self.mesh_truth_reads, jitter=self.mesh_truth_jitter, generator=generator,
                face_prior=self.face_prior if self.mesh_truth_vertex_weight > 0 else None)
            losses["loss_mesh_truth"] = self.mesh_truth_weight * (
                distances["rotation"] + self.mesh_truth_light_weight * distances["light"]
                + self.mesh_truth_shape_weight * distances["shape"]
                + self.mesh_truth_vertex_weight * distances.get("vertex", 0.0))
        return losses

    @staticmethod
    def mesh_truth_term(
        outputs: HeadOutputs, anchors: Tensor, assigned: AnchorTargets, targets: list[dict[str, Tensor]], *,
        reads: int, jitter: float, generator: torch.Generator | None = None, face_prior: FacePrior | None = None,
    ) -> dict[str, Tensor]:
        """:func:`~retinaface.mesh.coefficients.truth_distances` (unweighted) of the mesh coefficients at each
        face's best anchor (at its box for the RoI head) from the face's ``mesh_truth`` ``Tensor[G, 144]``, for
        the faces of targets that carry it. Faces of a flipped image (``mirrored``; their truth was mirrored
        with the image) count for the rotation and light but not the shape: faces are not left-right
        symmetric, so the mirror image's shape is not the truth's latent. Faces cut by a crop count: their
        rotation, light and shape are still the rendered ones. The RoI head is read ``reads`` times per face,
        at its box and at ``reads - 1`` copies jittered by up to ``jitter`` of the side (drawn from
        ``generator``; :func:`jittered_boxes`). With ``face_prior``, also ``vertex``: the mean
        :func:`~retinaface.mesh.branch.placement_distance` of the upright faces whose targets carry their
        ``mesh_placement`` (0 when there are none), each read's mesh placed at the box it was read at."""
        from ..mesh.coefficients import NUM_MESH_COEFFICIENTS, truth_distances

        image_ids, anchor_ids = face_anchors(assigned, anchors)
        has_truth = [torch.full((len(t["boxes"]),), "mesh_truth" in t, dtype=torch.bool) for t in targets]
        keep = _per_face(has_truth, assigned, image_ids, anchor_ids).bool()
        image_ids, anchor_ids = image_ids[keep], anchor_ids[keep]
        truths = [t["mesh_truth"].float().cpu() if "mesh_truth" in t else torch.zeros(len(t["boxes"]), NUM_MESH_COEFFICIENTS) for t in targets]
        truth = _per_face(truths, assigned, image_ids, anchor_ids)
        boxes = assigned.matched_boxes[image_ids, anchor_ids]
        if isinstance(outputs.mesh_coefficients, RoIMeshCoefficients) and reads > 1:
            image_ids, anchor_ids, truth = image_ids.repeat(reads), anchor_ids.repeat(reads), truth.repeat(reads, 1)
            boxes = torch.cat([boxes, jittered_boxes(boxes.repeat(reads - 1, 1), jitter, generator)])
        coefficients = mesh_coefficients_at(outputs.mesh_coefficients, image_ids, anchor_ids, boxes).float()
        upright = torch.tensor([not bool(t.get("mirrored", False)) for t in targets], device=image_ids.device)[image_ids]
        distances = truth_distances(coefficients, truth, shape_rows=upright)
        if face_prior is not None:
            distances["vertex"] = _vertex_distance(face_prior, coefficients, boxes, truth, targets, assigned, image_ids, anchor_ids, upright)
        return distances

    @staticmethod
    def mesh_landmark_term(
        outputs: HeadOutputs, anchors: Tensor, assigned: AnchorTargets, targets: list[dict[str, Tensor]], mesh_branch: MeshBranch
    ) -> Tensor:
        """Mean :meth:`MeshBranch.landmark_distance` of the mesh coefficients of faces that have landmarks and
        were not cut by an augmentation crop (``clipped``): the head's camera must put the mesh's eyes, nose
        and mouth corners where the annotation has them. The per-anchor head is read at every positive
        anchor of those faces, not one per face as in the pixel term: no rendering is needed, and the
        detector reads it at whichever anchor its kept detection comes from. The RoI head reads the face's
        box, the same for all its anchors, so it runs once per face (at its best anchor's row). Mirrored
        images count (the face's geometry stays a face's)."""
        mesh = outputs.mesh_coefficients
        if isinstance(mesh, RoIMeshCoefficients):
            image_ids, anchor_ids = face_anchors(assigned, anchors)
            with_points = assigned.landmarks_valid[image_ids, anchor_ids]
            image_ids, anchor_ids = image_ids[with_points], anchor_ids[with_points]
        else:
            image_ids, anchor_ids = torch.nonzero(assigned.landmarks_valid, as_tuple=True)
        keep = _per_face([~_clipped(t) for t in targets], assigned, image_ids, anchor_ids).bool()
        image_ids, anchor_ids = image_ids[keep], anchor_ids[keep]
        boxes = assigned.matched_boxes[image_ids, anchor_ids]
        unused = _every_parameter(mesh_branch)
        if image_ids.numel() == 0:
            return mesh_coefficients_at(mesh, image_ids, anchor_ids, boxes).sum() * 0.0 + unused
        points = [t.get("landmarks", torch.zeros(t["boxes"].shape[0], 5, 2)).float().cpu().flatten(1) for t in targets]
        landmarks = _per_face(points, assigned, image_ids, anchor_ids).view(-1, 5, 2)
        coefficients = mesh_coefficients_at(mesh, image_ids, anchor_ids, boxes).float()
        distance = mesh_branch.landmark_distance(coefficients, boxes, landmarks)
        return distance.mean() + unused

    def detection_losses(self, outputs: HeadOutputs, assigned: AnchorTargets) -> dict[str, Tensor]:
        """Weighted classification, box and landmark terms over the whole batch."""
        positive, negative = assigned.positive, assigned.negative
        logits = outputs.class_logits.float()
        per_anchor_cls = F.cross_entropy(logits.flatten(0, 1), positive.long().flatten(), reduction="none").view(positive.shape)
        num_pos = positive.sum(dim=1)
        wanted = (self.negative_ratio * num_pos).long().clamp(min=self.min_negatives)
        hard = hard_negatives(per_anchor_cls, negative, torch.minimum(wanted, negative.sum(dim=1)))
        total_pos = max(int(num_pos.sum()), 1)
        cls_loss = per_anchor_cls[positive | hard].sum() / total_pos
        box_loss = F.smooth_l1_loss(outputs.box_deltas[positive].float(), assigned.box_targets[positive], reduction="sum") / total_pos
        with_points = assigned.landmarks_valid
        landmark_loss = F.smooth_l1_loss(
            outputs.landmark_deltas[with_points].float(), assigned.landmark_targets[with_points], reduction="sum"
        ) / max(int(with_points.sum()), 1)
        # Every head takes part in the graph even when a term is empty, so DDP sees each parameter used.
        mesh = outputs.mesh_coefficients
        mesh_terms = (mesh,) if isinstance(mesh, Tensor) else mesh.dependencies()
        unused = outputs.landmark_deltas.sum() * 0.0 + sum(t.sum() * 0.0 for t in mesh_terms)
        return {
            "loss_cls": self.cls_weight * cls_loss,
            "loss_box": self.box_weight * box_loss,
            "loss_landmarks": self.landmark_weight * landmark_loss + unused,
        }

    @staticmethod
    def pixel_term(
        outputs: HeadOutputs,
        anchors: Tensor,
        assigned: AnchorTargets,
        images_rgb: Tensor,
        mesh_branch: MeshBranch,
        generator: torch.Generator | None,
        faces_used: list[Tensor] | None = None,
    ) -> Tensor:
        """The mesh branch's (unweighted) pixel loss at each face's best positive anchor (highest IoU with its
        box), at the faces' boxes, for the faces where ``faces_used`` (per image ``Tensor[G]`` bool, see
        :func:`pixel_term_faces`; default: all). One per face, so the branch's cap (``max_faces``) counts
        faces: a large face has dozens of positive anchors and would otherwise take most of the sampled places.
        The faces are drawn first (:meth:`MeshBranch.pixel_faces`) and the head read for those only: the RoI
        head runs on at most ``max_faces`` boxes per step, the boxes the pixel term renders into."""
        image_ids, anchor_ids = face_anchors(assigned, anchors)
        if faces_used is not None:
            keep = _per_face(faces_used, assigned, image_ids, anchor_ids).bool()
            image_ids, anchor_ids = image_ids[keep], anchor_ids[keep]
        boxes = assigned.matched_boxes[image_ids, anchor_ids]
        picked = mesh_branch.pixel_faces(boxes, generator=generator)
        image_ids, anchor_ids, boxes = image_ids[picked], anchor_ids[picked], boxes[picked]
        coefficients = mesh_coefficients_at(outputs.mesh_coefficients, image_ids, anchor_ids, boxes)
        pixel = mesh_branch.pixel_loss(coefficients, images_rgb, boxes, image_ids, generator=generator)
        return pixel + _every_parameter(mesh_branch)


def jittered_boxes(boxes: Tensor, jitter: float, generator: torch.Generator | None = None) -> Tensor:
    """``boxes`` ``Tensor[K, 4]`` (x1 y1 x2 y2) each moved by up to ``jitter`` of its width and height and
    scaled by a factor in ``[1 - jitter, 1 + jitter]`` (uniform draws from ``generator``, on the CPU)."""
    draws = (torch.rand(len(boxes), 4, generator=generator) * 2 - 1).to(boxes) * jitter
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    centre = centre + draws[:, :2] * size
    size = size * (1 + draws[:, 2:])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def _vertex_distance(
    prior: FacePrior, coefficients: Tensor, boxes: Tensor, truth: Tensor, targets: list[dict[str, Tensor]],
    assigned: AnchorTargets, image_ids: Tensor, anchor_ids: Tensor, upright: Tensor,
) -> Tensor:
    """The ``vertex`` distance of :meth:`MultiTaskLoss.mesh_truth_term` for its reads (``coefficients``
    ``Tensor[R, 144]`` read at ``boxes`` ``Tensor[R, 4]``, the faces' ``truth`` ``Tensor[R, 144]``): the true
    shape (the prior's linear shape of the true latent, which the prior decoder reproduces; no graph
    convolution runs) placed by the head's camera at the read box against the same shape placed by the true
    camera in the render square. The head's own shape is left out: with it, the latent learnt to make up for
    placement errors and ended farther from the true shapes than the mean face (docs/training.md)."""
    from ..mesh.branch import place_in_boxes, placement_distance
    from ..mesh.coefficients import split_coefficients

    squares = [t["mesh_placement"].float().cpu() if "mesh_placement" in t else torch.full((len(t["boxes"]), 4), math.nan) for t in targets]
    placement = _per_face(squares, assigned, image_ids, anchor_ids)
    rows = upright & torch.isfinite(placement).all(dim=1)
    if not bool(rows.any()):
        return coefficients.sum() * 0.0
    weights = prior.num_coefficients
    mine, true = split_coefficients(coefficients[rows]), split_coefficients(truth[rows])
    with torch.no_grad():
        shapes = prior.shapes(true.latent[:, :weights])
        true_vertices = place_in_boxes(shapes, true.camera, placement[rows])[..., :2]
    return placement_distance(shapes, mine.camera, boxes[rows], true_vertices).mean()


def _per_face(values: list[Tensor], assigned: AnchorTargets, image_ids: Tensor, anchor_ids: Tensor) -> Tensor:
    """Each anchor's row of a per-face quantity: ``values`` holds per image ``Tensor[G, ...]`` (one row per
    ground-truth face); returns ``Tensor[K, ...]`` for the positive anchors ``(image_ids, anchor_ids)``."""
    device = image_ids.device
    offsets = torch.tensor([0] + [len(v) for v in values], device=device).cumsum(0)
    rows = offsets[image_ids] + assigned.matched_faces[image_ids, anchor_ids]
    return torch.cat(list(values)).to(device)[rows]


def pixel_term_faces(targets: list[dict[str, Tensor]]) -> list[Tensor]:
    """Per image, ``Tensor[G]`` bool: the faces the pixel term may use. Left out: every face of a horizontally
    flipped image (``mirrored``: the template's colours, from one photo with its lighting, are not left-right
    symmetric, so a mirrored face is not a pose of the model; with flips in, the head did not learn rotation)
    and faces cut by an augmentation crop (``clipped``: their box no longer spans the face, which the render
    is compared with and the box term ties the mesh to). README, training."""
    return [~_clipped(target) & (not bool(target.get("mirrored", False))) for target in targets]


def _clipped(target: dict[str, Tensor]) -> Tensor:
    """``Tensor[G]`` bool (CPU): the target's faces cut by an augmentation crop (none when not marked)."""
    return target.get("clipped", torch.zeros(target["boxes"].shape[0], dtype=torch.bool)).bool().cpu()


def _every_parameter(module: nn.Module) -> Tensor:
    """A zero that depends on every parameter of ``module``: added to a term, it keeps each parameter in the
    graph even when no face feeds the term (DDP expects every parameter to get a gradient)."""
    return sum(p.sum() * 0.0 for p in module.parameters())


def face_anchors(assigned: AnchorTargets, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """The best positive anchor of every ground-truth face: ``(image_ids, anchor_ids)``, ``Tensor[F]`` each,
    ordered by image, then face. Among a face's positive anchors (``anchors`` ``Tensor[A, 4]`` cx cy w h) the
    one with the highest IoU with the box is kept (the lowest index on ties): the anchor the head is read at
    when the face is detected best."""
    image_ids, anchor_ids = torch.nonzero(assigned.positive, as_tuple=True)
    if image_ids.numel() == 0:
        return image_ids, anchor_ids
    boxes = assigned.matched_boxes[image_ids, anchor_ids]
    keys = torch.stack([image_ids, assigned.matched_faces[image_ids, anchor_ids]], dim=1)
    _, face = torch.unique(keys, dim=0, return_inverse=True)
    anchor_boxes = box_convert(anchors[anchor_ids], "cxcywh", "xyxy").to(boxes)
    overlap = _paired_iou(anchor_boxes, boxes)
    best = torch.full((int(face.max()) + 1,), -1.0, device=boxes.device).scatter_reduce(0, face, overlap, reduce="amax")
    chosen = overlap == best[face]
    # one per face even on ties: the first chosen anchor of each face
    first = torch.full_like(best, image_ids.numel(), dtype=torch.long).scatter_reduce(
        0, face[chosen], torch.nonzero(chosen).squeeze(1), reduce="amin"
    )
    return image_ids[first], anchor_ids[first]


def _paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes ``a[i]`` and ``b[i]`` (x1 y1 x2 y2) -> ``Tensor[K]``."""
    low, high = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (high - low).clamp(min=0).prod(dim=1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(dim=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)
