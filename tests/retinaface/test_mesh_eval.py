"""Mesh-head evaluation: angle maths and box matching on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from retinaface.evaluation.mesh_eval import direction_error_degrees, head_rotations, light_directions, match_boxes, rotation_error_degrees


def _about_z(degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _about_x(degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)


@pytest.mark.parametrize("angle", [0.0, 0.5, 10.0, 37.0, 90.0, 135.0, 179.5, 180.0])
def test_rotation_error_is_the_relative_angle(angle):
    base = _about_x(25.0) @ _about_z(-40.0)  # any common frame: the error only depends on the relative rotation
    error = rotation_error_degrees(base[None], (base @ _about_z(angle))[None])
    assert error.item() == pytest.approx(angle, abs=1e-6)
    assert rotation_error_degrees((base @ _about_x(angle))[None], base[None]).item() == pytest.approx(angle, abs=1e-6)


def test_rotation_error_of_two_quarter_turns_about_different_axes():
    # Rz(90)^T Rx(90) is a rotation by 120 degrees (about (1, 1, 1) / sqrt 3 up to sign)
    assert rotation_error_degrees(_about_z(90)[None], _about_x(90)[None]).item() == pytest.approx(120.0, abs=1e-6)


def test_direction_error_ignores_length():
    a = torch.tensor([[0.0, 0.0, 6.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 3.0, 3.0], [0.0, 5.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    assert direction_error_degrees(a, b).tolist() == pytest.approx([45.0, 90.0, 0.0, 180.0], abs=1e-5)


def test_coefficient_decoding_matches_the_renderer_parameterisation():
    coefficients = torch.zeros(2, 144)
    # yaw coefficient r: rotation angle (pi / 2) tanh(r) about y; atanh(1/3) gives 30 degrees
    coefficients[1, 128 + 4] = math.atanh(1 / 3)
    rotations = head_rotations(coefficients)
    assert torch.allclose(rotations[0], torch.eye(3), atol=1e-6)
    assert rotation_error_degrees(rotations[:1], rotations[1:]).item() == pytest.approx(30.0, abs=1e-4)
    # zero illumination: light straight in front of the face (0, 0, 6); x coefficient atanh(0.5) moves it to (2, 0, 6)
    coefficients[1, 128 + 7] = math.atanh(0.5)
    lights = light_directions(coefficients)
    assert torch.allclose(lights[0], torch.tensor([0.0, 0.0, 6.0]))
    assert direction_error_degrees(lights[:1], lights[1:]).item() == pytest.approx(math.degrees(math.atan2(2, 6)), abs=1e-4)


def test_matching_is_one_to_one_and_thresholded():
    truth = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    predicted = torch.tensor([
        [21.0, 0.0, 31.0, 10.0],  # truth 1 (IoU 9/11)
        [0.0, 0.0, 10.0, 9.0],  # truth 0 (IoU 0.9)
        [0.0, 0.0, 10.0, 10.0],  # truth 0 exactly: wins it, the box above is left over
        [55.0, 55.0, 65.0, 65.0],  # truth 2 with IoU 25/175 < 0.5: no match
    ])
    predicted_index, truth_index = match_boxes(predicted, truth, iou_threshold=0.5)
    assert truth_index.tolist() == [0, 1] and predicted_index.tolist() == [2, 0]
    empty_p, empty_t = match_boxes(torch.zeros(0, 4), truth)
    assert empty_p.numel() == 0 and empty_t.numel() == 0
    assert match_boxes(predicted, torch.zeros(0, 4))[0].numel() == 0


def test_shape_is_scored_against_the_true_latent_in_percent_of_the_face_height():
    """With shape truth, the head's latent is decoded by the model's decoder (new models: the prior-trained
    one, as the synthetic faces were) and compared with the true face: the truth itself scores 0, the zero
    latent the mean face's error, a face half-way between the two half of it (the prior is linear and the
    decoder nearly so). Without shape truth no shape keys are reported."""
    from retinaface.config import model_preset
    from retinaface.evaluation.mesh_eval import face_errors, face_height, format_summary, true_shapes, vertex_error_percent
    from retinaface.mesh.prior import load_prior
    from retinaface.model.retinaface import build_retinaface

    model = build_retinaface(model_preset("mobilenet0.25")).eval()
    prior = load_prior()
    truth = torch.zeros(3, 144)
    truth[:, : prior.num_coefficients] = prior.sample(3, torch.Generator().manual_seed(0))
    truth[:, 128 + 4] = 0.3  # some yaw: the shape is compared without pose
    image, boxes = torch.rand(3, 80, 80), torch.tensor([[10.0, 10.0, 50.0, 60.0]] * 3)
    exact = face_errors(model, image, boxes, truth, truth, shape_truth=True)
    assert max(exact.shape) < 1e-3 and min(exact.shape_baseline) > 0.5
    half = truth.clone()
    half[:, :128] /= 2
    halfway = face_errors(model, image, boxes, half, truth, shape_truth=True)
    for got, mean_face in zip(halfway.shape, exact.shape_baseline):
        assert got == pytest.approx(mean_face / 2, rel=0.1)
    summary = halfway.summary()
    assert summary["mesh_shape_pct_zero"] == pytest.approx(float(torch.tensor(exact.shape_baseline).median()))
    assert "shape" in format_summary(summary) and "mesh_shape_pct" not in face_errors(model, image, boxes, truth, truth).summary()
    # the measure itself: a face moved by 1 % of the face height along x is 1 % off
    faces = true_shapes(truth[:1])
    moved = faces + torch.tensor([0.01 * face_height(), 0.0, 0.0])
    assert vertex_error_percent(moved, faces).item() == pytest.approx(1.0, abs=1e-4)
