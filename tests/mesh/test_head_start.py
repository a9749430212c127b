"""The detector's mesh coefficients as a fit's start: the exact inverse of the fit's own coefficients."""

import math

import numpy as np
import pytest
import torch

from retinaface.mesh.head_start import state_from_coefficients
from retinaface.mesh.photo_fit import FitState, fit_faces, project, renderer_coefficients, focal_pixels
from retinaface.mesh.prior import load_prior


@pytest.fixture(scope="module")
def prior():
    return load_prior()


def _random_state(count: int, prior, generator: torch.Generator, boxes: torch.Tensor) -> FitState:
    sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    weights = torch.cat([torch.randn(count, prior.num_identity, generator=generator),
                         torch.rand(count, prior.num_expression, generator=generator)], dim=1)
    return FitState(
        coefficients=weights,
        rotation=0.4 * (torch.rand(count, 3, generator=generator) - 0.5),
        centre=centres + 0.1 * sizes[:, None] * torch.randn(count, 2, generator=generator),
        scale=sizes / 2 * (0.8 + 0.4 * torch.rand(count, generator=generator)),
        illumination=torch.randn(count, 9, generator=generator),
    )


def test_state_from_coefficients_inverts_the_fits_coefficients(prior):
    generator = torch.Generator().manual_seed(3)
    boxes = torch.tensor([[10.0, 20.0, 110.0, 140.0], [300.0, 50.0, 340.0, 95.0], [0.0, 0.0, 64.0, 64.0]])
    state = _random_state(3, prior, generator, boxes)

    class Fits:  # renderer_coefficients reads the state and the rotation matrix
        pass

    fits = Fits()
    fits.state = state
    from pytorch3d.transforms import so3_exp_map

    fits.rotation = so3_exp_map(state.rotation)
    coefficients = renderer_coefficients(fits, boxes)
    back = state_from_coefficients(coefficients, boxes, num_identity=prior.num_identity, num_expression=prior.num_expression)
    torch.testing.assert_close(back.centre, state.centre, atol=1e-3, rtol=0)
    torch.testing.assert_close(back.scale, state.scale, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(back.rotation, state.rotation, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.coefficients, state.coefficients)
    torch.testing.assert_close(back.illumination, state.illumination)


def test_the_origin_lands_where_the_renderer_camera_puts_it(prior):
    """Truth from the renderer's own camera (PyTorch3D): the model origin's pixel and the pixel size of one
    template unit there, for a head camera with translation, distance and focal changes."""
    from retinaface.mesh.branch import place_in_boxes

    boxes = torch.tensor([[40.0, 30.0, 140.0, 150.0]])
    camera = torch.tensor([[0.3, -0.2, 0.25, 0.0, 0.0, 0.0, -0.15]])
    coefficients = torch.cat([torch.zeros(1, 128), camera, torch.zeros(1, 9)], dim=1)
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]]])
    placed = place_in_boxes(points, camera, boxes)[0, :, :2]
    state = state_from_coefficients(coefficients, boxes, num_identity=prior.num_identity, num_expression=prior.num_expression)
    torch.testing.assert_close(state.centre[0], placed[0], atol=1e-3, rtol=0)
    # 0.01 units along the model's x axis (a frontal face) moves that many pixels per unit at the origin
    measured = (placed[1, 0] - placed[0, 0]) / 0.01
    assert float(measured) == pytest.approx(float(state.scale[0]), rel=2e-3)


def test_a_start_is_kept_with_zero_steps_and_moves_with_steps(prior):
    generator = torch.Generator().manual_seed(5)
    boxes = torch.tensor([[20.0, 20.0, 84.0, 90.0]])
    state = _random_state(1, prior, generator, boxes)
    image = torch.rand(3, 120, 110, generator=generator)
    landmarks = torch.tensor([[[40.0, 45.0], [64.0, 45.0], [52.0, 58.0], [43.0, 72.0], [61.0, 72.0]]])
    kept = fit_faces(image, boxes, landmarks, start=state, steps=0)
    torch.testing.assert_close(kept.state.rotation, state.rotation)
    torch.testing.assert_close(kept.state.centre, state.centre)
    # the vertices are the start's shape seen by the fit's camera: independent projection of the prior shape
    from pytorch3d.transforms import so3_exp_map

    shape = prior.shapes(state.coefficients)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    expected = project(shape, so3_exp_map(state.rotation), state.centre, state.scale, focal_pixels(boxes, 10.0), centre)
    torch.testing.assert_close(kept.vertices[..., :2], expected[..., :2], atol=1e-3, rtol=0)
    moved = fit_faces(image, boxes, landmarks, start=state, steps=5)
    assert not torch.allclose(moved.state.rotation, state.rotation)
    with pytest.raises(ValueError, match="not both"):
        fit_faces(image, boxes, landmarks, start=state, init=state)


def test_pose_of_a_start_is_the_heads_rotation(prior):
    camera = torch.tensor([[0.0, 0.0, 0.0, 0.2, -0.5, 0.1, 0.0]])
    coefficients = torch.cat([torch.zeros(1, 128), camera, torch.zeros(1, 9)], dim=1)
    state = state_from_coefficients(coefficients, torch.tensor([[0.0, 0.0, 50.0, 50.0]]),
                                    num_identity=prior.num_identity, num_expression=prior.num_expression)
    expected = (math.pi / 2) * np.tanh(np.array([0.2, -0.5, 0.1]))
    np.testing.assert_allclose(state.rotation[0].numpy(), expected, atol=1e-6)
