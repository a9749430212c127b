"""Train the RoI mesh head of a frozen detector on synthetic faces whose shape, pose and light are known.

The released detector was trained on WIDER FACE without any mesh: its trunk and its score, box and landmark
heads stay exactly as published, and only the RoI mesh head (:class:`~retinaface.model.heads.RoIMeshHead`)
learns. Because the trunk is frozen, what the head reads for a face (RoI Align of its box on the SSH
features, and the crop of its pixels when the head has a pixel branch) is computed once per face;
training then runs on those alone, hundreds of steps a minute on a CPU.

Faces come from :func:`retinaface.datasets.synthetic.render_image` (prior-shaped faces, random pose, light,
size and background, each image JPEG-compressed as the dataset files are), drawn in memory from a seed.
Each face found by the detector (score and IoU thresholds below) gives two samples: the head read at the
detection's box (what inference sees) and at the true box. The objective per face, against the truth
the face was rendered from:

- ``vertex``: mean distance between the head's mesh placed in the image by its camera and the true mesh
  where it was rendered, in units of the box size (pose, camera and shape together);
- ``rotation``: L1 between the head's and the true rotation vectors (radians);
- ``light``: L1 between the 9 illumination parameters;
- ``shape``: L1 between the head's and the true prior weights (identity and expression), the rest of the
  128-entry latent pulled to 0.

The head's mesh in the ``vertex`` term is the face-shape prior's linear model of its weights (what the
prior decoder was trained to reproduce), so no graph convolution runs in training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from ..config import InferenceConfig, check_fields
from ..errors import RetinaFaceError
from ..mesh.coefficients import split_coefficients, truth_distances
from ..model.heads import RoIMeshHead
from ..model.retinaface import RetinaFace, build_retinaface


@dataclass(frozen=True)
class MeshHeadTrainConfig:
    """Settings of :func:`train_mesh_head` (``--key=value`` in ``scripts/train_mesh_head.py``); the defaults
    trained the released head."""

    images: int = 2100
    """synthetic images drawn (about 3 faces each)"""
    image_size: int = 320
    """side of the square synthetic images (pixels)"""
    seed: int = 0
    """seed of the synthetic images (image ``i`` is drawn from ``[seed, i]``) and of the training order"""
    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    """a detection is a sample of the true face it overlaps by at least this IoU"""
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    vertex_weight: float = 1.0
    rotation_weight: float = 1.0
    light_weight: float = 0.5
    shape_weight: float = 0.02

    def __post_init__(self) -> None:
        check_fields(self, {
            "images": (lambda v: v >= 1, "at least 1"),
            "image_size": (lambda v: v >= 64, "at least 64 pixels"),
            "score_threshold": (lambda v: 0 <= v <= 1, "in [0, 1]"),
            "iou_threshold": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "steps": (lambda v: v >= 0, "0 or more"),
            "batch_size": (lambda v: v >= 1, "at least 1"),
            "lr": (lambda v: v > 0, "positive"),
            **{name: (lambda v: v >= 0, "0 or more") for name in
               ("weight_decay", "vertex_weight", "rotation_weight", "light_weight", "shape_weight")},
        })


class HeadSamples(NamedTuple):
    """Faces for the head, one row each: ``pooled`` ``Tensor[F, C, S, S]`` (what the head's convs read),
    ``pixels`` ``Tensor[F, 3, 4S, 4S]`` (the crops its pixel branch reads; ``Tensor[F, 0]`` for a head
    without one), ``boxes`` ``Tensor[F, 4]`` (the box it was read at, x1 y1 x2 y2 image pixels), ``truth`` ``Tensor[F, 144]``
    (the coefficients the face was rendered from), ``true_vertices`` ``Tensor[F, V, 2]`` (the rendered mesh's
    vertices in image pixels) and ``detected`` ``Tensor[F]`` bool (read at a detection's box, not the true box)."""

    pooled: Tensor
    pixels: Tensor
    boxes: Tensor
    truth: Tensor
    true_vertices: Tensor
    detected: Tensor

    @staticmethod
    def cat(parts: list["HeadSamples"]) -> "HeadSamples":
        return HeadSamples(*(torch.cat(column) for column in zip(*parts)))

    def take(self, rows: Tensor) -> "HeadSamples":
        """The samples at ``rows`` (an index or boolean ``Tensor``), every column alike."""
        return HeadSamples(*(column[rows] for column in self))


def with_fresh_mesh_head(model: RetinaFace, head: str = "roi", inference: InferenceConfig | None = None) -> RetinaFace:
    """A copy of ``model`` (any mesh head) whose mesh head is a fresh, zero-initialised one of kind ``head``
    (``"roi"`` or ``"anchor"``, :attr:`ModelConfig.mesh_head`); everything else (trunk, score, box and
    landmark heads, mesh branch) has ``model``'s weights; detection settings ``inference`` (default: the
    defaults)."""
    config = dataclasses.replace(model.config.without_mesh_head(), mesh_head=head)
    fresh = build_retinaface(config, inference, mesh=model.mesh_branch is not None)
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("heads.mesh.")}
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("heads.mesh.") for key in missing):
        raise RuntimeError(f"cannot move the weights over: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return fresh.eval()


def _jpeg(image: np.ndarray, quality: int = 92) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image


@torch.no_grad()
def collect_samples(
    model: RetinaFace, config: MeshHeadTrainConfig, *, first_image: int = 0, progress: Callable[[int, int], None] | None = None,
) -> HeadSamples:
    """Draw ``config.images`` synthetic images (from image ``first_image`` of ``config.seed``), run ``model``
    (eval mode, RoI mesh head) on each, and return what its head reads for every found face (see the module
    docstring). ``progress(done, total)`` is called after each image."""
    from ..datasets.synthetic import SyntheticFaceRenderer, render_image
    from ..evaluation.mesh_eval import match_boxes

    head = model.heads.mesh
    if not isinstance(head, RoIMeshHead):
        raise TypeError("collect_samples needs a model with the RoI mesh head (with_fresh_mesh_head)")
    renderer = SyntheticFaceRenderer()
    parts: list[HeadSamples] = []
    model.eval()
    for index in range(first_image, first_image + config.images):
        rng = np.random.default_rng([config.seed, index])
        canvas, faces = render_image(renderer, rng, config.image_size, config.image_size)
        if faces:
            bgr = torch.from_numpy(_jpeg(canvas)).permute(2, 0, 1).float()
            # one pass of the network: the detections, and the features the head pools (in network pixels)
            batch, _, scales, _ = model.preprocessor([bgr])
            outputs, anchors = model.run_network(batch)
            detections = model.postprocessor(outputs, anchors)[0]
            keep = detections["scores"] >= config.score_threshold
            detected_boxes = detections["boxes"][keep] / scales[0]
            true_boxes = torch.tensor(np.stack([f.box for f in faces]), dtype=torch.float32)
            truth = torch.tensor(np.stack([f.coefficients for f in faces]), dtype=torch.float32)
            placement = torch.tensor([[x, y, x + side, y + side] for x, y, side in (f.placement for f in faces)], dtype=torch.float32)
            found, matched = match_boxes(detected_boxes, true_boxes, config.iou_threshold)
            if len(found):
                boxes = torch.cat([detected_boxes[found], true_boxes[matched]])
                rows = torch.cat([matched, matched])
                image_ids = torch.zeros(len(boxes), dtype=torch.long)
                pooled = head.pool(outputs.mesh_coefficients.features, image_ids, boxes * scales[0])
                pixels = head.pool_pixels(batch, image_ids, boxes * scales[0]) if head.pixels is not None else torch.zeros(len(boxes), 0)
                vertices, _ = renderer.branch.image_vertices(truth[rows], placement[rows])
                detected = torch.arange(len(boxes)) < len(found)
                parts.append(HeadSamples(pooled, pixels, boxes, truth[rows], vertices[..., :2], detected))
        if progress is not None:
            progress(index - first_image + 1, config.images)
    if not parts:
        raise RetinaFaceError("the detector found none of the synthetic faces (check --weights and image_size)")
    return HeadSamples.cat(parts)


COLLECTION_KEYS = ("images", "image_size", "seed", "score_threshold", "iou_threshold")
"""The :class:`MeshHeadTrainConfig` fields that decide which faces :func:`collect_samples` returns."""


def collection_settings(config: MeshHeadTrainConfig, head: RoIMeshHead) -> dict:
    """What decides the samples :func:`collect_samples` returns for ``head``: the :data:`COLLECTION_KEYS` of
    ``config`` and the side of the pixel crops the head reads (a cache is reused only when all match)."""
    return {**{key: getattr(config, key) for key in COLLECTION_KEYS}, "pixel_size": head.pixel_size}


def predict(head: RoIMeshHead, samples: HeadSamples) -> Tensor:
    """``head``'s coefficients ``Tensor[F, 144]`` for ``samples`` (its pooled features and, if it reads
    them, its pixel crops)."""
    return head.from_pooled(samples.pooled, samples.pixels if head.pixels is not None else None)


def write_samples(path: str | os.PathLike, samples: HeadSamples, settings: dict) -> None:
    """Save ``samples`` with the collection ``settings`` they were drawn with (atomically; tensors only)."""
    from ..outputs.atomic import atomic_write

    payload = {**samples._asdict(), "settings": torch.tensor(list(json.dumps(settings, sort_keys=True).encode()), dtype=torch.uint8)}
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def read_samples(path: str | os.PathLike, settings: dict) -> HeadSamples | None:
    """The samples :func:`write_samples` saved at ``path`` if they were drawn with ``settings``, else ``None``.
    Read with ``weights_only=True``: no code from the file runs."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    stored = json.loads(bytes(payload.pop("settings").tolist()).decode())
    if stored != json.loads(json.dumps(settings, sort_keys=True)):
        return None
    return HeadSamples(**payload)


def head_losses(predicted: Tensor, samples: HeadSamples, prior, config: MeshHeadTrainConfig) -> dict[str, Tensor]:
    """The weighted terms of the module docstring for ``predicted`` ``Tensor[K, 144]`` of ``samples``."""
    from ..mesh.branch import placement_distance

    mine = split_coefficients(predicted)
    weights = prior.num_coefficients
    vertex = placement_distance(prior.shapes(mine.latent[:, :weights]), mine.camera, samples.boxes, samples.true_vertices).mean()
    distances = truth_distances(predicted, samples.truth, num_shape_weights=weights)
    return {
        "vertex": config.vertex_weight * vertex, "rotation": config.rotation_weight * distances["rotation"],
        "light": config.light_weight * distances["light"], "shape": config.shape_weight * distances["shape"],
    }


@torch.no_grad()
def head_errors(head: RoIMeshHead, samples: HeadSamples) -> dict[str, float]:
    """Medians over ``samples`` read at detections: rotation and light direction errors (degrees) of the head
    and of zero coefficients (the template face, frontal, default light)."""
    from ..evaluation.mesh_eval import direction_error_degrees, head_rotations, light_directions
    from ..utils.rotations import rotation_error_degrees

    detected = samples.take(samples.detected)
    predicted, truth = predict(head, detected), detected.truth
    zero = torch.zeros_like(predicted)
    median = lambda values: float(values.median()) if len(values) else math.nan  # noqa: E731
    return {
        "rotation_deg": median(rotation_error_degrees(head_rotations(predicted), head_rotations(truth))),
        "rotation_deg_zero": median(rotation_error_degrees(head_rotations(zero), head_rotations(truth))),
        "light_deg": median(direction_error_degrees(light_directions(predicted), light_directions(truth))),
        "light_deg_zero": median(direction_error_degrees(light_directions(zero), light_directions(truth))),
    }


def train_mesh_head(
    head: RoIMeshHead, samples: HeadSamples, config: MeshHeadTrainConfig, *,
    report: Callable[[int, dict[str, float]], None] | None = None, report_every: int = 500,
) -> list[dict[str, float]]:
    """Train ``head`` (in place; its convs and output layer) on ``samples`` for ``config.steps`` Adam steps
    with a cosine learning-rate decay; returns the per-report loss averages (``report(step, losses)`` is
    called every ``report_every`` steps and at the end)."""
    from ..mesh.prior import load_prior

    prior = load_prior()
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(config.steps, 1))
    head.train()
    history, running, count, started = [], {}, 0, time.perf_counter()
    for step in range(1, config.steps + 1):
        rows = torch.randint(len(samples.pooled), (min(config.batch_size, len(samples.pooled)),), generator=generator)
        batch = samples.take(rows)
        losses = head_losses(predict(head, batch), batch, prior, config)
        total = sum(losses.values())
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()
        schedule.step()
        for name, value in losses.items():
            running[name] = running.get(name, 0.0) + float(value.detach())
        count += 1
        if step % report_every == 0 or step == config.steps:
            averages = {name: value / count for name, value in running.items()}
            averages["seconds"] = time.perf_counter() - started
            history.append(averages)
            if report is not None:
                report(step, averages)
            running, count = {}, 0
    head.eval()
    return history
