"""Graph-convolution decoder: 128 shape/texture coefficients -> coloured face mesh (CoMA-style)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch_geometric.nn import ChebConv

from .coefficients import LATENT_DIM
from .hierarchy import MeshHierarchy, load_hierarchy
from .template import FaceTemplate, load_template


class DecodedMesh(NamedTuple):
    """``vertices`` ``Tensor[B, V, 3]`` in template model space; ``colours`` ``Tensor[B, V, 3]`` RGB in [0, 1]."""

    vertices: Tensor
    colours: Tensor


class MeshDecoder(nn.Module):
    """FC to the coarsest level, then [up-sample, Chebyshev graph conv, ELU] per level, then a final
    Chebyshev conv to 6 channels: xyz offsets from the template and colour offsets from its colours.

    No layer has a bias and ELU(0) = 0, so zero coefficients give exactly the template shape and colours.
    ``channels`` lists the feature widths from the coarsest level to the finest.
    """

    def __init__(
        self,
        *,
        template: FaceTemplate | None = None,
        hierarchy: MeshHierarchy | None = None,
        latent_dim: int = LATENT_DIM,
        channels: tuple[int, ...] = (64, 32, 16),
        chebyshev_order: int = 6,
        offset_scale: float = 0.1,
    ) -> None:
        super().__init__()
        template = template or load_template()
        hierarchy = hierarchy or load_hierarchy()
        num_levels = len(hierarchy.levels)
        if len(channels) != num_levels:
            raise ValueError(f"channels needs one width per level ({num_levels}), got {channels}")
        if hierarchy.levels[0].vertices.shape[0] != template.num_vertices:
            raise ValueError("the hierarchy's finest level does not match the template")
        self.offset_scale = offset_scale
        self.register_buffer("template_vertices", template.vertices.clone())
        self.register_buffer("template_colours", template.colours.clone())
        coarse_to_fine = list(range(num_levels - 1, -1, -1))
        self.coarsest = hierarchy.levels[-1].vertices.shape[0]
        self.fc = nn.Linear(latent_dim, self.coarsest * channels[0], bias=False)
        self.convs = nn.ModuleList()
        for step, level in enumerate(coarse_to_fine[1:]):
            # up[level] maps level + 1 (coarser) onto level
            self.register_buffer(f"up_{step}", torch.from_numpy(hierarchy.up[level]).float())
            self.register_buffer(f"edges_{step}", hierarchy.levels[level].edge_index())
            self.convs.append(ChebConv(channels[step], channels[step + 1], K=chebyshev_order, bias=False))
        self.output = ChebConv(channels[-1], 6, K=chebyshev_order, bias=False)
        self.activation = nn.ELU()
        nn.init.normal_(self.fc.weight, std=0.02)
        for conv in [*self.convs, self.output]:
            for lin in conv.lins:
                nn.init.normal_(lin.weight, std=0.05)

    def forward(self, latent: Tensor) -> DecodedMesh:
        """``latent`` ``Tensor[B, latent_dim]`` -> :class:`DecodedMesh` with ``V = 468`` vertices."""
        x = self.fc(latent).view(latent.shape[0], self.coarsest, -1)
        for step, conv in enumerate(self.convs):
            x = getattr(self, f"up_{step}") @ x
            x = self.activation(conv(x, getattr(self, f"edges_{step}")))
        out = self.output(x, getattr(self, f"edges_{len(self.convs) - 1}"))
        vertices = self.template_vertices + self.offset_scale * out[..., :3]
        colours = (self.template_colours + out[..., 3:]).clamp(0.0, 1.0)
        return DecodedMesh(vertices, colours)
