import dataclasses
import math

import pytest
import torch

from retinaface.config import InferenceConfig, LossConfig, model_preset
from retinaface.model.retinaface import build_retinaface


def _model(mesh_head="roi", **loss):
    torch.manual_seed(0)
    config = dataclasses.replace(model_preset("mobilenet0.25"), mesh_head=mesh_head)
    return build_retinaface(config, loss=LossConfig(**loss)).train()


def _image(h=96, w=128):
    return torch.rand(3, h, w) * 255


@pytest.mark.parametrize("mesh_head", ["anchor", "roi"])
def test_loss_terms_are_named_finite_and_backpropagate(mesh_head):
    model = _model(mesh_head, mesh_landmark_weight=0.01)
    target = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]]), "landmarks": torch.rand(1, 5, 2) * 40 + 20}
    losses = model([_image()], [target])
    assert set(losses) == {"loss_cls", "loss_box", "loss_landmarks", "loss_pixel", "loss_mesh_landmarks"}
    assert losses["loss_pixel"] > 0 and losses["loss_mesh_landmarks"] > 0
    total = sum(losses.values())
    total.backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.heads.box.convs[0].weight.grad.abs().sum() > 0
    assert model.heads.landmarks.convs[0].weight.grad.abs().sum() > 0
    # the mesh head starts at zero coefficients (template face); the pixel loss already pushes it
    assert sum(p.grad.abs().sum() for p in model.heads.mesh.parameters()) > 0


def test_images_without_faces_give_finite_losses_and_no_nan_gradients():
    model = _model()
    empty = {"boxes": torch.zeros(0, 4), "landmarks": torch.zeros(0, 5, 2)}
    losses = model([_image(), _image(64, 64)], [empty, empty])
    assert losses["loss_cls"] > 0  # background anchors still teach the classifier
    assert losses["loss_box"] == 0 and losses["loss_landmarks"] == 0 and losses["loss_pixel"] == 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_landmarks_marked_invalid_are_ignored():
    model = _model()
    boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 110.0, 80.0]])
    image = _image()
    landmarks = torch.rand(2, 5, 2) * 40 + 15
    valid = torch.tensor([True, False])
    garbage = landmarks.clone()
    garbage[1] = -1.0  # WIDER's "no landmarks" marker
    a = model([image], [{"boxes": boxes, "landmarks": landmarks, "landmarks_valid": valid}])
    b = model([image], [{"boxes": boxes, "landmarks": garbage, "landmarks_valid": valid}])
    assert torch.equal(a["loss_landmarks"], b["loss_landmarks"])
    c = model([image], [{"boxes": boxes, "landmarks": garbage}])  # all treated as valid
    assert not torch.equal(a["loss_landmarks"], c["loss_landmarks"])


def test_targets_are_scaled_with_the_image_when_resizing():
    model = _model().eval()
    big = torch.nn.functional.interpolate(_image(64, 64)[None], scale_factor=2.0)[0]
    small = torch.nn.functional.interpolate(big[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    small_target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 44.0]])}
    small_loss = model([small], [small_target])
    torch.manual_seed(0)
    resizing = build_retinaface(model_preset("mobilenet0.25"), InferenceConfig(max_size=64)).eval()  # 128x128 -> 64x64 inside
    big_loss = resizing([big], [{"boxes": small_target["boxes"] * 2}])
    assert torch.allclose(small_loss["loss_box"], big_loss["loss_box"], atol=1e-4)


def test_loss_config_reaches_the_loss_and_mesh_branch():
    from retinaface.config import LossConfig

    torch.manual_seed(0)
    model = build_retinaface(model_preset("mobilenet0.25"), loss=LossConfig(box_weight=0.5, pixel_weight=0.0, max_mesh_faces=3)).train()
    assert model.loss.box_weight == 0.5 and model.mesh_branch.pixel_criterion is None
    target = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]])}
    losses = model([_image()], [target])
    assert "loss_pixel" not in losses  # weight 0: the branch is not run
    default = build_retinaface(model_preset("mobilenet0.25"))
    assert default.mesh_branch.pixel_criterion.max_faces == LossConfig.max_mesh_faces
    assert default.loss.box_weight == LossConfig.box_weight


def test_a_batch_of_two_copies_gives_the_single_image_losses():
    """Terms are normalised by the positives of the whole batch, and OHEM works per image."""
    model = _model()
    image = _image()
    target = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]]), "landmarks": torch.rand(1, 5, 2) * 40 + 20}
    single = model([image], [target], generator=torch.Generator().manual_seed(0))
    double = model([image, image], [target, target], generator=torch.Generator().manual_seed(0))
    for key in ("loss_cls", "loss_box", "loss_landmarks"):
        assert torch.allclose(single[key], double[key], rtol=1e-5), key


def test_pixel_term_uses_one_anchor_per_face_and_skips_mirrored_images_and_clipped_faces():
    from retinaface.model.loss import face_anchors
    from retinaface.model.targets import AnchorTargets

    # two faces in image 0 (anchors 0, 1, 2 on the first; 3 on the second), one in image 1 (anchor 1)
    first, second = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]
    matched = torch.zeros(2, 4, 4)
    matched[0, :3], matched[0, 3], matched[1, 1] = torch.tensor(first), torch.tensor(second), torch.tensor(first)
    labels = torch.tensor([[1, 1, 1, 1], [0, 1, 0, 0]])
    faces = torch.tensor([[0, 0, 0, 1], [-1, 0, -1, -1]])
    assigned = AnchorTargets(labels, matched, torch.zeros(2, 4, 4), torch.zeros(2, 4, 10), torch.zeros(2, 4, dtype=torch.bool), faces)
    # cx cy w h: anchor 1 matches the first face exactly, anchor 0 and 2 are shifted
    anchors = torch.tensor([[7.0, 5.0, 10.0, 10.0], [5.0, 5.0, 10.0, 10.0], [5.0, 8.0, 10.0, 10.0], [25.0, 25.0, 12.0, 12.0]])
    image_ids, anchor_ids = face_anchors(assigned, anchors)
    assert image_ids.tolist() == [0, 0, 1] and anchor_ids.tolist() == [1, 3, 1]

    model = _model()
    target = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]]), "landmarks": torch.rand(1, 5, 2) * 40 + 20}
    mirrored = dict(target, mirrored=torch.tensor(True))
    assert model([_image()], [mirrored])["loss_pixel"] == 0
    assert model([_image()], [dict(target, mirrored=torch.tensor(False))])["loss_pixel"] > 0
    assert model([_image()], [dict(target, clipped=torch.tensor([True]))])["loss_pixel"] == 0
    # two faces, the clipped one left out: the term is the other face's alone
    image = _image()
    second_face = {"boxes": torch.tensor([[75.0, 10.0, 115.0, 55.0]]), "landmarks": torch.rand(1, 5, 2) * 30 + torch.tensor([80.0, 15.0])}
    both = {key: torch.cat([target[key], second_face[key]]) for key in target}
    alone = model([image], [target], generator=torch.Generator().manual_seed(0))["loss_pixel"]
    together = model([image], [both], generator=torch.Generator().manual_seed(0))["loss_pixel"]
    without_second = model([image], [dict(both, clipped=torch.tensor([False, True]))], generator=torch.Generator().manual_seed(0))["loss_pixel"]
    assert torch.allclose(alone, without_second) and not torch.allclose(alone, together)


@pytest.mark.parametrize("mesh_head", ["anchor", "roi"])
def test_mesh_landmark_term_reads_every_positive_anchor_of_whole_annotated_faces(mesh_head):
    """The term is the mean landmark distance over the positive anchors (per-anchor head) or the faces (RoI
    head) of faces with landmarks that no crop cut: a face without landmarks or a clipped one adds nothing,
    and at zero coefficients (the untrained head) every anchor of a face sees the same mesh in the same box,
    so the term is that face's distance exactly."""
    model = _model(mesh_head, mesh_landmark_weight=0.01)
    image = _image()
    target = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 70.0]]), "landmarks": torch.rand(1, 5, 2) * 40 + 20}
    zero = torch.zeros(1, 144)
    expected = model.mesh_branch.landmark_distance(zero, target["boxes"], target["landmarks"])[0]
    assert torch.allclose(model([image], [target])["loss_mesh_landmarks"], 0.01 * expected, atol=1e-6)
    other = {"boxes": torch.tensor([[75.0, 10.0, 115.0, 55.0]]), "landmarks": torch.rand(1, 5, 2) * 30 + torch.tensor([80.0, 15.0])}
    both = {key: torch.cat([target[key], other[key]]) for key in target}
    without_points = dict(both, landmarks_valid=torch.tensor([True, False]))
    assert torch.allclose(model([image], [without_points])["loss_mesh_landmarks"], 0.01 * expected, atol=1e-6)
    assert torch.allclose(model([image], [dict(both, clipped=torch.tensor([False, True]))])["loss_mesh_landmarks"], 0.01 * expected, atol=1e-6)
    assert model([image], [dict(target, clipped=torch.tensor([True]))])["loss_mesh_landmarks"] == 0
    assert "loss_mesh_landmarks" not in _model()([image], [target])  # off by default: the paper's loss


def _truth_target(boxes, seed, mirrored=False):
    from retinaface.mesh.fitting import random_coefficients

    truth = random_coefficients(len(boxes), torch.Generator().manual_seed(seed))
    return {"boxes": boxes, "landmarks": torch.zeros(len(boxes), 5, 2), "landmarks_valid": torch.zeros(len(boxes), dtype=torch.bool),
            "mesh_truth": truth, "mirrored": torch.tensor(mirrored)}


@pytest.mark.parametrize("mesh_head", ["anchor", "roi"])
def test_mesh_truth_term_only_for_faces_with_truth_and_no_shape_from_mirrored_images(mesh_head):
    boxes = torch.tensor([[20.0, 20.0, 60.0, 70.0]])
    plain = {"boxes": boxes, "landmarks": torch.zeros(1, 5, 2), "landmarks_valid": torch.zeros(1, dtype=torch.bool)}
    model = _model(mesh_head, mesh_truth_weight=1.0, pixel_weight=0.0)
    assert "loss_mesh_truth" not in model([_image()], [plain])  # real annotations: no truth, no term
    off = _model(mesh_head, mesh_truth_weight=0.0, pixel_weight=0.0)
    assert "loss_mesh_truth" not in off([_image()], [_truth_target(boxes, 1)])
    # the heads start at zero coefficients, so the shape part is the truth latent's mean |value|
    with_shape = _model(mesh_head, mesh_truth_weight=1.0, mesh_truth_shape_weight=1.0, pixel_weight=0.0)
    without_shape = _model(mesh_head, mesh_truth_weight=1.0, mesh_truth_shape_weight=0.0, pixel_weight=0.0)
    image = _image()
    for mirrored, shape_counts in ((False, True), (True, False)):
        target = _truth_target(boxes, 2, mirrored=mirrored)
        a, b = with_shape([image], [target])["loss_mesh_truth"], without_shape([image], [target])["loss_mesh_truth"]
        assert b > 0  # rotation and light count either way
        expected = target["mesh_truth"][0, :128].abs().mean() if shape_counts else 0.0
        assert float(a - b) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    empty = with_shape([image], [_truth_target(torch.zeros(0, 4), 3)])
    empty["loss_mesh_truth"].backward()  # an image without faces still backpropagates (DDP sees the head)


def test_mesh_truth_term_teaches_the_roi_head_its_training_faces():
    """A tiny overfit: the RoI head alone, 40 Adam steps on the truth term of four faces in two images,
    brings their rotation, light and shape distances to under half of the zero head's."""
    model = _model("roi", mesh_truth_weight=1.0, pixel_weight=0.0)
    torch.manual_seed(0)
    images = [_image(), _image()]
    targets = [_truth_target(torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 110.0, 80.0]]), seed) for seed in (3, 4)]
    optimiser = torch.optim.Adam(model.heads.mesh.parameters(), lr=3e-3)

    def distance():
        return float(model(images, targets)["loss_mesh_truth"])

    start = distance()
    for _ in range(40):
        loss = model(images, targets)["loss_mesh_truth"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert distance() < 0.5 * start


def test_jittered_boxes_stay_within_the_jitter():
    from retinaface.model.loss import jittered_boxes

    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]]).repeat(500, 1)
    moved = jittered_boxes(boxes, 0.1, torch.Generator().manual_seed(0))
    size, centre = moved[:, 2:] - moved[:, :2], (moved[:, :2] + moved[:, 2:]) / 2
    assert ((size / torch.tensor([40.0, 80.0]) - 1).abs() <= 0.1 + 1e-6).all()
    assert ((centre - torch.tensor([30.0, 60.0])).abs() <= torch.tensor([4.0, 8.0]) + 1e-4).all()
    assert (size / torch.tensor([40.0, 80.0])).std() > 0.03  # they do move
    assert torch.equal(jittered_boxes(boxes, 0.0), boxes)


def test_more_reads_per_face_average_the_same_truth_term_at_zero_jitter():
    image, boxes = _image(), torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 110.0, 80.0]])
    target = _truth_target(boxes, 5)
    one = _model("roi", mesh_truth_weight=1.0, pixel_weight=0.0)
    many = _model("roi", mesh_truth_weight=1.0, pixel_weight=0.0, mesh_truth_reads=3, mesh_truth_jitter=0.0)
    jittered = _model("roi", mesh_truth_weight=1.0, pixel_weight=0.0, mesh_truth_reads=3, mesh_truth_jitter=0.2)
    for model in (one, many, jittered):  # the same non-zero head in all three
        torch.manual_seed(1)
        for parameter in model.heads.mesh.parameters():
            torch.nn.init.normal_(parameter, std=0.05)
    calls = []
    many.heads.mesh.register_forward_hook(lambda module, args, output: calls.append(len(output)))
    with torch.no_grad():
        a = one.train()([image], [target])["loss_mesh_truth"]
        b = many.train()([image], [target])["loss_mesh_truth"]
        c = jittered.train()([image], [target], generator=torch.Generator().manual_seed(0))["loss_mesh_truth"]
    assert calls == [6]  # two faces, three reads each
    assert float(b) == pytest.approx(float(a), rel=1e-5)
    assert float(c) != pytest.approx(float(a), rel=1e-5)


@pytest.mark.parametrize("mesh_head", ["anchor", "roi"])
def test_vertex_distance_in_the_truth_term_measures_the_mesh_against_its_render_square(mesh_head):
    """Truth = a face of another shape, frontal, at the default camera, lit differently (a zero head gets
    the rotation and the camera right, the shape and light wrong, which the vertex term does not see: it
    places the true shape by the head's camera). Rendered in a square equal to the box, the vertex distance
    is 0; in a square 6 px to the right and 8 px down, every true vertex is 10 px away: 10 / sqrt(40 x 50)
    of a box side. Mirrored images and faces without a render square add nothing; images are scaled by the
    model's preprocessing like their boxes (here by 2)."""
    boxes = torch.tensor([[20.0, 20.0, 60.0, 70.0]])
    truth = torch.zeros(1, 144)
    truth[0, :5] = torch.tensor([1.5, -1.0, 0.8, 2.0, -0.5])  # identity weights of the prior
    truth[0, 135:138] = torch.tensor([1.0, -0.5, 0.3])  # the light moved

    def target(square, mirrored=False):
        out = {"boxes": boxes, "landmarks": torch.zeros(1, 5, 2), "landmarks_valid": torch.zeros(1, dtype=torch.bool),
               "mesh_truth": truth, "mirrored": torch.tensor(mirrored)}
        if square is not None:
            out["mesh_placement"] = square
        return out

    def model(vertex_weight, max_size=None):
        torch.manual_seed(0)
        config = dataclasses.replace(model_preset("mobilenet0.25"), mesh_head=mesh_head)
        loss = LossConfig(mesh_truth_weight=1.0, mesh_truth_vertex_weight=vertex_weight, pixel_weight=0.0)
        return build_retinaface(config, InferenceConfig(max_size=max_size), loss=loss).train()

    image = _image()
    shifted = boxes + torch.tensor([6.0, 8.0, 6.0, 8.0])
    expected = 10.0 / math.sqrt(40 * 50)

    def extra(square, mirrored=False, img=image, scale=1.0, max_size=None):
        t = target(square, mirrored)
        t["boxes"] = t["boxes"] * scale
        if square is not None:
            t["mesh_placement"] = square * scale
        with_vertex, without = model(1.0, max_size), model(0.0, max_size)
        return float(with_vertex([img], [t])["loss_mesh_truth"] - without([img], [t])["loss_mesh_truth"])

    assert extra(boxes) == pytest.approx(0.0, abs=1e-5)
    assert extra(shifted) == pytest.approx(expected, rel=1e-3)
    assert extra(shifted, mirrored=True) == pytest.approx(0.0, abs=1e-6)
    assert extra(None) == pytest.approx(0.0, abs=1e-6)
    # an image twice the size, halved by the preprocessor: the square is halved with the box
    assert extra(shifted, img=_image(192, 256), scale=2.0, max_size=128) == pytest.approx(expected, rel=1e-3)


def test_vertex_distance_needs_the_face_prior():
    from retinaface.model.loss import MultiTaskLoss

    with pytest.raises(ValueError, match="face prior"):
        MultiTaskLoss(
            assigner=None, negative_ratio=7, min_negatives=1, cls_weight=1, box_weight=1, landmark_weight=1, pixel_weight=0,
            mesh_landmark_weight=0, mesh_truth_weight=1, mesh_truth_light_weight=0.5, mesh_truth_shape_weight=0.2,
            mesh_truth_reads=1, mesh_truth_jitter=0.1, mesh_truth_vertex_weight=1.0, face_prior=None)
