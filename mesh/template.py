"""The face template: a 468-vertex mesh with per-vertex colours and the detector's five landmarks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.resources import package_path

TEMPLATE_PATH = package_path(__package__, "assets/face_template.npz")


@dataclass(frozen=True)
class FaceTemplate:
    """Template face in model space (x right, y up, z towards the camera; x-y extent within [-1, 1]).

    - ``vertices``: ``Tensor[V, 3]``; ``colours``: ``Tensor[V, 3]`` RGB in [0, 1]
    - ``faces``: ``Tensor[F, 3]`` (int64, counter-clockwise seen from +z); ``hole_faces``: triangles closing
      the eye and mouth openings, for rendering
    - ``landmark_weights``: ``Tensor[5, V]``: each landmark as a weighted sum of vertices, in the detector's
      order (image-left eye, image-right eye, nose tip, image-left and image-right mouth corner)
    - ``uvs``: ``Tensor[V, 2]`` normalised coordinates in the source photo
    """

    vertices: Tensor
    faces: Tensor
    hole_faces: Tensor
    colours: Tensor
    landmark_weights: Tensor
    uvs: Tensor
    provenance: str

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def render_faces(self) -> Tensor:
        """Surface plus filled openings: ``Tensor[F + H, 3]``."""
        return torch.cat([self.faces, self.hole_faces])

    def landmarks(self, vertices: Tensor) -> Tensor:
        """Five landmarks ``Tensor[..., 5, 3]`` of meshes ``Tensor[..., V, 3]``."""
        return torch.einsum("lv,...vc->...lc", self.landmark_weights.to(vertices), vertices)


@lru_cache(maxsize=1)
def load_template(path: str | Path = TEMPLATE_PATH) -> FaceTemplate:
    """Read the committed template asset (built by ``scripts/build_face_template.py``)."""
    with np.load(path) as data:
        return FaceTemplate(
            vertices=torch.from_numpy(data["vertices"]).float(),
            faces=torch.from_numpy(data["faces"]).long(),
            hole_faces=torch.from_numpy(data["hole_faces"]).long(),
            colours=torch.from_numpy(data["colours"]).float(),
            landmark_weights=torch.from_numpy(data["landmark_weights"]).float(),
            uvs=torch.from_numpy(data["uvs"]).float(),
            provenance=str(data["provenance"]),
        )
