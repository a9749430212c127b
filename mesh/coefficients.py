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


def _mirrored_signs() -> Tensor:
    signs = torch.ones(NUM_MESH_COEFFICIENTS)
    yaw, roll = POSE.start + 1, POSE.start + 2  # pose is pitch, yaw, roll; tanh keeps a rotation odd in its input
    signs[[LATENT_DIM, LATENT_DIM + yaw, LATENT_DIM + roll]] = -1.0  # camera: x location, yaw, roll
    signs[LATENT_DIM + CAMERA_DIM] = -1.0  # the point light's x, in the face's own frame
    return signs


MIRRORED_SIGNS = _mirrored_signs()
"""Signs that turn a face's coefficients into its mirror image's (see :func:`mirror_coefficients`)."""


def mirror_coefficients(coefficients: Tensor) -> Tensor:
    """The coefficients ``Tensor[..., 144]`` of a face seen in a horizontally flipped image: the camera's x
    location, the yaw and the roll, and the light's x change sign. The latent is kept, so this is exact
    for a left-right symmetric face (the mean face) and approximate for others (identities and
    expressions such as a one-sided smile are not symmetric)."""
    return coefficients * MIRRORED_SIGNS.to(coefficients)


def truth_distances(
    predicted: Tensor, truth: Tensor, *, num_shape_weights: int = LATENT_DIM, shape_rows: Tensor | None = None,
) -> dict[str, Tensor]:
    """How far mesh coefficients ``predicted`` ``Tensor[K, 144]`` are from the ``truth`` a face was rendered
    with (``Tensor[K, 144]``), each a mean over the ``K`` faces (0 when ``K`` is 0): ``rotation``, L1 between
    the rotation vectors (radians); ``light``, L1 between the 9 illumination parameters; ``shape``, L1
    between the first ``num_shape_weights`` latent entries (the face-shape prior's weights) plus the mean
    square of the rest of the latent (pulled to 0), over the faces of ``shape_rows`` (``Tensor[K]`` bool;
    default all; 0 when none). Camera placement is not compared: it is relative to the box the coefficients
    were read at."""
    zero = predicted.sum() * 0.0
    if len(predicted) == 0:
        return {"rotation": zero, "light": zero, "shape": zero}
    mine, true = split_coefficients(predicted), split_coefficients(truth)
    rotation = (pose_rotation_vector(mine.camera) - pose_rotation_vector(true.camera)).abs().mean()
    light = (mine.illumination - true.illumination).abs().mean()
    mine_latent, true_latent = mine.latent, true.latent
    if shape_rows is not None:
        mine_latent, true_latent = mine_latent[shape_rows], true_latent[shape_rows]
    if len(mine_latent) == 0:
        return {"rotation": rotation, "light": light, "shape": zero}
    shape = (mine_latent[:, :num_shape_weights] - true_latent[:, :num_shape_weights]).abs().mean()
    if num_shape_weights < LATENT_DIM:
        shape = shape + mine_latent[:, num_shape_weights:].square().mean()
    return {"rotation": rotation, "light": light, "shape": shape}


__all__ = [
    "CAMERA_DIM",
    "CoefficientSpread",
    "ILLUMINATION_DIM",
    "LATENT_DIM",
    "MESH_COEFFICIENT_LAYOUT",
    "MeshCoefficients",
    "NUM_MESH_COEFFICIENTS",
    "MIRRORED_SIGNS",
    "POSE",
    "pose_rotation_vector",
    "mirror_coefficients",
    "random_coefficients",
    "split_coefficients",
    "truth_distances",
]
