"""A synthetic WIDER-format face dataset rendered with the mesh branch and the prior-trained decoder.

Each image has a procedural background (gradients, blobs, stripes, noise) and 1-6 faces rendered from
random face shapes, pose, light and size (10-300 px); some faces are partly occluded by a random patch.
The shapes are the face-shape prior's (:mod:`retinaface.mesh.prior`, from the ICT Face Model): identity
weights ~ N(0, 1) and expressions in [0, 1] as :meth:`FacePrior.sample` draws them, decoded by the decoder
pre-trained on that prior (``mesh/assets/prior_decoder.safetensors``, the one the released weights are
loaded with), so faces vary the way real faces do and each face's true shape is known. Output, in exactly
the WIDER + RetinaFace formats:

    <out>/train/images/<event>/<name>.jpg, <out>/train/label.txt      (RetinaFace landmark format)
    <out>/val/images/<event>/<name>.jpg,   <out>/val/wider_val.txt    (image list)
    <out>/val/gt/wider_face_val.mat, wider_{easy,medium,hard}_val.mat (official structure)
    <out>/{train,val}/render_params.json                              (truth and placement per face)

``render_params.json`` maps each image (``"<event>/<name>.jpg"``) to its faces, each
``{"box", "placement", "occluded", "coefficients", "identity", "expression"}``: the tight box (x1 y1 x2 y2
pixels), the render square (x, y, side), the 144 coefficients it was rendered from (latent, camera,
light: see :mod:`retinaface.mesh.coefficients`) and its shape truth, the prior's 60 identity and 55
expression weights, which are also ``coefficients[0:60]`` and ``[60:115]`` (the rest of the latent is 0).
Settings: hard counts every face, medium faces of at least 20 px, easy faces of at least 40 px that are
not occluded. Everything is deterministic given the seed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..mesh.coefficients import LATENT_DIM, CoefficientSpread, random_coefficients
from ..mesh.prior import FacePrior, load_prior

EVENTS = ("0--Synthetic", "1--Synthetic")


@dataclass
class SyntheticFace:
    box: np.ndarray  # x1 y1 x2 y2
    landmarks: np.ndarray  # [5, 2]
    occluded: bool
    coefficients: np.ndarray  # [144]; latent[0:I] identity, latent[I:I + E] expression, the rest 0
    placement: tuple[int, int, int]  # x, y, side of the render square
    num_identity: int  # I: the latent's first I entries are identity weights
    num_expression: int  # E: the next E expression weights


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(30, 220, 3)
    direction = rng.normal(size=2)
    ramp = (xs * direction[0] + ys * direction[1]) / max(height, width)
    image = base + rng.uniform(-60, 60, 3) * ramp[..., None]
    for _ in range(rng.integers(3, 9)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 200)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
        image += rng.uniform(-90, 90, 3) * blob[..., None]
    if rng.random() < 0.5:
        period, angle = rng.uniform(8, 60), rng.uniform(0, math.pi)
        stripes = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period)
        image += rng.uniform(5, 40) * stripes[..., None]
    image += rng.normal(0, rng.uniform(2, 12), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


# Synthetic faces: yaw wider than pitch and roll, and light/ambient colours that are mostly grey shifts with
# a slight tint (faces stay skin-coloured; the prior decoder keeps the template's colours). The latent is
# not drawn from this spread: it is the prior's identity and expression (random_face).
FACE_SPREAD = CoefficientSpread(
    latent=0.0, shift=0.1, distance=0.1, pose=(0.15, 0.35, 0.1), focal=0.1, light_location=0.8,
    colour_mean=(0.2, -0.2), colour_shared_std=0.4, colour_tint_std=0.08,
)


def random_face(rng: np.random.Generator, prior: FacePrior, *, shape_scale: float = 1.0) -> np.ndarray:
    """Coefficients ``ndarray[144]`` (float32) of one random synthetic face, drawn with a seed taken from
    ``rng``: camera and light from :data:`FACE_SPREAD`, the latent's first entries the ``prior``'s identity
    (~ N(0, 1)) and expression (in [0, 1]) weights as :meth:`FacePrior.sample` draws them (the distribution
    the prior decoder was trained on) times ``shape_scale`` (0: the prior's mean face), the rest of the
    latent 0. The camera and light do not depend on ``shape_scale``."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    coefficients = random_coefficients(1, generator, FACE_SPREAD)[0]
    shape = shape_scale * prior.sample(1, generator)[0]
    coefficients[:LATENT_DIM] = 0.0
    coefficients[: len(shape)] = shape
    return coefficients.numpy()


class SyntheticFaceRenderer:
    """Renders faces into images with the mesh branch and the decoder pre-trained on the face-shape prior
    (:func:`retinaface.mesh.decoder.load_prior_decoder`): the latent a face is drawn with is its true shape."""

    def __init__(self) -> None:
        from ..mesh.branch import MeshBranch
        from ..mesh.decoder import load_prior_decoder

        self.prior = load_prior()
        branch = MeshBranch()
        load_prior_decoder(branch.decoder)
        self.branch = branch.eval()

    def paste(self, canvas: np.ndarray, coefficients: np.ndarray, x: int, y: int, side: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Render one face into the ``side`` square at (x, y) of ``canvas`` (BGR, in place); returns its tight
        box and five landmarks in canvas pixels, or ``None`` when nothing visible was drawn."""
        coefficients_t = torch.from_numpy(coefficients)[None]
        with torch.no_grad():
            _, rendered = self.branch(coefficients_t, image_size=side)
            vertices, _ = self.branch.image_vertices(coefficients_t, torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32))
        mask = rendered.mask[0, 0].numpy()
        if mask.sum() < 4:
            return None
        face = (rendered.image[0].permute(1, 2, 0).numpy()[..., ::-1] * 255).clip(0, 255)
        height, width = canvas.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
        if x1 <= x0 or y1 <= y0:
            return None
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x, None]
        canvas[y0:y1, x0:x1] = (region * (1 - m) + face[y0 - y : y1 - y, x0 - x : x1 - x] * m).astype(np.uint8)
        rows, cols = np.nonzero(mask)
        box = np.array([cols.min() + x, rows.min() + y, cols.max() + 1 + x, rows.max() + 1 + y], np.float32)
        box[0::2] = box[0::2].clip(0, width)
        box[1::2] = box[1::2].clip(0, height)
        landmarks = self.branch.template.landmarks(vertices)[0, :, :2].numpy()
        return box, landmarks


def render_image(
    renderer: SyntheticFaceRenderer, rng: np.random.Generator, height: int, width: int, *, shape_scale: float = 1.0
) -> tuple[np.ndarray, list[SyntheticFace]]:
    canvas = _background(rng, height, width)
    faces: list[SyntheticFace] = []
    for _ in range(rng.integers(1, 7)):
        # log-uniform sizes: as many small faces as large ones, like WIDER
        side = int(math.exp(rng.uniform(math.log(12), math.log(min(300, min(height, width) - 1) * 1.15))))
        x = int(rng.integers(-side // 8, width - side + side // 8 + 1))
        y = int(rng.integers(-side // 8, height - side + side // 8 + 1))
        coefficients = random_face(rng, renderer.prior, shape_scale=shape_scale)
        placed = renderer.paste(canvas, coefficients, x, y, side)
        if placed is None:
            continue
        box, landmarks = placed
        if min(box[2] - box[0], box[3] - box[1]) < 6:
            continue
        occluded = bool(rng.random() < 0.2 and side >= 20)
        if occluded:
            bw, bh = box[2] - box[0], box[3] - box[1]
            ox = int(box[0] + rng.uniform(0, 0.6) * bw)
            oy = int(box[1] + rng.uniform(0.2, 0.7) * bh)
            colour = rng.uniform(0, 255, 3)
            cv2.rectangle(canvas, (ox, oy), (int(ox + 0.4 * bw), int(oy + 0.35 * bh)), colour.tolist(), -1)
        faces.append(SyntheticFace(box, landmarks, occluded, coefficients, (x, y, side), renderer.prior.num_identity, renderer.prior.num_expression))
    # faces pasted later hide earlier ones: drop faces that are mostly covered by a later face
    visible = []
    for i, face in enumerate(faces):
        covered = any(_overlap_fraction(face.box, later.box) > 0.5 for later in faces[i + 1 :])
        if not covered:
            visible.append(face)
    return canvas, visible


def _overlap_fraction(box: np.ndarray, other: np.ndarray) -> float:
    w = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    h = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    return w * h / max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)


def _face_record(face: SyntheticFace) -> dict:
    identity = face.coefficients[: face.num_identity]
    expression = face.coefficients[face.num_identity : face.num_identity + face.num_expression]
    return {
        "box": [round(float(v), 2) for v in face.box],
        "placement": list(face.placement),
        "occluded": face.occluded,
        "coefficients": [round(float(v), 5) for v in face.coefficients],
        "identity": [round(float(v), 5) for v in identity],
        "expression": [round(float(v), 5) for v in expression],
    }


def generate(
    output: str | os.PathLike,
    *,
    num_train: int = 400,
    num_val: int = 100,
    seed: int = 0,
    height: int = 480,
    width: int = 640,
    shape_scale: float = 1.0,
    progress: bool = True,
) -> dict[str, int]:
    """Write the synthetic dataset under ``output``; returns image and face counts. ``shape_scale``
    multiplies every face's identity and expression weights (1: the prior's variety; 0: every face the
    prior's mean face, with the same cameras, lights and placements)."""
    from tqdm import tqdm

    from ..evaluation.wider_eval import SETTINGS, WiderGroundTruth, save_ground_truth

    if not 0 <= shape_scale <= 1:
        raise ValueError(f"shape_scale must be in [0, 1] (expression weights stay in [0, 1]), got {shape_scale}")
    output = Path(output)
    renderer = SyntheticFaceRenderer()
    counts = {"train_images": num_train, "val_images": num_val, "train_faces": 0, "val_faces": 0}
    for split, count, offset in (("train", num_train, 0), ("val", num_val, 1_000_000)):
        lines, params = [], {}
        gt = WiderGroundTruth(events=list(EVENTS), files=[[] for _ in EVENTS], boxes=[[] for _ in EVENTS])
        for s in SETTINGS:
            gt.keep[s] = [[] for _ in EVENTS]
        for index in tqdm(range(count), desc=f"synthetic {split}", disable=not progress, unit="img"):
            rng = np.random.default_rng([seed, offset + index])
            image, faces = render_image(renderer, rng, height, width, shape_scale=shape_scale)
            event = index % len(EVENTS)
            name = f"{index}_synthetic_{split}"
            relative = f"{EVENTS[event]}/{name}.jpg"
            path = output / split / "images" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            params[relative] = [_face_record(f) for f in faces]
            counts[f"{split}_faces"] += len(faces)
            lines.append(f"# {relative}")
            for face in faces:
                x1, y1, x2, y2 = face.box
                points = " ".join(f"{px:.2f} {py:.2f} 0.0" for px, py in face.landmarks)
                lines.append(f"{x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {points} 1.0")
            gt.files[event].append(name)
            xywh = np.array([[f.box[0], f.box[1], f.box[2] - f.box[0], f.box[3] - f.box[1]] for f in faces], np.float64).reshape(-1, 4)
            gt.boxes[event].append(np.round(xywh))
            sides = np.minimum(xywh[:, 2], xywh[:, 3])
            occluded = np.array([f.occluded for f in faces], bool)
            gt.keep["hard"][event].append(np.arange(1, len(faces) + 1))
            gt.keep["medium"][event].append(np.nonzero(sides >= 20)[0] + 1)
            gt.keep["easy"][event].append(np.nonzero((sides >= 40) & ~occluded)[0] + 1)
        (output / split).mkdir(parents=True, exist_ok=True)
        (output / split / "render_params.json").write_text(json.dumps(params))
        if split == "train":
            (output / split / "label.txt").write_text("\n".join(lines) + "\n")
        else:
            (output / split / "wider_val.txt").write_text("\n".join(f"/{k}" for k in params) + "\n")
            save_ground_truth(gt, output / split / "gt")
    return counts


def load_render_params(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A split's ``render_params.json`` (see the module's docstring): ``{"<event>/<name>.jpg": [{"box",
    "coefficients", ...}, ...]}``, one record per face in the label file's order. ``AnnotationError`` with one
    sentence when the file cannot be read or is not such a mapping."""
    from ..errors import AnnotationError

    try:
        params = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnnotationError(f"cannot read {path}: {exc}") from None
    if not isinstance(params, dict) or not all(isinstance(faces, list) for faces in params.values()):
        raise AnnotationError(f"{path} is not a render_params.json (image -> list of faces)")
    return params
