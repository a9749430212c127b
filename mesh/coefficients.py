"""The 144 mesh coefficients predicted per face: their layout, the pose they encode, random draws.

Pure PyTorch (no pytorch3d), so the detector's config and heads can use the layout without the mesh branch.
Layout (RetinaFace paper, Sec. 3.2): joint shape+texture latent (128), camera (7: location xyz, pose xyz,
focal), illumination (9: point-light location xyz, light colour rgb, ambient colour rgb). The renderer
(:mod:`retinaface.mesh.renderer`) documents what each camera and light value means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

MESH_COEFFICIENT_LAYOUT: tuple[tuple[str, int], ...] = (
    ("shape_texture", 128),
    ("camera", 7),
    ("illumination", 9),
)
LATENT_DIM, CAMERA_DIM, ILLUMINATION_DIM = (size for _, size in MESH_COEFFICIENT_LAYOUT)
NUM_MESH_COEFFICIENTS = LATENT_DIM + CAMERA_DIM + ILLUMINATION_DIM
POSE = slice(3, 6)
"""The rotation parameters inside the camera group."""


class MeshCoefficients(NamedTuple):
    """``latent`` ``Tensor[K, 128]``, ``camera`` ``Tensor[K, 7]``, ``illumination`` ``Tensor[K, 9]``."""

    latent: Tensor
    camera: Tensor
    illumination: Tensor


def split_coefficients(coefficients: Tensor) -> MeshCoefficients:
    """Split ``Tensor[..., 144]`` into its three groups (views, in the order of :data:`MESH_COEFFICIENT_LAYOUT`)."""
    if coefficients.shape[-1] != NUM_MESH_COEFFICIENTS:
        raise ValueError(f"expected {NUM_MESH_COEFFICIENTS} mesh coefficients, got {coefficients.shape[-1]}")
    latent, camera, illumination = coefficients.split([LATENT_DIM, CAMERA_DIM, ILLUMINATION_DIM], dim=-1)
    return MeshCoefficients(latent, camera, illumination)


def pose_rotation_vector(camera: Tensor) -> Tensor:
    """Axis-angle face rotation ``Tensor[..., 3]`` (radians) of ``camera`` ``Tensor[..., 7]``:
    ``(pi / 2) tanh(r)``, so any network output is a pose of at most 90 degrees about each axis."""
    return (math.pi / 2) * torch.tanh(camera[..., POSE])


@dataclass(frozen=True)
class CoefficientSpread:
    """Standard deviations (and colour means) of :func:`random_coefficients`, in coefficient units.

    Colours: ``mean + N(0, shared_std)`` drawn once per face and colour (all three channels, a grey shift)
    ``+ N(0, tint_std)`` per channel; the shared draw is skipped when ``shared_std`` is 0.
    """

    latent: float = 0.5
    shift: float = 0.15
    distance: float = 0.1
    pose: tuple[float, float, float] = (0.25, 0.25, 0.25)
    """pitch, yaw, roll"""
    focal: float = 0.1
    light_location: float = 0.8
    colour_mean: tuple[float, float] = (0.0, 0.0)
    """light colour, ambient colour"""
    colour_shared_std: float = 0.0
    colour_tint_std: float = 0.3


def random_coefficients(count: int, generator: torch.Generator, spread: CoefficientSpread = CoefficientSpread()) -> Tensor:
    """Random plausible faces ``Tensor[count, 144]`` (float32, CPU) drawn from ``generator``: shape/texture,
    small shifts, poses and focal changes, moved lights and (optionally tinted) colours."""

    def normal(*size: int) -> Tensor:
        return torch.randn(count, *size, generator=generator)

    latent = normal(LATENT_DIM) * spread.latent
    camera = torch.cat(
        [normal(2) * spread.shift, normal(1) * spread.distance, normal(3) * torch.tensor(spread.pose), normal(1) * spread.focal],
        dim=1,
    )
    location = normal(3) * spread.light_location
    colours = (normal(6) * spread.colour_tint_std).view(count, 2, 3) + torch.tensor(spread.colour_mean)[:, None]
    if spread.colour_shared_std:
        colours = colours + normal(2, 1) * spread.colour_shared_std
    return torch.cat([latent, camera, location, colours.flatten(1)], dim=1)


__all__ = [
    "CAMERA_DIM",
    "CoefficientSpread",
    "ILLUMINATION_DIM",
    "LATENT_DIM",
    "MESH_COEFFICIENT_LAYOUT",
    "MeshCoefficients",
    "NUM_MESH_COEFFICIENTS",
    "POSE",
    "pose_rotation_vector",
    "random_coefficients",
    "split_coefficients",
]
