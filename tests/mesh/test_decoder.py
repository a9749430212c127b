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


def test_gathered_chebyshev_propagation_matches_torch_geometric(decoder):
    from retinaface.mesh.decoder import chebyshev_conv

    torch.manual_seed(1)
    fine, coarse = torch.randn(3, 468, 16), torch.randn(3, 122, 64)
    assert torch.allclose(chebyshev_conv(decoder.output, decoder._operator(1), fine), decoder.output(fine, decoder.edges_1), atol=1e-5)
    assert torch.allclose(chebyshev_conv(decoder.convs[0], decoder._operator(0), coarse), decoder.convs[0](coarse, decoder.edges_0), atol=1e-5)


def test_prior_decoder_reproduces_held_out_prior_faces():
    from retinaface.mesh.decoder import load_prior_decoder, prior_reconstruction_error
    from retinaface.mesh.prior import load_prior

    prior = load_prior()
    trained = load_prior_decoder(MeshDecoder()).eval()
    with torch.no_grad():
        assert torch.equal(trained(torch.zeros(1, 128)).vertices[0], prior.mean)  # zero latent = the mean face
    error = prior_reconstruction_error(trained, prior, count=64, seed=777)  # the script trains with seed 0
    untrained = prior_reconstruction_error(MeshDecoder(), prior, count=64, seed=777)
    assert error["mean_percent_of_face"] < 0.6 and error["p95_percent_of_face"] < 1.5
    assert error["mean"] < 0.5 * untrained["mean"]


def test_released_weights_get_the_prior_decoder(tmp_path):
    """Converted weights carry an untrained decoder (the published model has none); loading them must give
    the one trained on the face-shape prior: checked by what it decodes, against the prior's own mean and
    sampled faces. The released file is such a file with the prior decoder and a trained mesh head."""
    from safetensors.torch import save_file

    from retinaface.mesh.decoder import prior_reconstruction_error
    from retinaface.mesh.prior import load_prior
    from retinaface.model.retinaface import build_retinaface
    from retinaface.model.weights import load_model, read_safetensors, resolve_weights

    prior = load_prior()
    released = load_model("mobilenet0.25", mesh=True).mesh_branch.decoder
    with torch.no_grad():
        assert torch.allclose(released(torch.zeros(1, 128)).vertices[0], prior.mean, atol=1e-6)  # zero latent = the mean face
    error = prior_reconstruction_error(released, prior, count=64, seed=777)
    assert error["mean_percent_of_face"] < 0.6 and error["p95_percent_of_face"] < 1.5
    # a converted file stores a randomly drawn decoder, which would not do: the loader replaces it
    tensors, metadata = read_safetensors(resolve_weights("mobilenet0.25"))
    untrained = build_retinaface(load_model("mobilenet0.25", mesh=False).config, prior_decoder=False).mesh_branch.decoder
    stored = {**tensors, **{f"mesh_branch.decoder.{k}": v for k, v in untrained.state_dict().items()}}
    assert prior_reconstruction_error(untrained, prior, count=64, seed=777)["mean"] > 2 * error["mean"]
    converted = tmp_path / "converted.safetensors"
    save_file({k: v.contiguous() for k, v in stored.items()}, str(converted), metadata=metadata)
    loaded = load_model(converted, mesh=True).mesh_branch.decoder
    assert prior_reconstruction_error(loaded, prior, count=64, seed=777)["mean"] == pytest.approx(error["mean"], rel=1e-5)


