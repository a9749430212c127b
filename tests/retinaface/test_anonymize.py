"""Blurring and pixelating faces: the whole face box is covered, the rest of the image is untouched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.faces.anonymize import anonymize, face_mask, keep_largest


def _high_frequency_energy(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.mark.parametrize("box", [(10.0, 20.0, 50.0, 90.0), (0.0, 0.0, 30.0, 30.0), (170.3, 150.7, 200.0, 200.0)])
def test_ellipse_mask_covers_every_pixel_of_the_box(box):
    mask = face_mask((200, 200), np.array(box))
    x1, y1, x2, y2 = box
    inside = mask[int(np.floor(y1)) : int(np.ceil(y2)), int(np.floor(x1)) : int(np.ceil(x2))]
    assert (inside == 255).all()
    assert mask[:, : max(0, int(x1) - 20)].sum() == 0 if x1 > 30 else True
    assert mask.sum() / 255 < 1.8 * (x2 - x1 + 2) * (y2 - y1 + 2)  # an ellipse, not the whole image


def test_mesh_mask_is_the_silhouette():
    square = np.array([[20, 20, 0], [80, 20, 0], [80, 60, 0], [20, 60, 0], [50, 40, 0]], np.float64)
    mask = face_mask((100, 100), np.array([0, 0, 99, 99]), mesh_vertices=square)
    assert mask[21:60, 21:80].min() == 255 and mask[65:, :].max() == 0 and mask[:, 85:].max() == 0


@pytest.mark.parametrize("method", ["blur", "pixelate"])
def test_no_face_box_pixel_keeps_its_detail(astronaut_image, detector, method):
    (face,) = detector(astronaut_image)
    result = anonymize(astronaut_image, [face.box], method=method)
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    before, after = astronaut_image[y1:y2, x1:x2], result[y1:y2, x1:x2]
    if method == "blur":
        assert _high_frequency_energy(after) < 0.05 * _high_frequency_energy(before)
    else:  # blocks of one colour: a few dozen colours where the face had thousands
        colours = lambda a: len(np.unique(a.reshape(-1, 3), axis=0))  # noqa: E731
        assert colours(after) < 0.02 * colours(before)
    assert np.any(after != before, axis=2).mean() > 0.97  # the few equal pixels happened to match their average
    # far from the face nothing changes
    np.testing.assert_array_equal(result[400:], astronaut_image[400:])


def test_strength_scales_the_blur(astronaut_image, detector):
    (face,) = detector(astronaut_image)
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    light = anonymize(astronaut_image, [face.box], strength=0.2)[y1:y2, x1:x2]
    heavy = anonymize(astronaut_image, [face.box], strength=1.5)[y1:y2, x1:x2]
    assert _high_frequency_energy(heavy) < _high_frequency_energy(light) < _high_frequency_energy(astronaut_image[y1:y2, x1:x2])


def test_no_faces_and_bad_arguments(astronaut_image):
    np.testing.assert_array_equal(anonymize(astronaut_image, []), astronaut_image)
    with pytest.raises(ValueError, match="method"):
        anonymize(astronaut_image, [], method="paint")
    with pytest.raises(ValueError, match="strength"):
        anonymize(astronaut_image, [], strength=0)
    assert keep_largest([]) is None
    assert keep_largest([np.array([0, 0, 10, 10]), np.array([0, 0, 30, 5]), np.array([5, 5, 20, 20])]) == 2
