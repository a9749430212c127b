"""Writing a face's fitted mesh as a standard 3-D file (PLY with vertex colours) that MeshLab and Blender open.

The file holds the person's fitted shape and expression in the face model's own frame, without the head
pose (the JSON has the pose): centimetres, origin at the head's centre, x towards the image's right for a
face looking at the camera, y up, z out of the face towards the viewer. Vertex colours are the fitted
albedo; the 852 triangles are the template's (mediapipe face-mesh topology, eye and mouth openings left open).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..outputs.atomic import atomic_write
from .face import Face


def face_mesh_centimetres(face: Face) -> np.ndarray:
    """``ndarray[468, 3]``: ``face.mesh_model_vertices`` in centimetres (module docstring's frame)."""
    from ..mesh.prior import load_prior

    if face.mesh_model_vertices is None:
        raise ValueError("the face has no fitted mesh (detect with mesh=True / --mesh)")
    return np.asarray(face.mesh_model_vertices, np.float64) * load_prior().centimetres_per_unit


def write_face_mesh(path: str | os.PathLike, face: Face) -> Path:
    """Write ``face``'s fitted mesh to ``path`` (``.ply``), atomically, and return the path."""
    from pytorch3d.io import IO
    from pytorch3d.renderer import TexturesVertex
    from pytorch3d.structures import Meshes

    from ..mesh.template import load_template

    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"mesh files are written as .ply, got {path.name}")
    vertices = torch.from_numpy(face_mesh_centimetres(face)).float()
    colours = torch.from_numpy(np.clip(np.asarray(face.mesh_colours, np.float32), 0, 1)) if face.mesh_colours is not None else None
    mesh = Meshes([vertices], [load_template().faces.long()], textures=None if colours is None else TexturesVertex([colours]))
    atomic_write(path, lambda tmp: IO().save_mesh(mesh, tmp, binary=False, colors_as_uint8=True))
    return path
