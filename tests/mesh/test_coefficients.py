import math

import torch

from retinaface.mesh.coefficients import LATENT_DIM, NUM_MESH_COEFFICIENTS, POSE, truth_distances


def _face(rotation=(0.0, 0.0, 0.0)):
    coefficients = torch.zeros(1, NUM_MESH_COEFFICIENTS)
    # the camera's pose entries are atanh of the rotation vector over pi/2 (pose_rotation_vector's tanh)
    coefficients[0, LATENT_DIM + POSE.start : LATENT_DIM + POSE.stop] = torch.atanh(torch.tensor(rotation) / (math.pi / 2))
    return coefficients


def test_truth_distances_are_zero_at_the_truth_and_exact_l1_elsewhere():
    truth = _face((0.1, -0.2, 0.3))
    truth[0, :5] = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0])
    truth[0, -9:] = torch.arange(9.0)
    same = truth_distances(truth.clone(), truth, num_shape_weights=5)
    assert all(float(value) == 0.0 for value in same.values())

    predicted = _face((0.1, 0.1, 0.3))  # yaw off by 0.3 rad
    predicted[0, :5] = torch.tensor([1.0, -1.0, 0.5, 0.0, 0.0])  # one weight off by 2
    predicted[0, 5] = 3.0  # beyond the prior's weights: pulled to 0 by its square
    predicted[0, -9:] = torch.arange(9.0) + 0.9  # every light parameter off by 0.9
    distances = truth_distances(predicted, truth, num_shape_weights=5)
    assert math.isclose(float(distances["rotation"]), 0.3 / 3, rel_tol=1e-4)
    assert math.isclose(float(distances["light"]), 0.9, rel_tol=1e-5)
    assert math.isclose(float(distances["shape"]), 2.0 / 5 + 9.0 / (LATENT_DIM - 5), rel_tol=1e-5)
    # over the whole latent (the detector's truth term), every entry is compared by L1
    assert math.isclose(float(truth_distances(predicted, truth)["shape"]), (2.0 + 3.0) / LATENT_DIM, rel_tol=1e-5)


def test_shape_rows_leave_other_faces_out_of_the_shape_only():
    truth = torch.cat([_face(), _face()])
    predicted = torch.cat([_face((0.2, 0.0, 0.0)), _face((0.4, 0.0, 0.0))])
    predicted[0, 0], predicted[1, 0] = 1.0, 5.0  # the second face's shape is far off
    rows = torch.tensor([True, False])
    distances = truth_distances(predicted, truth, shape_rows=rows)
    assert math.isclose(float(distances["shape"]), 1.0 / LATENT_DIM, rel_tol=1e-5)  # the first face's only
    assert math.isclose(float(distances["rotation"]), (0.2 + 0.4) / 2 / 3, rel_tol=1e-4)  # both faces
    none = truth_distances(predicted.requires_grad_(), truth, shape_rows=torch.tensor([False, False]))
    assert float(none["shape"]) == 0.0
    sum(none.values()).backward()


def test_no_faces_give_zero_distances_that_keep_the_graph():
    predicted = torch.zeros(0, NUM_MESH_COEFFICIENTS, requires_grad=True)
    distances = truth_distances(predicted, torch.zeros(0, NUM_MESH_COEFFICIENTS))
    assert all(float(value) == 0.0 for value in distances.values())
    sum(distances.values()).backward()
    assert predicted.grad is not None


def test_mirrored_coefficients_render_the_flipped_image_of_a_symmetric_face():
    """The mean face (zero latent) at random poses and lights: rendering the mirrored coefficients gives the
    horizontally flipped render (silhouette IoU, shading), which flipping the yaw alone does not."""
    from retinaface.mesh.branch import MeshBranch
    from retinaface.mesh.decoder import load_prior_decoder
    from retinaface.mesh.coefficients import mirror_coefficients, random_coefficients

    branch = MeshBranch()
    load_prior_decoder(branch.decoder)
    faces = random_coefficients(3, torch.Generator().manual_seed(5))
    faces[:, :LATENT_DIM] = 0.0
    yaw_only = faces.clone()
    yaw_only[:, LATENT_DIM + POSE.start + 1] *= -1
    with torch.no_grad():
        _, original = branch.eval()(faces, image_size=96)
        _, mirrored = branch(mirror_coefficients(faces), image_size=96)
        _, yaw_flipped = branch(yaw_only, image_size=96)

    def iou(a, b):
        return ((a > 0) & (b > 0)).sum(dim=(1, 2, 3)) / ((a > 0) | (b > 0)).sum(dim=(1, 2, 3))

    flipped_mask, flipped_image = original.mask.flip(-1), original.image.flip(-1)
    assert (iou(flipped_mask, mirrored.mask) > 0.97).all()
    assert (iou(flipped_mask, yaw_flipped.mask) < iou(flipped_mask, mirrored.mask)).all()
    both = flipped_mask * mirrored.mask
    # the template's colours are one person's, not symmetric; the shading must still match closely
    assert float(((flipped_image - mirrored.image).abs() * both).sum() / (3 * both.sum())) < 0.15
    assert torch.equal(mirror_coefficients(mirror_coefficients(faces)), faces)
