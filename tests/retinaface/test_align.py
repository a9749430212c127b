"""Aligned crops land the landmarks on the template; paste-back of an unchanged crop restores the image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.faces.align import ARCFACE_112_TEMPLATE, align_face, paste_back, similarity_to_template


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("angle", [0.0, 25.0, -70.0, 180.0])
def test_crop_puts_drawn_landmarks_on_the_template(angle):
    # A synthetic face: five bright discs where a face at this angle and scale has its landmarks.
    placement = _similarity(angle, 3.0, (300.0, 260.0))
    landmarks = _apply(placement, ARCFACE_112_TEMPLATE - 56.0)
    for index, point in enumerate(landmarks):
        canvas = np.zeros((600, 600), np.uint8)
        cv2.circle(canvas, (int(round(point[0] * 16)), int(round(point[1] * 16))), 6 * 16, 255, -1, cv2.LINE_AA, shift=4)
        crop = align_face(canvas, landmarks, style="arcface112").image.astype(np.float64)
        ys, xs = np.mgrid[0:112, 0:112]
        # cv2.circle and cv2.warpAffine both address pixels by index, so centroids compare directly.
        found = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        assert np.hypot(*(found - ARCFACE_112_TEMPLATE[index])) < 1.0, (index, found, ARCFACE_112_TEMPLATE[index])


def test_similarity_is_exact_for_exact_landmarks():
    truth = _similarity(-12.0, 0.4, (5.0, -3.0))
    landmarks = _apply(cv2.invertAffineTransform(truth), ARCFACE_112_TEMPLATE)
    np.testing.assert_allclose(similarity_to_template(landmarks), truth, atol=1e-4)


def test_ffhq_crop_levels_the_eyes_and_centres_the_face():
    placement = _similarity(30.0, 2.0, (400.0, 300.0))
    landmarks = _apply(placement, ARCFACE_112_TEMPLATE - 56.0)
    crop = align_face(np.zeros((700, 800, 3), np.uint8), landmarks, style="ffhq", size=256)
    mapped = _apply(crop.transform, landmarks)
    assert crop.image.shape == (256, 256, 3)
    assert abs(mapped[0, 1] - mapped[1, 1]) < 0.5  # eye line level (blended with the mouth direction)
    assert mapped[0, 0] < mapped[1, 0]
    assert abs((mapped[0, 0] + mapped[1, 0]) / 2 - 128) < 3  # eyes centred left-right
    assert 0.25 * 256 < mapped[0, 1] < 0.5 * 256 < mapped[3, 1] < 0.8 * 256  # eyes above, mouth below centre


@pytest.mark.parametrize("style", ["arcface112", "ffhq"])
def test_paste_back_of_unchanged_crop_restores_the_image(astronaut_image, detector, style):
    (face,) = detector(astronaut_image)
    crop = align_face(astronaut_image, face.landmarks, style=style)
    pasted = paste_back(astronaut_image, crop.image, crop.transform, feather=0.1)
    difference = np.abs(pasted.astype(np.int16) - astronaut_image.astype(np.int16))
    x1, y1, x2, y2 = (int(v) for v in face.box)
    inside = difference[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10]
    # Two bilinear resamplings: FFHQ upsamples the face (nearly lossless), ArcFace's 112 px crop is a
    # little smaller than this face, so some detail is lost.
    assert inside.mean() < (1.5 if style == "ffhq" else 6.0)
    far = difference.copy()
    corners = np.round(_apply(cv2.invertAffineTransform(crop.transform), np.array([[0, 0], [1, 0], [1, 1], [0, 1]]) * crop.image.shape[0]))
    outside = np.ones(difference.shape[:2], np.uint8)
    cv2.fillConvexPoly(outside, corners.astype(np.int32), 0)
    outside = cv2.erode(outside, np.ones((5, 5), np.uint8))
    assert far[outside.astype(bool)].max() == 0  # nothing changes outside the crop's footprint


def test_paste_back_feathers_the_edge():
    image = np.zeros((200, 200, 3), np.uint8)
    transform = np.array([[1.0, 0, -50], [0, 1.0, -50]])  # crop = image[50:150, 50:150]
    crop = np.full((100, 100, 3), 200, np.uint8)
    hard = paste_back(image, crop, transform, feather=0.0)
    soft = paste_back(image, crop, transform, feather=0.2)
    assert hard[100, 51, 0] == 200 and soft[100, 51, 0] < 30  # ramp starts at the edge
    assert soft[100, 100, 0] == 200 and hard[10, 10, 0] == soft[10, 10, 0] == 0
    profile = soft[100, 50:75, 0].astype(int)
    assert (np.diff(profile) >= 0).all()  # rises smoothly inward
