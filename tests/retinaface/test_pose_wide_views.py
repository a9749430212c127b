"""Head pose of small faces in large photos: SQPnP refuses points spread over a tiny part of the view
(OpenCV asserts on their variance), and the pose must then come from the fallback start, not a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from retinaface.faces.pose import estimate_pose

# a frontal face's five landmarks as fractions of its box (eyes level, nose centred, mouth below)
FRONTAL = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])


@pytest.mark.parametrize("width", [1280, 4000, 12000])
@pytest.mark.parametrize("size", [24, 40])
def test_a_small_face_in_a_wide_photo_gets_the_pose_it_gets_in_a_small_one(width, size):
    height = width * 9 // 16
    box = np.array([100.0, 100.0, 100.0 + size, 100.0 + size])
    landmarks = FRONTAL * size + box[:2]
    reference, _ = estimate_pose(landmarks, box, 640, 360)
    pose, reason = estimate_pose(landmarks, box, width, height)
    assert reason is None and pose is not None
    # the same landmarks, hence nearly the same angles (the wider view only moves the camera's centre)
    assert abs(pose.yaw - reference.yaw) < 3 and abs(pose.pitch - reference.pitch) < 3 and abs(pose.roll - reference.roll) < 1
    assert abs(pose.yaw) < 5 and abs(pose.pitch) < 10  # a frontal face
