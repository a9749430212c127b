"""Per-frame workflow: tracks, carried anonymisation, crops in the JSON extras; smoothing as a per-face stage."""

from __future__ import annotations

import numpy as np
import pytest

from retinaface.faces.face import Face
from retinaface.faces.workflow import FaceWorkflow, WorkflowConfig


def _face(box, score=0.9) -> Face:
    box = np.asarray(box, np.float32)
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    landmarks = np.array([[x1 + 0.3 * w, y1 + 0.4 * h], [x1 + 0.7 * w, y1 + 0.4 * h], [x1 + 0.5 * w, y1 + 0.6 * h],
                          [x1 + 0.35 * w, y1 + 0.8 * h], [x1 + 0.65 * w, y1 + 0.8 * h]], np.float32)
    return Face(box, score, landmarks, np.zeros(144, np.float32))


def _textured(height=240, width=320) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_face_missed_for_a_frame_stays_blurred_and_keeps_its_track():
    workflow = FaceWorkflow(WorkflowConfig(anonymize="blur", carry_frames=2))
    workflow.begin(sequence=True)
    image = _textured()
    face = _face([100, 60, 160, 140])
    first = workflow.process("clip.mp4", 0, image, [face])
    missed = workflow.process("clip.mp4", 1, image, [])  # detector lost the face
    back = workflow.process("clip.mp4", 2, image, [face])
    region = (slice(60, 140), slice(100, 160))
    for result in (first, missed, back):
        assert np.any(result.image[region] != image[region], axis=2).mean() > 0.97
    assert first.faces[0].track_id == back.faces[0].track_id == 0
    for _ in range(3):
        gone = workflow.process("clip.mp4", 3, image, [])
    np.testing.assert_array_equal(gone.image, image)  # carried for 2 frames only


def test_keep_track_ids_leaves_that_face_visible():
    workflow = FaceWorkflow(WorkflowConfig(anonymize="pixelate", keep_track_ids=(1,)))
    workflow.begin(sequence=True)
    image = _textured()
    result = workflow.process("clip.mp4", 0, image, [_face([10, 10, 60, 70]), _face([200, 100, 260, 180])])
    assert [f.track_id for f in result.faces] == [0, 1]
    np.testing.assert_array_equal(result.image[100:180, 200:260], image[100:180, 200:260])
    assert np.any(result.image[10:70, 10:60] != image[10:70, 10:60], axis=2).mean() > 0.97


def test_smoothing_stage_reduces_box_jitter_and_the_pose_follows_the_smoothed_landmarks():
    from retinaface.config import SmoothConfig
    from retinaface.faces.tracking import IouTracker
    from retinaface.inference.stages import FaceStages, TrackSmoother

    rng = np.random.default_rng(3)
    jitter = rng.normal(0, 1.5, (90, 4))
    spread = {}
    for smoothed in (False, True):
        stages = FaceStages(smoother=TrackSmoother(SmoothConfig()) if smoothed else None)
        tracker = IouTracker(fps=30.0)
        boxes = []
        for frame in range(90):
            face = _face(np.array([100, 100, 160, 170]) + jitter[frame])
            face.image_size = (320, 240)
            (faces,) = stages([_textured(60, 60)], [[face]], tracker=tracker)
            assert faces[0].track_id == 0
            boxes.append(faces[0].box)
        spread[smoothed] = np.std(np.array(boxes)[20:], axis=0).mean()
        if smoothed:  # the pose is the smoothed landmarks' pose
            from retinaface.faces.pose import estimate_pose

            pose, _ = estimate_pose(faces[0].landmarks, faces[0].box, 320, 240)
            assert faces[0].pose.to_dict() == pose.to_dict()
    assert spread[True] < 0.5 * spread[False]


def test_stills_get_no_track_ids_and_crops_are_recorded(tmp_path):
    workflow = FaceWorkflow(WorkflowConfig(track=True, crops_dir=tmp_path / "crops"))
    workflow.begin(sequence=False)
    result = workflow.process("/data/photo.jpg", 0, _textured(), [_face([100, 60, 160, 140])])
    assert result.faces[0].track_id is None and result.image is None
    (extra,) = result.extras
    assert extra["crop"]["path"].endswith("photo_00.png") and extra["crop"]["size"] == [112, 112]
    assert (tmp_path / "crops" / "photo_00.png").is_file()


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="crop style"):
        WorkflowConfig(crop_style="square")
    with pytest.raises(ValueError, match="strength"):
        WorkflowConfig(anonymize="blur", anonymize_strength=-1)
