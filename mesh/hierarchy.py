"""Mesh down/up-sampling hierarchy for the graph-convolution decoder (CoMA-style).

Each coarser level comes from quadric decimation (``fast_simplification``) of the finer one; replaying
the recorded edge collapses gives, for every fine vertex, the coarse vertex it merged into.
- down-sampling ``D`` (coarse x fine): the mean of the fine vertices that merged into each coarse vertex;
- up-sampling ``U`` (fine x coarse): barycentric coordinates of each fine vertex on its nearest coarse
  triangle, so a coarse mesh is interpolated smoothly back onto the fine one.
The result for the template is cached in ``mesh/assets/hierarchy.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.resources import package_path

HIERARCHY_PATH = package_path(__package__, "assets/hierarchy.npz")
DEFAULT_TARGET_FACES = (220, 48)  # about 468 -> 120 -> 30 vertices


def face_edges(faces: Tensor) -> Tensor:
    """Undirected edges of a triangle mesh ``Tensor[F, 3]`` as ``Tensor[2, E]`` (both directions, unique)."""
    f = faces.long()
    pairs = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    pairs = torch.cat([pairs, pairs.flip(1)])
    return torch.unique(pairs, dim=0).T.contiguous()


@dataclass
class MeshLevel:
    """One level: vertex positions ``ndarray[V, 3]``, triangles ``ndarray[F, 3]``."""

    vertices: np.ndarray
    faces: np.ndarray

    def edge_index(self) -> Tensor:
        """Undirected graph edges as ``Tensor[2, E]`` (both directions), for torch-geometric."""
        return face_edges(torch.from_numpy(self.faces))


@dataclass
class MeshHierarchy:
    """Levels fine to coarse, and between consecutive levels ``down[i]`` (level i+1 x level i) and
    ``up[i]`` (level i x level i+1), as dense ``ndarray`` (the meshes are small)."""

    levels: list[MeshLevel]
    down: list[np.ndarray]
    up: list[np.ndarray]

    def save(self, path: str | Path) -> None:
        arrays = {}
        for i, level in enumerate(self.levels):
            arrays[f"vertices_{i}"], arrays[f"faces_{i}"] = level.vertices, level.faces
        for i, (d, u) in enumerate(zip(self.down, self.up)):
            arrays[f"down_{i}"], arrays[f"up_{i}"] = d, u
        np.savez_compressed(path, num_levels=len(self.levels), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "MeshHierarchy":
        with np.load(path) as data:
            n = int(data["num_levels"])
            levels = [MeshLevel(data[f"vertices_{i}"], data[f"faces_{i}"]) for i in range(n)]
            return cls(levels, [data[f"down_{i}"] for i in range(n - 1)], [data[f"up_{i}"] for i in range(n - 1)])


def barycentric_on_nearest_triangle(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """For each point ``ndarray[P, 3]``, weights ``ndarray[P, V]`` over ``vertices``: the barycentric
    coordinates of its closest point on the nearest triangle of ``faces``."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))  # [F, 3] each
    ab, ac = b - a, c - a
    # Closest point on each triangle: project onto the plane, clamp barycentrics by re-projecting onto edges.
    ap = points[:, None, :] - a[None]  # [P, F, 3]
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    d20, d21 = (ap * ab).sum(-1), (ap * ac).sum(-1)
    denom = np.maximum(d00 * d11 - d01 * d01, 1e-12)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    bary = np.stack([1 - v - w, v, w], axis=-1).clip(0, None)
    bary /= bary.sum(-1, keepdims=True)
    closest = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    nearest = np.linalg.norm(points[:, None] - closest, axis=-1).argmin(axis=1)
    weights = np.zeros((len(points), len(vertices)))
    rows = np.arange(len(points))
    for k in range(3):
        np.add.at(weights, (rows, faces[nearest, k]), bary[rows, nearest, k])
    return weights


def build_hierarchy(vertices: np.ndarray, faces: np.ndarray, target_faces=DEFAULT_TARGET_FACES) -> MeshHierarchy:
    """Decimate ``vertices``/``faces`` to each ``target_faces`` count in turn and derive the operators."""
    import fast_simplification

    levels = [MeshLevel(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))]
    down, up = [], []
    for target in target_faces:
        fine = levels[-1]
        _, _, collapses = fast_simplification.simplify(
            fine.vertices, fine.faces, target_count=target, return_collapses=True
        )
        coarse_vertices, coarse_faces, mapping = fast_simplification.replay_simplification(
            fine.vertices.astype(np.float32), fine.faces.astype(np.int32), collapses
        )
        coarse = MeshLevel(np.asarray(coarse_vertices, np.float64), np.asarray(coarse_faces, np.int64))
        d = np.zeros((len(coarse.vertices), len(fine.vertices)))
        d[mapping, np.arange(len(fine.vertices))] = 1.0
        d /= d.sum(axis=1, keepdims=True)
        down.append(d)
        up.append(barycentric_on_nearest_triangle(fine.vertices, coarse.vertices, coarse.faces))
        levels.append(coarse)
    return MeshHierarchy(levels, down, up)


@lru_cache(maxsize=1)
def load_hierarchy(path: str | Path = HIERARCHY_PATH) -> MeshHierarchy:
    """The template's cached hierarchy (``python -m mesh.hierarchy`` rebuilds it)."""
    return MeshHierarchy.load(path)


if __name__ == "__main__":
    from .template import load_template

    template = load_template()
    hierarchy = build_hierarchy(template.vertices.numpy(), template.faces.numpy())
    hierarchy.save(HIERARCHY_PATH)
    print("levels:", [len(level.vertices) for level in hierarchy.levels], "->", HIERARCHY_PATH)
