"""The angle between two 3-D rotations: the one measure of rotation error every evaluation uses."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def rotation_error_degrees(rotation_a: Tensor | np.ndarray, rotation_b: Tensor | np.ndarray) -> Tensor:
    """Geodesic angle in degrees between rotations ``[..., 3, 3]`` and ``[..., 3, 3]`` -> ``Tensor[...]``: the
    angle of the rotation taking ``rotation_a`` to ``rotation_b``, in [0, 180].

    Uses ``atan2(sin, cos)`` of the relative rotation, accurate near 0 and 180 degrees alike (``arccos`` of the
    trace loses half the digits near 0).
    """
    a, b = torch.as_tensor(rotation_a), torch.as_tensor(rotation_b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    relative = a.transpose(-1, -2) @ b
    cos = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    skew = relative - relative.transpose(-1, -2)
    sin = torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], dim=-1).norm(dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))
