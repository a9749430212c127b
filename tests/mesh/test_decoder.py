import pytest
import torch

from retinaface.mesh.decoder import MeshDecoder


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    return MeshDecoder()


def test_zero_coefficients_give_exactly_the_template(decoder):
    out = decoder(torch.zeros(3, 128))
    assert out.vertices.shape == (3, 468, 3) and out.colours.shape == (3, 468, 3)
    assert torch.equal(out.vertices, decoder.template_vertices.expand(3, -1, -1))
    assert torch.equal(out.colours, decoder.template_colours.expand(3, -1, -1))


def test_coefficients_move_the_mesh_smoothly_and_carry_gradients(decoder):
    z = torch.randn(2, 128, requires_grad=True)
    out = decoder(z)
    offsets = out.vertices - decoder.template_vertices
    assert offsets.abs().mean() > 1e-4
    # graph convolutions give neighbouring vertices similar offsets: edges stretch far less than offsets move
    edges = decoder.edges_1
    edge_change = (offsets[:, edges[0]] - offsets[:, edges[1]]).norm(dim=-1).mean()
    assert edge_change < offsets.norm(dim=-1).mean()
    (out.vertices.square().sum() + out.colours.sum()).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert decoder(z[:1]).vertices.allclose(out.vertices[:1], atol=1e-5)  # batch-independent


def test_chebyshev_order_is_configurable():
    small = MeshDecoder(chebyshev_order=2, channels=(16, 8, 8))
    assert small.output.lins.__len__() == 2
    with pytest.raises(ValueError, match="one width per level"):
        MeshDecoder(channels=(16, 8))
