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


def chebyshev_operator(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The scaled Laplacian ``ChebConv`` propagates with (symmetric normalisation, lambda_max = 2):
    ``-D^-1/2 A D^-1/2``, as padded neighbour lists: ``index`` ``Tensor[V, M]`` (int64) and ``weight``
    ``Tensor[V, M]`` (0 for padding), rows indexed by the receiving vertex."""
    degree = torch.zeros(num_nodes).index_add_(0, edge_index[0], torch.ones(edge_index.shape[1]))
    inv_sqrt = degree.clamp(min=1).rsqrt()
    target, source = edge_index[1], edge_index[0]
    order = torch.argsort(target * num_nodes + source)
    target, source = target[order], source[order]
    counts = torch.bincount(target, minlength=num_nodes)
    slot = torch.arange(len(target)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    index = torch.zeros(num_nodes, int(counts.max()), dtype=torch.long)
    weight = torch.zeros(num_nodes, int(counts.max()))
    index[target, slot] = source
    weight[target, slot] = -inv_sqrt[source] * inv_sqrt[target]
    return index, weight


def chebyshev_conv(conv: ChebConv, operator: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    """``conv(x, edges)`` for ``x`` ``Tensor[B, V, C]``, propagating by gathering each vertex's neighbours
    (same result as torch-geometric's scatter-based propagation, several times faster here with a batch)."""
    index, weight = operator

    def propagate(values: Tensor) -> Tensor:
        return (values[:, index] * weight[..., None]).sum(2)

    previous, current = x, propagate(x)
    out = conv.lins[0](previous)
    if len(conv.lins) > 1:
        out = out + conv.lins[1](current)
    for lin in conv.lins[2:]:
        previous, current = current, 2.0 * propagate(current) - previous
        out = out + lin(current)
    return out if conv.bias is None else out + conv.bias


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
            index, weight = chebyshev_operator(hierarchy.levels[level].edge_index(), hierarchy.levels[level].vertices.shape[0])
            self.register_buffer(f"neighbours_{step}", index, persistent=False)
            self.register_buffer(f"neighbour_weights_{step}", weight, persistent=False)
            self.convs.append(ChebConv(channels[step], channels[step + 1], K=chebyshev_order, bias=False))
        self.output = ChebConv(channels[-1], 6, K=chebyshev_order, bias=False)
        self.activation = nn.ELU()
        nn.init.normal_(self.fc.weight, std=0.02)
        for conv in [*self.convs, self.output]:
            for lin in conv.lins:
                nn.init.normal_(lin.weight, std=0.05)

    def _operator(self, step: int) -> tuple[Tensor, Tensor]:
        return getattr(self, f"neighbours_{step}"), getattr(self, f"neighbour_weights_{step}")

    def forward(self, latent: Tensor) -> DecodedMesh:
        """``latent`` ``Tensor[B, latent_dim]`` -> :class:`DecodedMesh` with ``V = 468`` vertices."""
        x = self.fc(latent).view(latent.shape[0], self.coarsest, -1)
        for step, conv in enumerate(self.convs):
            x = getattr(self, f"up_{step}") @ x
            x = self.activation(chebyshev_conv(conv, self._operator(step), x))
        out = chebyshev_conv(self.output, self._operator(len(self.convs) - 1), x)
        vertices = self.template_vertices + self.offset_scale * out[..., :3]
        colours = (self.template_colours + out[..., 3:]).clamp(0.0, 1.0)
        return DecodedMesh(vertices, colours)


# Pre-training on the face-shape prior (mesh/prior.py). The latent's first I + E entries are the prior's
# identity (~N(0, 1)) and expression (in [0, 1]) coefficients, in that order; the remaining entries are
# unused and left at zero. The decoder's base shape is the prior's mean, so a zero latent is the mean face.
PRIOR_DECODER_PATH = "assets/prior_decoder.safetensors"


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit area-weighted vertex normals ``Tensor[B, V, 3]`` of meshes ``Tensor[B, V, 3]`` with ``faces`` ``Tensor[F, 3]``."""
    a, b, c = (vertices[:, faces[:, k]] for k in range(3))
    face_normals = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices).index_add_(1, faces.reshape(-1), face_normals.repeat_interleave(3, dim=1))
    return torch.nn.functional.normalize(normals, dim=-1)


def prior_decoder_loss(decoder: "MeshDecoder", latent: Tensor, target: Tensor, faces: Tensor, colours: Tensor, *, normal_weight: float = 0.1) -> Tensor:
    """L1 on vertices + ``normal_weight`` * L1 on vertex normals + L1 on colours against ``colours``
    ``Tensor[V, 3]`` (the prior has no texture: colours stay the template's)."""
    decoded = decoder(latent)
    loss = (decoded.vertices - target).abs().sum(-1).mean()
    loss = loss + normal_weight * (vertex_normals(decoded.vertices, faces) - vertex_normals(target, faces)).abs().sum(-1).mean()
    return loss + (decoded.colours - colours).abs().sum(-1).mean()


def pretrain_on_prior(
    decoder: "MeshDecoder",
    prior,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    log_every: int = 100,
    log=print,
    callback=None,
) -> list[float]:
    """Train ``decoder`` to reproduce faces sampled from ``prior`` (:class:`~.prior.FacePrior`), with Adam and a
    cosine learning-rate decay; returns the loss of every step. The base shape buffer is set to the prior mean.
    ``callback(step)``, if given, runs after every ``log_every`` steps (e.g. to save a snapshot)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    decoder.template_vertices.copy_(prior.mean)
    faces = load_template().faces
    colours = decoder.template_colours
    optimiser = torch.optim.Adam(decoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    losses = []
    latent_dim = decoder.fc.in_features
    for step in range(steps):
        coefficients = prior.sample(batch_size, generator)
        latent = torch.nn.functional.pad(coefficients, (0, latent_dim - coefficients.shape[1]))
        loss = prior_decoder_loss(decoder, latent, prior.shapes(coefficients), faces, colours)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            log(f"step {step} loss {loss.item():.5f} lr {schedule.get_last_lr()[0]:.2e}")
            if callback is not None:
                callback(step)
    return losses


@torch.no_grad()
def prior_reconstruction_error(decoder: "MeshDecoder", prior, *, count: int = 256, seed: int = 12345) -> dict[str, float]:
    """Vertex error of ``decoder`` on ``count`` faces sampled from ``prior`` with ``seed`` (held out when it
    differs from the training seed): mean and 95th-percentile per-vertex distance, and the worst face's mean,
    in template units and in % of the face size (the mean shape's height, chin to forehead)."""
    coefficients = prior.sample(count, torch.Generator().manual_seed(seed))
    latent = torch.nn.functional.pad(coefficients, (0, decoder.fc.in_features - coefficients.shape[1]))
    distance = (decoder(latent).vertices - prior.shapes(coefficients)).norm(dim=-1)
    face_size = float(prior.mean[:, 1].max() - prior.mean[:, 1].min())
    figures = {
        "mean": float(distance.mean()),
        "p95": float(distance.flatten().quantile(0.95)),
        "worst_face_mean": float(distance.mean(dim=1).max()),
    }
    return {**figures, **{f"{k}_percent_of_face": 100 * v / face_size for k, v in figures.items()}, "face_size": face_size}


def load_prior_decoder(decoder: "MeshDecoder", path=None) -> "MeshDecoder":
    """Load the shipped prior-pre-trained weights (``mesh/assets/prior_decoder.safetensors``, written by
    ``scripts/pretrain_mesh_decoder.py``) into ``decoder`` (default architecture) and return it."""
    from safetensors.torch import load_file

    from ..utils.resources import package_path

    state = load_file(str(path or package_path(__package__, PRIOR_DECODER_PATH)))
    decoder.load_state_dict(state)
    return decoder
