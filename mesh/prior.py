"""Linear 3D face-shape prior on the template's 468-vertex topology (derived from the ICT Face Model).

A face is ``mean + sum_i a_i identity[i] + sum_j e_j expression[j]`` with identity weights ``a ~ N(0, 1)``
and expression weights ``e`` in ``[0, 1]`` (ARKit-style blendshapes). The asset
``mesh/assets/face_prior.npz`` is built by ``scripts/build_face_prior.py`` from the ICT Face Model
(MIT licence, (c) 2020 USC Institute for Creative Technologies; see ``mesh/assets/NOTICE.ict``).
It is in template model space: x right, y up, z towards the camera, template units (the template's
x-y extent is [-1, 1]); the mean is upright and frontal, so zero rotation means a frontal face.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.resources import package_path

PRIOR_PATH = package_path(__package__, "assets/face_prior.npz")


@dataclass(frozen=True)
class FacePrior:
    """``mean`` ``Tensor[V, 3]``; ``identity`` ``Tensor[I, V, 3]`` (per unit standard-normal weight);
    ``expression`` ``Tensor[E, V, 3]`` (per unit weight, weights in [0, 1]); ``identity_names`` /
    ``expression_names``: the ICT mode names; ``centimetres_per_unit``: ICT centimetres per template unit."""

    mean: Tensor
    identity: Tensor
    expression: Tensor
    identity_names: tuple[str, ...]
    expression_names: tuple[str, ...]
    centimetres_per_unit: float
    provenance: str

    @property
    def num_identity(self) -> int:
        return self.identity.shape[0]

    @property
    def num_expression(self) -> int:
        return self.expression.shape[0]

    @property
    def num_coefficients(self) -> int:
        return self.num_identity + self.num_expression

    def shapes(self, coefficients: Tensor) -> Tensor:
        """Vertices ``Tensor[B, V, 3]`` for ``coefficients`` ``Tensor[B, I + E]`` (identity first, then expression)."""
        basis = torch.cat([self.identity, self.expression]).to(coefficients).flatten(1)  # [I + E, V * 3]
        return self.mean.to(coefficients) + (coefficients @ basis).view(coefficients.shape[0], -1, 3)

    def sample(self, count: int, generator: torch.Generator, *, expression_probability: float = 0.15) -> Tensor:
        """Random coefficients ``Tensor[count, I + E]``: identity ~ N(0, 1); each expression active with
        ``expression_probability``, then uniform in [0, 1] (real expressions use a few blendshapes at a time)."""
        identity = torch.randn(count, self.num_identity, generator=generator)
        active = torch.rand(count, self.num_expression, generator=generator) < expression_probability
        expression = torch.rand(count, self.num_expression, generator=generator) * active
        return torch.cat([identity, expression], dim=1)


@lru_cache(maxsize=1)
def load_prior(path: str | Path = PRIOR_PATH) -> FacePrior:
    """Read the committed prior asset (built by ``scripts/build_face_prior.py``)."""
    with np.load(path) as data:
        return FacePrior(
            mean=torch.from_numpy(data["mean"]).float(),
            identity=torch.from_numpy(data["identity"]).float(),
            expression=torch.from_numpy(data["expression"]).float(),
            identity_names=tuple(str(n) for n in data["identity_names"]),
            expression_names=tuple(str(n) for n in data["expression_names"]),
            centimetres_per_unit=float(data["centimetres_per_unit"]),
            provenance=str(data["provenance"]),
        )


# The 68 Multi-PIE landmarks as vertices of mediapipe's face-mesh topology (our template's), in Multi-PIE
# order: jaw 0-16 (subject's right to left), brows 17-26, nose 27-35, eyes 36-47, lips 48-67. These
# correspondences are published anatomy facts; mirror pairs are symmetric on the template (tested).
MULTIPIE68_TO_TEMPLATE = (
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 1, 98, 97, 2, 326, 327,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    78, 81, 13, 311, 308, 402, 14, 178,
)
JAW = slice(0, 17)  # silhouette points: where they sit on a 3D surface is loosely defined


def similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``scale, R ndarray[3, 3], t ndarray[3]`` with ``target ~ scale * source @ R.T + t`` (Umeyama)."""
    w = np.ones(len(source)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_t = w @ source, w @ target
    s0, t0 = source - mu_s, target - mu_t
    covariance = (t0 * w[:, None]).T @ s0
    u, sigma, vt = np.linalg.svd(covariance)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / (w @ (s0**2).sum(1)))
    return scale, rotation, mu_t - scale * rotation @ mu_s


def correspondence_weights(
    template_vertices: np.ndarray,
    model_vertices: np.ndarray,
    model_triangles: np.ndarray,
    template_landmarks: np.ndarray,
    model_landmarks: np.ndarray,
    *,
    smoothing: float = 1e-3,
    chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense correspondence from a face model's mesh onto the template's vertices.

    The model mesh (already rigidly aligned to the template's frame) is warped by a thin-plate spline
    that takes ``model_landmarks`` ``ndarray[L, 3]`` onto ``template_landmarks`` ``ndarray[L, 3]``; each
    template vertex then takes the closest point of the warped surface. Returns the barycentric weights
    ``ndarray[V_template, V_model]`` (three non-zeros per row) and the distances to the warped surface.
    """
    from scipy.interpolate import RBFInterpolator

    from .hierarchy import barycentric_on_nearest_triangle

    warp = RBFInterpolator(model_landmarks, template_landmarks - model_landmarks, kernel="thin_plate_spline", smoothing=smoothing)
    warped = model_vertices + warp(model_vertices)
    weights = np.concatenate([
        barycentric_on_nearest_triangle(template_vertices[i : i + chunk], warped, model_triangles)
        for i in range(0, len(template_vertices), chunk)
    ])
    distances = np.linalg.norm(weights @ warped - template_vertices, axis=1)
    return weights, distances


def build_prior_from_ict(
    ict_path: str | Path,
    template_vertices: np.ndarray,
    *,
    num_identity: int = 60,
    num_expression: int | None = None,
    min_expression_motion: float = 1e-3,
    template_share: float = 0.5,
) -> dict[str, np.ndarray]:
    """Map the ICT Face Model (``ict_face_area.npz``: cm, y up, z to the viewer) onto the template topology.

    1. similarity (rotation included) from ICT's 68 landmarks to the template's, excluding the jaw line;
    2. the prior's frame keeps that scale and offset but not the rotation, so the mean stays upright and
       frontal (the template photo's own head pose is not baked in); the template is rotated into it;
    3. thin-plate-spline warp + closest point (:func:`correspondence_weights`) gives each template vertex
       barycentric weights on the ICT mesh, applied to the neutral and to every mode.
    The mean is ``(1 - template_share) * ICT neutral + template_share * template`` (both upright): the
    average of the only two faces we have on this topology, which is closer to a population mean than either
    (the template is one real face measured by mediapipe's face mesh, whose vertex placement it defines).
    Expression modes that move no vertex more than ``min_expression_motion`` template units are dropped
    (e.g. pupil dilation, which lives in the eyes outside the face area). Returns the asset's arrays.
    """
    with np.load(ict_path) as ict:
        neutral = ict["neutral"].astype(np.float64)
        triangles = ict["triangles"].astype(np.int64)
        identity = ict["identity_modes"][:num_identity].astype(np.float64)
        expression = ict["expression_modes"].astype(np.float64)
        identity_names = ict["identity_names"][:num_identity]
        expression_names = ict["expression_names"]
        landmark_ids = ict["landmarks_68"].astype(np.int64)
    template_landmarks = template_vertices[list(MULTIPIE68_TO_TEMPLATE)].astype(np.float64)
    model_landmarks = neutral[landmark_ids]
    inner = np.ones(68, bool)
    inner[JAW] = False
    scale, rotation, _ = similarity(model_landmarks[inner], template_landmarks[inner])
    # Upright frame: scale and shift ICT, rotate the template instead.
    centre = template_landmarks[inner].mean(0)
    offset = centre - scale * model_landmarks[inner].mean(0)
    aligned = scale * neutral + offset
    template_upright = (template_vertices - centre) @ rotation + centre  # rotation.T applied to row vectors
    weights, distances = correspondence_weights(
        template_upright, aligned, triangles, template_upright[list(MULTIPIE68_TO_TEMPLATE)], aligned[landmark_ids]
    )
    mean = (1 - template_share) * (weights @ aligned) + template_share * template_upright
    identity_modes = scale * np.einsum("tv,kvc->ktc", weights, identity)
    expression_modes = scale * np.einsum("tv,kvc->ktc", weights, expression)
    keep = np.linalg.norm(expression_modes, axis=-1).max(axis=1) > min_expression_motion
    if num_expression is not None:
        keep &= np.cumsum(keep) <= num_expression
    return {
        "mean": mean.astype(np.float32),
        "identity": identity_modes.astype(np.float32),
        "expression": expression_modes[keep].astype(np.float32),
        "identity_names": identity_names,
        "expression_names": expression_names[keep],
        "centimetres_per_unit": np.float64(1.0 / scale),
        "template_rotation": rotation.astype(np.float32),
        "surface_distance": distances.astype(np.float32),
        "template_share": np.float64(template_share),
    }
