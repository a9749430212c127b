"""Analysis by synthesis: recover mesh coefficients of rendered faces by optimising them directly."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.rotations import rotation_error_degrees as geodesic_degrees
from .branch import MeshBranch
from .coefficients import random_coefficients, split_coefficients
from .renderer import face_rotation, lights_from_params

__all__ = ["FitResult", "fit_to_renders", "light_error_degrees", "multiscale_l1", "random_coefficients", "rotation_error_degrees"]


def multiscale_l1(image: Tensor, target: Tensor, levels: int = 4) -> Tensor:
    """L1 at full, 1/2, 1/4, ... resolution: coarse levels widen the basin for pose and light."""
    loss = F.l1_loss(image, target)
    for level in range(1, levels):
        k = 2**level
        loss = loss + F.l1_loss(F.avg_pool2d(image, k), F.avg_pool2d(target, k))
    return loss


def rotation_error_degrees(camera_a: Tensor, camera_b: Tensor) -> Tensor:
    """Angle ``Tensor[K]`` between the face rotations of two camera parameter sets ``Tensor[K, 7]``."""
    return geodesic_degrees(face_rotation(camera_a), face_rotation(camera_b))


def light_error_degrees(illumination_a: Tensor, illumination_b: Tensor) -> Tensor:
    """Angle ``Tensor[K]`` between the light directions (from the face centre) of two parameter sets."""
    a = F.normalize(lights_from_params(illumination_a).location, dim=-1)
    b = F.normalize(lights_from_params(illumination_b).location, dim=-1)
    return torch.rad2deg(torch.acos((a * b).sum(-1).clamp(-1.0, 1.0)))


@dataclass
class FitResult:
    coefficients: Tensor
    first_loss: float
    final_loss: float
    pose_error_degrees: Tensor
    light_error_degrees: Tensor


def fit_to_renders(branch: MeshBranch, truth: Tensor, *, steps: int = 150, image_size: int = 64, lr: float = 0.03) -> FitResult:
    """Render faces from ``truth`` ``Tensor[K, 144]``, then optimise coefficients from zero (the template,
    frontal, default light) to reproduce them. Losses reported are plain per-pixel L1."""
    with torch.no_grad():
        target = branch(truth, image_size=image_size)[1].image
    estimate = torch.zeros_like(truth, requires_grad=True)
    optimiser = torch.optim.Adam([estimate], lr=lr)
    first = None
    for _ in range(steps):
        image = branch(estimate, image_size=image_size)[1].image
        loss = multiscale_l1(image, target)
        if first is None:
            first = F.l1_loss(image, target).item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        final = F.l1_loss(branch(estimate, image_size=image_size)[1].image, target).item()
    fitted, true = split_coefficients(estimate.detach()), split_coefficients(truth)
    return FitResult(
        estimate.detach(), first, final,
        rotation_error_degrees(fitted.camera, true.camera), light_error_degrees(fitted.illumination, true.illumination),
    )
