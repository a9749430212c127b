import numpy as np
import pytest

from retinaface.inference.tta import TestTimeAugmentation, base_scale


def test_mxnet_scale_rule():
    assert base_scale(768, 1024, "mxnet") == pytest.approx(1600 / 768)  # long side 2133 <= 2150
    assert base_scale(1000, 2000, "mxnet") == pytest.approx(2150 / 2000)  # short-side rule would give 3200
    assert base_scale(123, 456, "original") == 1.0
    with pytest.raises(ValueError):
        base_scale(1, 1, "tiny")


def test_identity_settings_equal_plain_detector(detector, astronaut_image):
    plain = detector(astronaut_image)
    same = TestTimeAugmentation(detector)(astronaut_image)
    np.testing.assert_array_equal(plain[0].box, same[0].box)


def test_flip_maps_boxes_and_landmarks_back(detector, astronaut_image):
    plain = detector(astronaut_image)[0]
    mirrored = detector(np.ascontiguousarray(astronaut_image[:, ::-1]))[0]
    merged = TestTimeAugmentation(detector, flip=True)(astronaut_image)
    assert len(merged) == 1
    # the merged face is one of the two passes, both mapped into the original frame
    candidates = [plain.box, np.array([512 - mirrored.box[2], mirrored.box[1], 512 - mirrored.box[0], mirrored.box[3]])]
    assert min(np.abs(merged[0].box - c).max() for c in candidates) < 1e-3
    np.testing.assert_allclose(merged[0].box, plain.box, atol=4.0)
    np.testing.assert_allclose(merged[0].landmarks, plain.landmarks, atol=4.0)  # eyes/mouth swapped back
    # the merged face gets its pose from its landmarks in the original frame
    assert abs(merged[0].pose.yaw - plain.pose.yaw) < 3 and abs(merged[0].pose.roll - plain.pose.roll) < 3


def test_multi_scale_reports_original_pixels(detector, astronaut_image):
    plain = detector(astronaut_image)[0]
    faces = TestTimeAugmentation(detector, scale_factors=(0.75, 1.5))(astronaut_image)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, plain.box, atol=8.0)
