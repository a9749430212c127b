import math
import warnings

import pytest
import torch

from retinaface.mesh.branch import MeshBranch, MeshPixelLoss, split_coefficients
from retinaface.mesh.fitting import fit_to_renders, random_coefficients


@pytest.fixture(scope="module")
def branch():
    torch.manual_seed(0)
    return MeshBranch()


def test_analysis_by_synthesis_recovers_pose_and_light(branch):
    """Held-out random faces: fitting from zero cuts the pixel loss 5x and finds pose and light."""
    truth = random_coefficients(4, torch.Generator().manual_seed(7))
    result = fit_to_renders(branch, truth, steps=120, image_size=48)
    assert result.final_loss < result.first_loss / 5
    true_pose = split_coefficients(truth).camera
    start_pose_error = torch.rad2deg(torch.linalg.norm((math.pi / 2) * torch.tanh(true_pose[:, 3:6]), dim=1))
    assert (start_pose_error > 10).all()
    assert (result.pose_error_degrees < 5).all(), result.pose_error_degrees
    assert (result.light_error_degrees < 5).all(), result.light_error_degrees


def test_pixel_loss_is_zero_for_a_perfect_render_and_grows_with_mismatch(branch):
    truth = random_coefficients(2, torch.Generator().manual_seed(1))
    size = 56
    with torch.no_grad():
        face = branch(truth, image_size=size)[1]
    # an "image" that is exactly the render pasted over grey, face box = the whole image
    canvas = face.mask * face.image + (1 - face.mask) * 0.5
    boxes = torch.tensor([[0.0, 0.0, size, size]] * 2)
    for levels in (1, 4):
        loss = MeshPixelLoss(crop_size=size, latent_weight=0.0, smoothness_weight=0.0, levels=levels, box_weight=0.0)
        perfect = loss(branch, truth, canvas, boxes, torch.tensor([0, 1]))
        wrong = loss(branch, torch.zeros_like(truth), canvas, boxes, torch.tensor([0, 1]))
        assert perfect < 0.02 and wrong > 5 * perfect


def test_box_term_makes_a_render_smaller_than_the_face_cost(branch):
    """Uncovered pixels show the crop and cost nothing, so without the box term a face rendered too small
    for its box is not penalised for the pixels it leaves out; the box term charges the gap between the
    render's extent and the box (NDC units: 0 when the projected mesh spans the crop exactly)."""
    size = 64
    truth = torch.zeros(1, 144)
    with torch.no_grad():
        face = branch(truth, image_size=size)[1]
    rows, cols = torch.nonzero(face.mask[0, 0], as_tuple=True)
    tight = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32)  # the face box
    image = face.mask * face.image + (1 - face.mask) * 0.5
    farther = truth.clone()
    farther[:, 130] = 1.0  # distance 4 e^(2 tanh 0.5): the face shrinks to about 40% of its box
    only_box = MeshPixelLoss(crop_size=size, latent_weight=0.0, smoothness_weight=0.0, levels=1, box_weight=1.0)
    no_box = MeshPixelLoss(crop_size=size, latent_weight=0.0, smoothness_weight=0.0, levels=1, box_weight=0.0)
    index = torch.tensor([0])

    def box_part(coefficients):
        return (only_box(branch, coefficients, image, tight, index) - no_box(branch, coefficients, image, tight, index)).item()

    # the zero camera draws the template at a fixed fraction of any crop, so even at zero the extent stops
    # short of the tight box by a margin; moved away by a factor 1/r, the face's extent scales by r about
    # the crop centre, and the term (the mean gap of the four edges) grows to 1 - r (1 - margin)
    ratio = 1 / math.exp(2 * math.tanh(0.5))
    margin = box_part(truth)
    assert 0.25 < ratio < 0.45 and 0 < margin < 0.3
    assert box_part(farther) == pytest.approx(1 - ratio * (1 - margin), abs=0.05)  # perspective, pixel edges: not exact


def test_landmark_distance_measures_the_mesh_landmarks_against_the_annotation(branch):
    """Annotated landmarks where the mesh's own landmark vertices are drawn (read off the rendered vertex
    positions in the crop, a path separate from ``image_vertices``) are at distance 0; shifted by d pixels
    in a crop W pixels wide they are at 2 d / W (a crop spans 2 NDC units)."""
    size = 64
    truth = random_coefficients(2, torch.Generator().manual_seed(3))
    boxes = torch.tensor([[10.0, 20.0, 10.0 + size, 20.0 + size], [0.0, 0.0, size, size]])
    with torch.no_grad():
        _, rendered = branch(truth, image_size=size)
        ndc = branch.template.landmarks(rendered.ndc[..., :2])  # x left, y up; the crop spans [-1, 1]
        points = torch.stack([boxes[:, None, 0] + (1 - ndc[..., 0]) / 2 * size, boxes[:, None, 1] + (1 - ndc[..., 1]) / 2 * size], dim=-1)
        assert branch.landmark_distance(truth, boxes, points).abs().max() < 1e-3
        shifted = branch.landmark_distance(truth, boxes, points + torch.tensor([3.0, 0.0]))
        assert torch.allclose(shifted, torch.full((2,), 2 * 3.0 / size), atol=1e-3)


def test_non_finite_coefficients_are_counted_not_propagated(branch):
    coefficients = torch.zeros(3, 144)
    coefficients[0, 5] = float("nan")
    coefficients[2, 130] = float("-inf")
    coefficients.requires_grad_()
    before = branch.sanitized_faces
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mesh, rendered = branch(coefficients, image_size=32)
    assert branch.sanitized_faces - before == 2 and "2 faces" in str(caught[0].message)
    rendered.image.sum().backward()
    assert torch.isfinite(rendered.image).all() and torch.isfinite(coefficients.grad).all()


def test_image_vertices_follow_the_box(branch):
    boxes = torch.tensor([[100.0, 50.0, 200.0, 170.0]])
    vertices, decoded = branch.image_vertices(torch.zeros(1, 144), boxes)
    assert torch.allclose(decoded.vertices, branch.template.vertices[None].to(decoded.vertices))  # zero -> template
    x, y = vertices[0, :, 0], vertices[0, :, 1]
    assert 100 < x.min() < x.max() < 200 and 50 < y.min() < y.max() < 170
    eyes = branch.template.landmarks(vertices)[0]
    assert eyes[0, 0] < eyes[1, 0] and eyes[0, 1] < eyes[2, 1]  # image-left eye left of the other, above the nose


def test_placement_distance_is_the_mean_vertex_distance_in_box_sides():
    """Vertices at their own placement are 0 away; moved 3 px right and 4 px down, each is 5 px away, which
    is 5 / 20 of a 10 x 40 box's side."""
    from retinaface.mesh.branch import place_in_boxes, placement_distance

    vertices = torch.randn(2, 30, 3) * 0.5
    camera = random_coefficients(2, torch.Generator().manual_seed(0))[:, 128:135]
    boxes = torch.tensor([[0.0, 0.0, 10.0, 40.0], [50.0, 20.0, 150.0, 120.0]])
    placed = place_in_boxes(vertices, camera, boxes)[..., :2]
    assert torch.allclose(placement_distance(vertices, camera, boxes, placed), torch.zeros(2), atol=1e-5)
    moved = placed + torch.tensor([3.0, 4.0])
    assert torch.allclose(placement_distance(vertices, camera, boxes, moved), torch.tensor([5.0 / 20.0, 5.0 / 100.0]), atol=1e-4)
