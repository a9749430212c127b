"""How well the mesh coefficients head recovers known render parameters (synthetic faces).

The synthetic generator (:mod:`retinaface.datasets.synthetic`) writes, for every face it pastes, the 144
coefficients it was rendered from (``render_params.json``), and, for sets rendered with the prior-trained
decoder, the face's shape truth (the prior's identity and expression weights). Measured per face:

- head rotation: the camera's rotation, ``so3_exp_map((pi / 2) tanh(r))`` (see :mod:`retinaface.mesh.renderer`);
  the error is the geodesic angle of ``R_pred^T R_true``;
- light direction: the point light's location in template space seen from the face centre (the origin);
  the error is the angle between the two unit vectors;
- shape (sets with shape truth): the mean distance between the vertices the head's latent decodes to (the
  model's own decoder) and the true face (its latent decoded by the prior-trained decoder, which is what
  was rendered), both in the face's own frame without pose, in % of the face height (the prior mean's,
  chin to forehead).

Plus the pixel L1 of the predicted render against the image crop (RGB in [0, 1], summed over channels,
averaged over the pixels the render covers). Each is reported next to the all-zero coefficients, which is
what an untrained head predicts (for the shape: the model decoder's base face, with the prior-trained
decoder the prior's mean face). Detections are matched one-to-one to ground-truth faces by IoU
(Hungarian assignment, IoU >= ``iou_threshold``); :func:`evaluate_at_boxes` skips detection and reads the
head at each face's true box (the per-anchor head at the box's best anchor, the one the training loss
supervises; the RoI head on the box itself), which measures the head alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou, roi_align

from ..datasets.synthetic import load_render_params
from ..mesh.coefficients import LATENT_DIM
from ..utils.rotations import rotation_error_degrees

if TYPE_CHECKING:
    from ..model.retinaface import RetinaFace


def direction_error_degrees(direction_a: Tensor, direction_b: Tensor) -> Tensor:
    """Angle in degrees between vectors ``Tensor[K, 3]`` and ``Tensor[K, 3]`` (any length) -> ``Tensor[K]``."""
    cross = torch.linalg.cross(direction_a, direction_b, dim=-1).norm(dim=-1)
    dot = (direction_a * direction_b).sum(-1)
    return torch.rad2deg(torch.atan2(cross, dot))


def head_rotations(coefficients: Tensor) -> Tensor:
    """Face rotations ``Tensor[K, 3, 3]`` encoded in mesh coefficients ``Tensor[K, 144]``."""
    from ..mesh.branch import split_coefficients
    from ..mesh.renderer import face_rotation

    return face_rotation(split_coefficients(coefficients).camera)


def light_directions(coefficients: Tensor) -> Tensor:
    """Point-light locations ``Tensor[K, 3]`` (template space, seen from the face centre) of ``Tensor[K, 144]``."""
    from ..mesh.branch import split_coefficients
    from ..mesh.renderer import lights_from_params

    return lights_from_params(split_coefficients(coefficients).illumination).location


def match_boxes(predicted: Tensor, truth: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """One-to-one matching of ``predicted`` ``Tensor[P, 4]`` to ``truth`` ``Tensor[G, 4]`` (x1 y1 x2 y2) that
    maximises the summed IoU (Hungarian); pairs below ``iou_threshold`` are dropped.

    Returns ``(predicted_index, truth_index)``, both ``Tensor[M]`` int64, ordered by truth index.
    """
    from scipy.optimize import linear_sum_assignment

    empty = torch.zeros(0, dtype=torch.long)
    if len(predicted) == 0 or len(truth) == 0:
        return empty, empty
    iou = box_iou(predicted.double().cpu(), truth.double().cpu()).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = iou[rows, cols] >= iou_threshold
    rows, cols = rows[keep], cols[keep]
    order = np.argsort(cols, kind="stable")
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)


@dataclass
class MeshHeadErrors:
    """Per matched face (``Tensor[M]`` each): errors of the head and of the zero-coefficient baseline."""

    faces: int = 0
    """ground-truth faces seen"""
    rotation: list[float] = field(default_factory=list)
    rotation_baseline: list[float] = field(default_factory=list)
    light: list[float] = field(default_factory=list)
    light_baseline: list[float] = field(default_factory=list)
    pixel_l1: list[float] = field(default_factory=list)
    pixel_l1_baseline: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    """fraction of the crop the render covers (uncovered pixels cost nothing in the training pixel term)"""
    coverage_baseline: list[float] = field(default_factory=list)
    pixel_l1_oracle: list[float] = field(default_factory=list)
    """the pixel L1 of the true camera and light with a zero latent: about the lowest a head can reach with
    the decoder's mean face (what is left is the face's own shape and texture, JPEG and edges)"""
    shape_truth: bool = False
    """whether the split carries shape truth (then :meth:`summary` reports the shape errors)"""
    shape: list[float] = field(default_factory=list)
    """vertex error of the head's decoded shape against the true shape, % of the face height"""
    shape_baseline: list[float] = field(default_factory=list)

    def extend(self, other: "MeshHeadErrors") -> None:
        self.faces += other.faces
        for name in ("rotation", "rotation_baseline", "light", "light_baseline", "pixel_l1", "pixel_l1_baseline", "coverage", "coverage_baseline",
                     "pixel_l1_oracle", "shape", "shape_baseline"):
            getattr(self, name).extend(getattr(other, name))

    def summary(self) -> dict[str, float]:
        """Medians (degrees; pixel L1 per covered pixel, RGB summed; shape in % of the face height, on sets
        with shape truth) and the matched count."""
        def median(values: list[float]) -> float:
            return float(np.median(values)) if values else math.nan

        shape = {"mesh_shape_pct": median(self.shape), "mesh_shape_pct_zero": median(self.shape_baseline)} if self.shape_truth else {}
        return {
            "mesh_faces": self.faces,
            "mesh_matched": len(self.rotation),
            "mesh_rotation_deg": median(self.rotation),
            "mesh_rotation_deg_zero": median(self.rotation_baseline),
            "mesh_light_deg": median(self.light),
            "mesh_light_deg_zero": median(self.light_baseline),
            "mesh_pixel_l1": median(self.pixel_l1),
            "mesh_pixel_l1_zero": median(self.pixel_l1_baseline),
            "mesh_pixel_l1_oracle": median(self.pixel_l1_oracle),
            "mesh_coverage": median(self.coverage),
            "mesh_coverage_zero": median(self.coverage_baseline),
            **shape,
        }


@lru_cache(maxsize=1)
def _truth_decoder():
    """The decoder the synthetic faces were rendered with (pre-trained on the face prior), for their truth."""
    from ..mesh.decoder import MeshDecoder, load_prior_decoder

    return load_prior_decoder(MeshDecoder()).eval()


@lru_cache(maxsize=1)
def face_height() -> float:
    """The face height shapes are measured in: the prior mean's, chin to forehead (template units)."""
    from ..mesh.prior import load_prior

    mean = load_prior().mean
    return float(mean[:, 1].max() - mean[:, 1].min())


@torch.no_grad()
def true_shapes(truth: Tensor) -> Tensor:
    """Vertices ``Tensor[K, V, 3]`` (the face's own frame, no pose) of synthetic faces whose rendered
    coefficients are ``truth`` ``Tensor[K, 144]``: their latent through the prior-trained decoder."""
    return _truth_decoder()(truth[:, :LATENT_DIM].float().cpu()).vertices


def vertex_error_percent(predicted: Tensor, truth: Tensor) -> Tensor:
    """Mean vertex distance ``Tensor[K]`` between shapes ``Tensor[K, V, 3]`` in % of :func:`face_height`."""
    return 100.0 * (predicted - truth).norm(dim=-1).mean(dim=-1) / face_height()


def face_errors(
    model: RetinaFace, image_rgb: Tensor, boxes: Tensor, predicted: Tensor, truth: Tensor, *, crop_size: int = 112,
    shape_truth: bool = False,
) -> MeshHeadErrors:
    """Errors for ``K`` faces of one image: ``image_rgb`` ``Tensor[3, H, W]`` in [0, 1], ``boxes``
    ``Tensor[K, 4]`` (the crops the coefficients refer to, x1 y1 x2 y2 pixels), ``predicted`` and ``truth``
    mesh coefficients ``Tensor[K, 144]``. ``shape_truth``: ``truth``'s latent is the prior decoder's (a set
    rendered with it), so the shape is scored too (needs the model's mesh branch)."""
    errors = MeshHeadErrors(shape_truth=shape_truth)
    if len(boxes) == 0:
        return errors
    predicted, truth = predicted.float().cpu(), truth.float().cpu()
    zero = torch.zeros_like(predicted)
    true_rotation, true_light = head_rotations(truth), light_directions(truth)
    errors.rotation = rotation_error_degrees(head_rotations(predicted), true_rotation).tolist()
    errors.rotation_baseline = rotation_error_degrees(head_rotations(zero), true_rotation).tolist()
    errors.light = direction_error_degrees(light_directions(predicted), true_light).tolist()
    errors.light_baseline = direction_error_degrees(light_directions(zero), true_light).tolist()
    if shape_truth and model.mesh_branch is not None:
        with torch.no_grad():
            device = next(model.mesh_branch.parameters()).device
            decoded = model.mesh_branch.decode(torch.cat([predicted, zero]).to(device)).vertices.cpu()
        true_vertices = true_shapes(truth)
        errors.shape = vertex_error_percent(decoded[: len(predicted)], true_vertices).tolist()
        errors.shape_baseline = vertex_error_percent(decoded[len(predicted) :], true_vertices).tolist()
    if model.mesh_branch is not None:
        branch = model.mesh_branch
        device = next(branch.parameters()).device
        boxes = boxes.float().to(device)
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)
        crops = roi_align(image_rgb[None].float().to(device), rois, output_size=crop_size, sampling_ratio=2, aligned=True)
        aspect = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3) / (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
        oracle = truth.clone()
        oracle[:, :LATENT_DIM] = 0
        for coefficients, target, coverage in (
            (predicted, errors.pixel_l1, errors.coverage), (zero, errors.pixel_l1_baseline, errors.coverage_baseline),
            (oracle, errors.pixel_l1_oracle, []),
        ):
            _, rendered = branch(coefficients.to(device), aspect=aspect, image_size=crop_size)
            covered = rendered.mask.sum(dim=(1, 2, 3))
            l1 = (rendered.mask * (rendered.image - crops)).abs().sum(dim=(1, 2, 3)) / covered.clamp(min=1)
            target.extend(l1.tolist())
            coverage.extend((covered / crop_size**2).tolist())
    return errors


def _read(images_root: Path, relative: str) -> tuple[Tensor, Tensor]:
    """BGR uint8 ``Tensor[3, H, W]`` (what the model takes) and RGB float ``Tensor[3, H, W]`` in [0, 1]."""
    import cv2

    image = cv2.imread(str(images_root / relative), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {images_root / relative}")
    bgr = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    return bgr, bgr.flip(0).float() / 255.0


def _faces(records: list[dict[str, Any]]) -> tuple[Tensor, Tensor]:
    boxes = torch.tensor([r["box"] for r in records], dtype=torch.float32).reshape(-1, 4)
    coefficients = torch.tensor([r["coefficients"] for r in records], dtype=torch.float32).reshape(-1, 144)
    return boxes, coefficients


def _evaluate_split(model: RetinaFace, split_dir: str | Path, max_images: int | None, crop_size: int, read_head) -> MeshHeadErrors:
    """The loop both evaluations share: every image of the split through ``read_head(bgr, truth_boxes,
    truth, device) -> (boxes, coefficients, truth)`` (the faces to score: crop boxes, the head's
    coefficients and their true parameters), scored by :func:`face_errors`, with ``model`` in eval mode."""
    split_dir = Path(split_dir)
    params = load_render_params(split_dir / "render_params.json")
    records = [record for faces in list(params.values())[:max_images] for record in faces]
    shape_truth = bool(records) and all("identity" in record for record in records)  # sets rendered with the prior decoder
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    errors = MeshHeadErrors(shape_truth=shape_truth)
    try:
        for relative in list(params)[:max_images]:
            truth_boxes, truth = _faces(params[relative])
            bgr, rgb = _read(split_dir / "images", relative)
            boxes, coefficients, scored_truth = read_head(bgr.float().to(device), truth_boxes, truth, device)
            found = face_errors(model, rgb, boxes, coefficients, scored_truth, crop_size=crop_size, shape_truth=shape_truth)
            found.faces = len(truth_boxes)
            errors.extend(found)
    finally:
        model.train(was_training)
    return errors


@torch.no_grad()
def evaluate_detections(
    model: RetinaFace,
    split_dir: str | Path,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    max_images: int | None = None,
    crop_size: int = 112,
) -> MeshHeadErrors:
    """Run ``model`` (eval mode) on the images of a synthetic split (``split_dir`` holds ``images/`` and
    ``render_params.json``), match its detections (score >= ``score_threshold``) to the true faces and
    measure the matched faces' mesh coefficients (crop = the detection's box, as at inference)."""

    def matched_detections(bgr, truth_boxes, truth, device):
        detections = model([bgr])[0]
        keep = detections["scores"] >= score_threshold
        boxes, coefficients = detections["boxes"][keep].cpu(), detections["mesh_coefficients"][keep].cpu()
        predicted_index, truth_index = match_boxes(boxes, truth_boxes, iou_threshold)
        return boxes[predicted_index], coefficients[predicted_index], truth[truth_index]

    return _evaluate_split(model, split_dir, max_images, crop_size, matched_detections)


@torch.no_grad()
def evaluate_at_boxes(
    model: RetinaFace, split_dir: str | Path, *, max_images: int | None = None, crop_size: int = 112
) -> MeshHeadErrors:
    """Like :func:`evaluate_detections`, but read the head at every true face's box (the per-anchor head at
    the anchor with the highest IoU with it, which the training loss always makes positive; the RoI head on
    the box), and crop at the true box: the head's accuracy independent of detection quality."""
    from ..model.heads import mesh_coefficients_at

    def head_at_true_boxes(bgr, truth_boxes, truth, device):
        if not len(truth_boxes):
            return truth_boxes, truth.new_zeros(0, 144), truth
        outputs, best, network_boxes = _best_anchors(model, bgr, truth_boxes)
        coefficients = mesh_coefficients_at(outputs.mesh_coefficients, torch.zeros_like(best), best, network_boxes)
        return truth_boxes, coefficients.cpu(), truth

    return _evaluate_split(model, split_dir, max_images, crop_size, head_at_true_boxes)


def _best_anchors(model: RetinaFace, bgr: Tensor, truth_boxes: Tensor):
    """The network's outputs for one image (``Tensor[3, H, W]`` BGR on the model's device), per true box
    ``Tensor[K, 4]`` (image pixels) the index of the anchor with the highest IoU with it, and the boxes in
    network-input pixels."""
    batch, _, scales, _ = model.preprocessor([bgr])
    outputs, anchors = model.head_outputs(batch, dense_mesh=False)
    network_boxes = truth_boxes.to(batch.device) * scales[0]
    iou = box_iou(network_boxes, box_convert(anchors, "cxcywh", "xyxy"))
    return outputs, iou.argmax(dim=1), network_boxes


@torch.no_grad()
def anchor_features(model: RetinaFace, split_dir: str | Path, *, max_images: int | None = None) -> tuple[Tensor, Tensor]:
    """What the mesh head reads for every true face of a synthetic split: ``(features Tensor[F, C + levels],
    truth Tensor[F, 144])``, the context feature at the face's best anchor (the anchor with the highest IoU
    with its true box) with a one-hot of the anchor's pyramid level appended, and the face's true render
    coefficients. For probing how much of the truth one anchor's feature holds (``scripts/probe_pose_features.py``);
    the model's mesh head must be the per-anchor one (``mesh_head="anchor"``), whose features these are."""
    if model.config.mesh_head != "anchor":
        raise ValueError("anchor_features probes the per-anchor mesh head's input; load a model with mesh_head='anchor'")
    split_dir = Path(split_dir)
    params = load_render_params(split_dir / "render_params.json")
    device = next(model.parameters()).device
    features, truths = [], []
    for relative in list(params)[:max_images]:
        truth_boxes, truth = _faces(params[relative])
        if not len(truth_boxes):
            continue
        bgr, _ = _read(split_dir / "images", relative)
        outputs, best, _ = _best_anchors(model, bgr.float().to(device), truth_boxes)
        sparse = outputs.mesh_coefficients
        locations, levels, _ = sparse.locate(best)
        one_hot = torch.nn.functional.one_hot(levels, len(sparse.locations_per_level)).float()
        features.append(torch.cat([sparse.features[0, locations].float(), one_hot], dim=1).cpu())
        truths.append(truth)
    if not features:
        return torch.zeros(0, 0), torch.zeros(0, 144)
    return torch.cat(features), torch.cat(truths)


def format_summary(summary: dict[str, float]) -> str:
    """One line: median errors of the head next to the zero-coefficient baseline."""
    return (
        f"mesh head on {summary['mesh_matched']}/{summary['mesh_faces']} faces (median, head vs zero): "
        f"rotation {summary['mesh_rotation_deg']:.2f} vs {summary['mesh_rotation_deg_zero']:.2f} deg, "
        f"light {summary['mesh_light_deg']:.2f} vs {summary['mesh_light_deg_zero']:.2f} deg, "
        f"pixel L1 {summary['mesh_pixel_l1']:.4f} vs {summary['mesh_pixel_l1_zero']:.4f} (true pose and light: "
        f"{summary.get('mesh_pixel_l1_oracle', math.nan):.4f}), "
        f"coverage {summary['mesh_coverage']:.2f} vs {summary['mesh_coverage_zero']:.2f}"
        + (f", shape {summary['mesh_shape_pct']:.2f} vs {summary['mesh_shape_pct_zero']:.2f} % of the face height (mean face)"
           if "mesh_shape_pct" in summary else "")
    )


__all__: Sequence[str] = [
    "MeshHeadErrors",
    "direction_error_degrees",
    "evaluate_at_boxes",
    "evaluate_detections",
    "face_errors",
    "face_height",
    "format_summary",
    "head_rotations",
    "light_directions",
    "match_boxes",
    "rotation_error_degrees",
    "true_shapes",
    "vertex_error_percent",
]
