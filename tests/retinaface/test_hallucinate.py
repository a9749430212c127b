"""Hallucinated faces: noise becomes a face the detector finds; descents lower the target; the random
views' gradient lands back on the pixels it came from; bad targets are one sentence naming the choices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retinaface.errors import InputError
from retinaface.evaluation.hallucinate import (
    HallucinationConfig,
    Target,
    TargetReader,
    centre_anchor_index,
    centre_face,
    check_target,
    contact_sheet,
    feature_maps,
    hallucinate,
    network_input,
    parse_target,
    starting_noise,
    transform_views,
    view_matrices,
)


@pytest.fixture(scope="module")
def model():
    from retinaface.model.weights import load_model

    return load_model("mobilenet0.25", mesh=False).fuse_for_inference()


def test_default_run_turns_noise_into_a_face_the_detector_finds_at_the_centre(model, detector) -> None:
    config = HallucinationConfig(runs=2)  # every other setting the command's default
    result = hallucinate(model, Target(), config)
    assert result.images.shape == (2, config.size, config.size, 3) and result.images.dtype == np.uint8
    assert max(result.before) < 0.1
    assert min(result.after) >= 0.9
    for image in result.images:
        face = centre_face(detector(image), config.size)
        assert face is not None and face.score >= 0.9
        centre = (face.box[:2] + face.box[2:]) / 2
        # the target anchor sits at the centre cell (72, 72) of level 1's 8x8 grid; its face is there
        assert np.abs(centre - config.size / 2).max() <= 16, face.box


def test_the_after_value_is_that_of_the_saved_image(model) -> None:
    config = HallucinationConfig(runs=1, steps=8, size=64)
    result = hallucinate(model, Target(), config)
    reread = torch.from_numpy(result.images).permute(0, 3, 1, 2).float()
    assert TargetReader(model, Target(), 64).values(reread).tolist() == pytest.approx(result.after, rel=1e-5)


@pytest.mark.parametrize("target", ["score", "backbone.1:7", "context.1:5"])
def test_minimize_lowers_the_target_and_maximize_raises_it(model, target) -> None:
    for minimize in (True, False):
        config = HallucinationConfig(runs=2, steps=12, size=64, minimize=minimize)
        result = hallucinate(model, parse_target(target), config)
        for before, after in zip(result.before, result.after):
            assert (after < before) if minimize else (after > before), (target, minimize, result.before, result.after)


def test_a_channel_off_at_the_centre_still_switches_on(model) -> None:
    # SSH outputs are ReLUs: on noise many channels are exactly 0 at the centre, with zero gradient there
    config = HallucinationConfig(runs=2, steps=24)
    start = starting_noise([torch.Generator().manual_seed(s) for s in (0, 1)], config.size, model.preprocessor.pixel_mean, config.noise_std).round()
    with torch.no_grad():
        centre = feature_maps(model, start, ["context.1"])["context.1"][:, :, 4, 4]
    channel = int(torch.nonzero(centre.amax(dim=0) == 0)[0])
    target = Target(layer="context.1", channel=channel)
    reader = TargetReader(model, target, config.size)
    image = start.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(reader(image).sum(), image)
    assert plain.abs().sum() == 0  # the centre alone gives no direction to climb
    result = hallucinate(model, target, config)
    assert result.before == [0.0, 0.0] and min(result.after) > 0.5, result.after


def _gradient_of_view_pixel(angle: float, flip: bool, shift: tuple[int, int], row: int, column: int, size: int = 16) -> torch.Tensor:
    """d view[row, column] / d image for a ``size`` px one-channel image: where that view pixel came from."""
    image = torch.zeros(1, 1, size, size, requires_grad=True)
    matrices = view_matrices(torch.tensor([angle]), torch.tensor([flip]), torch.tensor([shift]), size, size)
    transform_views(image, matrices)[0, 0, row, column].backward()
    return image.grad[0, 0]


def test_a_quarter_turn_sends_the_gradient_back_to_the_pixel_it_came_from() -> None:
    # 16 px: centre at 7.5. Counter-clockwise by 90 degrees (as seen on screen, y down) moves the content at
    # offset (dx, dy) to (dy, -dx): the top-right pixel (row 1, column 14), offset (6.5, -6.5), goes to
    # offset (-6.5, -6.5), the top-left pixel (row 1, column 1). So view pixel (1, 1) reads image pixel (1, 14).
    gradient = _gradient_of_view_pixel(90.0, False, (0, 0), 1, 1)
    assert gradient[1, 14].item() == pytest.approx(1.0, abs=1e-5)
    assert gradient.abs().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_mirror_and_shift_send_the_gradient_back_to_the_pixel_they_came_from() -> None:
    # mirrored: column c comes from column 15 - c; then shifted right by 3 and down by 2
    gradient = _gradient_of_view_pixel(0.0, True, (3, 2), 9, 10)
    assert gradient[9 - 2, 15 - (10 - 3)].item() == pytest.approx(1.0, abs=1e-5)
    assert gradient.abs().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_an_oblique_rotation_spreads_the_gradient_around_the_pixel_it_came_from() -> None:
    # 30 degrees: view pixel (row 4, column 11), offset p = (3.5, -3.5) from the centre, reads the image at
    # the centre + R^-1 p, with R^-1 (x, y) = (x cos a - y sin a, x sin a + y cos a):
    cos, sin = math.cos(math.radians(30)), math.sin(math.radians(30))
    x, y = 7.5 + 3.5 * cos + 3.5 * sin, 7.5 + 3.5 * sin - 3.5 * cos  # (12.28, 6.22)
    gradient = _gradient_of_view_pixel(30.0, False, (0, 0), 4, 11)
    assert gradient.sum().item() == pytest.approx(1.0, abs=1e-5)  # bilinear weights
    assert (gradient > 1e-6).sum().item() == 4  # on the four pixels around (x, y) only
    rows, columns = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    assert (gradient * columns).sum().item() == pytest.approx(x, abs=1e-4)
    assert (gradient * rows).sum().item() == pytest.approx(y, abs=1e-4)
    # and the view of an image really is the rotated image: a bright pixel at (y, x) rounded shows at (4, 11)
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, round(y), round(x)] = 1.0
    view = transform_views(image, view_matrices(torch.tensor([30.0]), torch.tensor([False]), torch.zeros(1, 2), 16, 16))
    assert divmod(int(view[0, 0].argmax()), 16) == (4, 11)


def test_centre_anchor_index_is_the_centre_location_of_each_level(model) -> None:
    anchors = model.anchor_generator.for_image_size(128, 96)
    for level, (stride, sizes) in enumerate(zip(model.anchor_generator.strides, model.anchor_generator.sizes_per_level)):
        rows, columns = model.anchor_generator.feature_shapes(128, 96)[level]
        for slot, side in enumerate(sizes):
            cx, cy, w, h = anchors[centre_anchor_index(model, 128, 96, level, slot)].tolist()
            assert (cx, cy, w, h) == ((columns // 2 + 0.5) * stride, (rows // 2 + 0.5) * stride, side, side)


def test_network_input_is_the_model_preprocessing_and_differentiable(model) -> None:
    images = torch.rand(2, 3, 32, 32) * 255
    expected, *_ = model.preprocessor(list(images))
    assert torch.equal(network_input(model, images), expected)
    assert network_input(model, images.requires_grad_(True)).requires_grad


def test_a_channel_target_is_the_feature_map_at_its_centre(model) -> None:
    images = starting_noise([torch.Generator().manual_seed(s) for s in (0, 1)], 64, model.preprocessor.pixel_mean, 30.0)
    with torch.no_grad():
        maps = feature_maps(model, images, ["fpn.1", "backbone.stage2"])
        assert torch.equal(maps["backbone.stage2"], feature_maps(model, images, ["backbone.1"])["backbone.1"])
        reader = TargetReader(model, parse_target("fpn.1:9"), 64)
        assert reader.where["location"] == [2, 2]
        assert torch.allclose(reader(images), maps["fpn.1"][:, 9, 2, 2])


@pytest.mark.parametrize(
    ("text", "level", "message"),
    [
        ("mystery.layer:3", 1, "unknown layer 'mystery.layer'; choose one of backbone.0 (64 ch)"),
        ("backbone.9:3", 1, "unknown layer 'backbone.9'"),
        ("context.1:64", 1, "channel 64 is out of range for layer context.1 (64 channels: 0..63)"),
        ("score", 3, "level 3 does not exist: the model has 3 pyramid levels (0..2)"),
        ("context.1:five", 1, "neither 'score' nor LAYER:CHANNEL"),
    ],
)
def test_bad_targets_are_one_sentence_naming_the_choices(model, text, level, message) -> None:
    with pytest.raises(InputError) as error:
        check_target(model, parse_target(text, level=level), 128)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_contact_sheet_holds_every_image_in_its_grid() -> None:
    images = [np.full((20, 30, 3), 40 * i, np.uint8) for i in range(5)]
    sheet = contact_sheet(images, [str(i) for i in range(5)], "title", columns=3)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 3 * 30 + 4 * 4
    for i in range(1, 5):  # each distinct grey shows up as a 20 x 30 block
        assert (np.all(sheet == 40 * i, axis=-1)).sum() >= 20 * 30
