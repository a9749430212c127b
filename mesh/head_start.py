"""The detector's own mesh as a photo fit's starting point: its 144 coefficients as a :class:`FitState`.

The inverse of :func:`retinaface.mesh.photo_fit.renderer_coefficients`. The renderer's camera for a crop at
a face's box puts the model origin at ``box centre + (x, -y) * F / d`` pixels with ``F / d`` pixels per
template unit there (``(x, y)`` the camera's translation, ``d`` its distance, ``F`` its focal length in
pixels); the fit's camera has a fixed focal length, so the state keeps that image position and scale
(the view of the face, up to the small difference in perspective between the two focal lengths).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .coefficients import pose_rotation_vector, split_coefficients
from .photo_fit import FitState, focal_pixels
from .renderer import camera_from_params, sanitize

MAX_IDENTITY_WEIGHT = 4.0
"""The fit keeps identity weights within this many standard deviations; a start outside is clipped."""


def state_from_coefficients(coefficients: Tensor, boxes: Tensor, *, num_identity: int, num_expression: int) -> FitState:
    """:class:`FitState` ``K`` rows for mesh coefficients ``Tensor[K, 144]`` (the detector head's, for crops at
    ``boxes`` ``Tensor[K, 4]`` x1 y1 x2 y2 pixels): the latent's first ``num_identity`` + ``num_expression``
    entries as the prior's weights (expressions clipped to [0, 1]), the camera's rotation, image position
    and scale of the model origin, and the illumination. Non-finite coefficients are sanitised first."""
    coefficients, _ = sanitize(coefficients.detach().float().cpu())
    boxes = boxes.detach().float().cpu()
    parts = split_coefficients(coefficients)
    camera = parts.camera
    cameras = camera_from_params(camera)  # square crops: one focal length; T = (-x, y, distance)
    translation, distance = cameras.T[:, :2] * torch.tensor([-1.0, 1.0]), cameras.T[:, 2]
    scale = focal_pixels(boxes, 1.0) * cameras.focal_length[:, 0] / distance
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + torch.stack([translation[:, 0], -translation[:, 1]], dim=1) * scale[:, None]
    weights = parts.latent[:, : num_identity + num_expression].clone()
    weights[:, :num_identity].clamp_(-MAX_IDENTITY_WEIGHT, MAX_IDENTITY_WEIGHT)
    weights[:, num_identity:].clamp_(0.0, 1.0)
    return FitState(
        coefficients=weights, rotation=pose_rotation_vector(camera), centre=centre, scale=scale,
        illumination=parts.illumination.clone(),
    )
