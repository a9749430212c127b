"""Rotations, pyramid and the pixel budget around a detector."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface.inference.views import LargeImageWarning, MultiViewDetector, rotation_matrix


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_rotation_matrix_matches_numpy_rot90(degrees):
    image = np.zeros((30, 50), np.uint8)
    image[7, 41] = 255  # pixel centre at (41.5, 7.5)
    turned = np.rot90(image, degrees // 90)
    y, x = np.argwhere(turned)[0]
    mapped = rotation_matrix(degrees, 50, 30) @ np.array([41.5, 7.5, 1.0])
    np.testing.assert_allclose(mapped, [x + 0.5, y + 0.5])


def _iou(a, b) -> float:
    return float(box_iou(torch.tensor(np.array([a], np.float64)), torch.tensor(np.array([b], np.float64)))[0, 0])


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_photo_with_rotations_finds_the_upright_face(astronaut_image, detector, degrees):
    (upright,) = detector(astronaut_image)
    turned = np.ascontiguousarray(np.rot90(astronaut_image, degrees // 90))
    faces = MultiViewDetector(detector, rotations=True)(turned)
    assert len(faces) == 1
    expected = rotation_matrix(degrees, 512, 512)
    corners = np.array([upright.box[:2], upright.box[2:]]) @ expected[:, :2].T + expected[:, 2]
    assert _iou(np.concatenate([corners.min(0), corners.max(0)]), faces[0].box) > 0.8
    # a face turned counter-clockwise by the image rotation has its eye line at -degrees
    assert abs((faces[0].roll + degrees + 180) % 360 - 180 - upright.roll) < 15


def test_upright_photo_keeps_its_face_with_rotations(astronaut_image, detector):
    (plain,) = detector(astronaut_image)
    (face,) = MultiViewDetector(detector, rotations=True)(astronaut_image)
    np.testing.assert_allclose(face.box, plain.box, atol=1e-4)
    assert abs(face.roll) < 15


def test_pyramid_and_flip_find_the_face_in_original_pixels(astronaut_image, detector):
    (plain,) = detector(astronaut_image)
    faces = MultiViewDetector(detector, scale_factors=(0.5, 1.0, 2.0), flip=True)(astronaut_image)
    assert len(faces) == 1 and _iou(faces[0].box, plain.box) > 0.85


def test_huge_image_is_downscaled_within_the_budget(astronaut_image, detector):
    big = cv2.resize(astronaut_image, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    views = MultiViewDetector(detector, max_pixels=1_000_000)
    assert views.budget_scale(2048, 2048) == pytest.approx(1000 / 2048, rel=1e-3)
    with pytest.warns(LargeImageWarning, match="downscaled by 0.49"):
        (face,) = views(big)
    (plain,) = detector(astronaut_image)
    assert _iou(face.box / 4.0, plain.box) > 0.85  # in the big image's pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(MultiViewDetector(detector, max_pixels=None)(astronaut_image)) == 1


def _matched(expected: np.ndarray, faces, threshold: float) -> int:
    """How many ``expected`` boxes have their own detection (one-to-one, greedy by IoU) with IoU >= ``threshold``."""
    if not faces:
        return 0
    iou = box_iou(torch.tensor(expected, dtype=torch.float64), torch.tensor(np.array([f.box for f in faces]), dtype=torch.float64))
    matched = 0
    while iou.numel() and iou.max() >= threshold:
        row, col = divmod(int(iou.argmax()), iou.shape[1])
        iou[row, :], iou[:, col] = -1, -1
        matched += 1
    return matched


def test_rotations_on_the_crowd_photo(crowd_image, detector):
    upright = detector(crowd_image)
    assert len(upright) >= 20
    width = crowd_image.shape[1]
    turned = np.ascontiguousarray(np.rot90(crowd_image, 1))
    # np.rot90 (counter-clockwise) takes pixel (x, y) to (y, W - x): where each upright face must be found
    boxes = np.array([f.box for f in upright], np.float64)
    expected = np.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], axis=1)
    plain_turned = detector(turned)
    with_rotations = MultiViewDetector(detector, rotations=True)(turned)
    assert _matched(expected, with_rotations, 0.8) >= 0.9 * len(upright)
    assert _matched(expected, plain_turned, 0.5) < 0.5 * len(upright)  # the turned faces defeat the plain detector


def test_merge_drops_cross_view_duplicates_by_overlap_of_the_smaller_box():
    from retinaface.faces.face import Face
    from retinaface.inference.views import merge_faces

    def face(box, score):
        return Face(np.array(box, np.float32), score, np.zeros((5, 2), np.float32), np.zeros(1, np.float32))

    big, inner, apart = face([0, 0, 100, 100], 0.9), face([10, 10, 50, 60], 0.8), face([200, 0, 240, 40], 0.7)
    # IoU(big, inner) = 0.2: kept as two faces within one view, merged when found in different views
    assert merge_faces([big, inner, apart], 0.4, [0, 0, 0]) == [big, inner, apart]
    assert merge_faces([inner, big, apart], 0.4, [90, 0, 0]) == [big, apart]
    assert merge_faces([], 0.4) == []
