"""Where mesh fits start (--mesh-init): the detector's own mesh (its RoI head) or the PnP-posed mean face."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retinaface import Detector
from retinaface.errors import WeightsError
from retinaface.inference.stages import MeshFitter


@pytest.fixture(scope="module")
def plain_faces(astronaut_image):
    return Detector.from_pretrained("mobilenet0.25", device="cpu", optimize=False)(astronaut_image)


def test_the_released_head_says_something_about_the_astronaut(plain_faces):
    (face,) = plain_faces
    camera = face.mesh_coefficients[128:135]
    assert np.abs(face.mesh_coefficients).sum() > 1  # a trained head, not the zero template
    # the astronaut looks at the camera, turned a little to the image's left: the head's rotation is small
    rotation = (math.pi / 2) * np.tanh(camera[3:6])
    assert np.degrees(np.linalg.norm(rotation)) < 30


def test_head_start_with_zero_steps_is_the_heads_own_mesh(astronaut_image, plain_faces):
    """No PnP and no fitting: the mesh has the head's rotation, and its vertices are the head's shape placed
    by the head's camera (independently: the renderer's camera through place_in_boxes)."""
    from retinaface.mesh.branch import place_in_boxes
    from retinaface.mesh.prior import load_prior
    from pytorch3d.transforms import so3_exp_map

    (plain,) = plain_faces
    detector = Detector.from_pretrained("mobilenet0.25", device="cpu", optimize=False, mesh=True, mesh_start="head", mesh_steps=0,
                                        refine_landmarks=False)
    (face,) = detector(astronaut_image)
    np.testing.assert_allclose(face.box, plain.box, atol=1e-3)
    head = torch.from_numpy(plain.mesh_coefficients[None].astype(np.float32))
    expected_rotation = (math.pi / 2) * torch.tanh(head[:, 131:134])
    np.testing.assert_allclose(face.mesh_state.rotation.numpy(), expected_rotation.numpy(), atol=1e-5)
    prior = load_prior()
    shape = prior.shapes(torch.cat([head[:, : prior.num_identity].clamp(-4, 4), head[:, prior.num_identity: prior.num_coefficients].clamp(0, 1)], 1))
    placed = place_in_boxes(shape, head[:, 128:135], torch.from_numpy(plain.box[None].astype(np.float32)))[0, :, :2].numpy()
    size = math.sqrt((plain.box[2] - plain.box[0]) * (plain.box[3] - plain.box[1]))
    # the fit's camera has a longer focal length than the head's (a farther camera): the same view up to
    # perspective, which moves points off the face's plane (nose tip, face sides) by a few % of its size
    offsets = np.linalg.norm(face.mesh_vertices[:, :2] - placed, axis=1) / size
    assert np.median(offsets) < 0.015 and offsets.max() < 0.05
    # and it is not the PnP start's mesh
    pnp = Detector.from_pretrained("mobilenet0.25", device="cpu", optimize=False, mesh=True, mesh_start="pnp", mesh_steps=0,
                                   refine_landmarks=False)(astronaut_image)[0]
    assert np.abs(pnp.mesh_vertices[:, :2] - face.mesh_vertices[:, :2]).mean() / size > 0.005
    assert not np.allclose(so3_exp_map(face.mesh_state.rotation).numpy(), so3_exp_map(pnp.mesh_state.rotation).numpy(), atol=1e-3)


def test_faces_without_a_head_prediction_start_from_pnp(astronaut_image, plain_faces):
    (plain,) = plain_faces
    silent = plain.transformed(np.array([[-1.0, 0, astronaut_image.shape[1]], [0, 1, 0]]), plain.image_size)
    silent = silent.transformed(np.array([[-1.0, 0, astronaut_image.shape[1]], [0, 1, 0]]), plain.image_size)  # mirrored back
    assert np.all(silent.mesh_coefficients == 0) and np.allclose(silent.box, plain.box)
    head = MeshFitter(steps=0, start="head")(astronaut_image, [silent])[0]
    pnp = MeshFitter(steps=0, start="pnp")(astronaut_image, [plain.transformed(np.eye(2, 3), plain.image_size)])[0]
    np.testing.assert_allclose(head.mesh_vertices, pnp.mesh_vertices, atol=1e-4)


def test_only_a_pure_scaling_keeps_the_heads_coefficients(plain_faces):
    (face,) = plain_faces
    size = face.image_size
    assert np.array_equal(face.transformed(np.array([[2.0, 0, 3], [0, 2.0, -1]]), size).mesh_coefficients, face.mesh_coefficients)
    for matrix in ([[0.0, -1, 500], [1, 0, 0]], [[-1.0, 0, 500], [0, 1, 0]], [[2.0, 0, 0], [0, 1.0, 0]]):
        assert np.all(face.transformed(np.array(matrix), size).mesh_coefficients == 0)


def test_head_start_needs_weights_with_the_roi_head(tmp_path):
    from retinaface.config import config_to_dict
    from retinaface.model.weights import load_model

    released = load_model("mobilenet0.25", mesh=False)
    stored = config_to_dict(released.config)
    stored["mesh_head"] = "anchor"
    path = tmp_path / "anchor.pt"
    from retinaface.model.retinaface import build_retinaface
    from retinaface.config import ModelConfig

    anchor = build_retinaface(ModelConfig.from_stored(stored))
    torch.save({"model": anchor.state_dict(), "model_config": stored}, path)
    with pytest.raises(WeightsError, match="RoI mesh head"):
        Detector.from_pretrained(str(path), device="cpu", mesh=True, mesh_start="head")
    with pytest.raises(WeightsError, match="mesh_start"):
        Detector.from_pretrained("mobilenet0.25", device="cpu", mesh=True, mesh_start="sideways")
