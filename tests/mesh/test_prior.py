import numpy as np
import pytest
import torch

from retinaface.mesh.prior import MULTIPIE68_TO_TEMPLATE, build_prior_from_ict, load_prior, similarity
from retinaface.mesh.template import load_template

from ..conftest import ICT_FACE_MODEL, shared_file

# Multi-PIE mirror partner of each of the 68 points
MIRROR68 = (
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(20, 3))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    target = 2.5 * source @ rotation.T + np.array([1.0, -2.0, 0.5])
    scale, r, t = similarity(source, target)
    assert scale == pytest.approx(2.5) and np.allclose(r, rotation) and np.allclose(t, [1.0, -2.0, 0.5])


def test_landmark_correspondences_are_mirror_symmetric_on_the_template():
    # the template's face is nearly symmetric: each point's mirror partner sits at (-x, y, z) up to its head pose
    vertices = load_template().vertices.numpy()
    ids = np.array(MULTIPIE68_TO_TEMPLATE)
    points, partners = vertices[ids], vertices[ids[MIRROR68]] * [-1, 1, 1]
    assert np.linalg.norm(points - partners, axis=1).max() < 0.15  # 8 % of the face height
    assert len(set(MULTIPIE68_TO_TEMPLATE)) == 68


def test_shipped_prior_is_an_upright_symmetric_face_with_sane_modes():
    prior = load_prior()
    mean = prior.mean
    assert mean.shape == (468, 3) and prior.identity.shape[1:] == (468, 3) and prior.expression.shape[1:] == (468, 3)
    ids = torch.tensor(MULTIPIE68_TO_TEMPLATE)
    left, right = mean[ids[[36, 39]]].mean(0), mean[ids[[42, 45]]].mean(0)
    assert abs(float(left[1] - right[1])) < 0.02  # eyes level: upright (no roll)
    assert float(left[0] + right[0]) == pytest.approx(0.0, abs=0.06)
    assert float(mean[1, 2]) > float(mean[ids[0], 2]) + 0.5  # the nose tip is in front of the jaw corners
    # a jaw-open expression moves the chin down, not the forehead
    jaw = prior.expression[prior.expression_names.index("jawOpen")]
    assert float(jaw[152, 1]) < -0.1 and float(jaw[10].norm()) < 0.02
    # sampled faces stay faces: identity moves vertices by a few percent of the face height
    shapes = prior.shapes(prior.sample(64, torch.Generator().manual_seed(0)))
    motion = (shapes - mean).norm(dim=-1)
    assert 0.005 < float(motion.mean()) < 0.1 and torch.isfinite(shapes).all()


def test_mapping_puts_ict_landmarks_on_the_template_landmarks():
    ict_path = shared_file(ICT_FACE_MODEL)  # skipped with the path when the shared data is absent (see conftest)
    template = load_template().vertices.numpy().astype(np.float64)
    arrays = build_prior_from_ict(ict_path, template, num_identity=5, template_share=0.0)
    with np.load(ict_path) as ict:
        neutral, landmarks = ict["neutral"].astype(np.float64), ict["landmarks_68"]
    # the mapped mean at the template's landmark vertices against ICT's own landmarks, in the same frame
    ids = np.array(MULTIPIE68_TO_TEMPLATE)[17:]
    scale, rotation, shift = similarity(neutral[landmarks[17:]], arrays["mean"][ids].astype(np.float64))
    assert scale == pytest.approx(1 / float(arrays["centimetres_per_unit"]), rel=1e-2)  # closest points sit near, not on, the landmark vertices
    assert np.allclose(rotation, np.eye(3), atol=1e-2)  # ICT is only scaled and shifted: upright
    error = np.linalg.norm(scale * neutral[landmarks[17:]] + shift - arrays["mean"][ids], axis=1)
    assert np.median(error) < 0.01 and error.max() < 0.05  # template units (the face is ~2 tall)
    assert np.median(arrays["surface_distance"]) < 0.02
