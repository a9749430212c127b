"""Head pose against exact truth: faces of the face-shape prior rendered at known poses, photos turned in-plane.

The truth is the rotation the face was rendered with (built with SciPy in the documented convention,
``retinaface.evaluation.pose_truth.turn``) or the angle a photo was turned by; the detector only sees the
picture. ``python scripts/bench_pose_truth.py`` measures the full grid. The bounds hold today's pose (the prior's
landmark vertices) to what it measures on these faces: the issue's target (median at most 3 degrees per axis)
is not met on rendered faces, whose nods read about a third small.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retinaface.evaluation.pose_truth import (
    angles_of,
    best_face,
    photo_roll_rows,
    prior_face,
    render_face,
    rendered_rows,
    Drawing,
    judge_drawings,
    repose_photo_face,
    reposed_rows,
    summarize,
    turn,
)
from retinaface.faces.pose import HeadPose, camera_matrix, head_model_vertices, rotation_from_euler

POSES = [(0, 0, 0), (40, 0, 0), (-25, 0, 0), (0, 20, 0), (0, -20, 0), (0, 0, 25), (30, 15, -15), (-45, -15, 20)]


def test_the_truth_harness_speaks_the_documented_convention() -> None:
    rng = np.random.default_rng(0)
    flip = np.diag([1.0, -1.0, -1.0])
    for angles in rng.uniform(-60, 60, size=(20, 3)):
        np.testing.assert_allclose(angles_of(turn(*angles)), angles, atol=1e-9)
        np.testing.assert_allclose(flip @ turn(*angles) @ flip, rotation_from_euler(*angles), atol=1e-9)
    # against the frontal face, yaw > 0 moves the nose tip to the image's right of the eyes, pitch > 0 moves it up
    face = prior_face()
    nose, eyes = 1, [33, 133, 362, 263]  # mediapipe topology: nose tip, eye corners
    offset = lambda p: p[nose] - p[eyes].mean(0)  # noqa: E731
    frontal = offset(render_face(face, 0, 0, 0).pixels)
    assert offset(render_face(face, 30, 0, 0).pixels)[0] > frontal[0] + 15
    assert offset(render_face(face, 0, 20, 0).pixels)[1] < frontal[1] - 10


@pytest.fixture(scope="module")
def first_look():
    """The detector's own landmarks, without the second, upright look that rolled faces get by default."""
    from retinaface import Detector

    return Detector.from_pretrained("mobilenet0.25", device="cpu", refine_landmarks=False)


@pytest.fixture(scope="module")
def rendered(first_look):
    return rendered_rows(first_look, POSES, identities=(None, 1000, 1001), sizes=(140.0,), image_size=384)


def test_pose_of_rendered_faces_matches_the_angles_they_were_turned_by(rendered) -> None:
    summary = summarize(rendered)
    assert summary["scored"] == len(POSES) * 3  # every face found, every face posed
    # measured 2026-12-06: median |error| yaw 2.1, pitch 2.5, roll 1.5 degrees; geodesic median 6.3, largest 15.0
    for axis in ("yaw", "pitch", "roll"):
        assert summary[f"median_{axis}"] <= 3.0, summary
        assert abs(summary[f"bias_{axis}"]) <= 2.5, summary
    assert summary["median_geodesic"] <= 7.5, summary
    assert max(row.geodesic for row in rendered) < 17.0, [(r.truth, r.estimate) for r in rendered]
    frontal = [r for r in rendered if r.truth == (0.0, 0.0, 0.0)]
    assert all(r.geodesic < 6.0 for r in frontal), [r.estimate for r in frontal]


ROLLED_POSES = [(0, 0, 30), (0, 0, -30), (30, 0, 30), (-30, 0, -30), (0, 15, 30), (0, -15, -30), (45, 15, -30), (-15, -15, 30)]


def test_rolled_heads_read_better_with_the_default_upright_look(detector, first_look) -> None:
    """Heads rolled by 30 degrees: the default detector looks at them again in upright crops, and their pose
    comes closer to the truth than from the first landmarks (measured 2026-12-07 on these 24 faces: median
    geodesic error 5.6 against 9.2 degrees, roll 0.5 against 3.7, yaw 2.3 against 3.4)."""
    kwargs = dict(identities=(None, 1000, 1001), sizes=(140.0,), image_size=384)
    upright, first = summarize(rendered_rows(detector, ROLLED_POSES, **kwargs)), summarize(rendered_rows(first_look, ROLLED_POSES, **kwargs))
    assert upright["scored"] == first["scored"] == len(ROLLED_POSES) * 3
    assert upright["median_geodesic"] < 0.75 * first["median_geodesic"], (upright, first)
    assert upright["median_roll"] < 1.5 and upright["median_roll"] < 0.5 * first["median_roll"], (upright, first)
    assert upright["median_yaw"] <= first["median_yaw"], (upright, first)


def test_nods_read_as_nods(rendered) -> None:
    # measured 2026-12-06: 20-degree nods read 15.6 to 17.9 up and -10.0 to -18.9 down (one identity's nod
    # down reads half its size: the open target of issue #22)
    for pitch in (20, -20):
        rows = [r for r in rendered if r.truth == (0.0, float(pitch), 0.0)]
        assert len(rows) == 3
        read = np.array([r.estimate[1] for r in rows])
        assert (np.sign(read) == np.sign(pitch)).all() and (np.abs(read) >= 0.45 * abs(pitch)).all(), read
        assert abs(read.mean() - pitch) <= 6.0, read
        assert all(abs(r.estimate[0]) < 4 and abs(r.estimate[2]) < 4 for r in rows), [r.estimate for r in rows]


def test_a_photo_turned_in_plane_turns_the_roll_by_that_angle(detector, astronaut_image) -> None:
    (face,) = detector(astronaut_image)
    rows = photo_roll_rows(detector, astronaut_image, face.box[None], [-25.0, 20.0], name="astronaut")
    assert len(rows) == 2 and all(r.estimate is not None for r in rows)
    # measured 2026-12-06: roll within 1.8 degrees of the turn; yaw moves by up to 6.7 degrees although the head
    # did not turn (the detector's landmarks are not quite equivariant to turning the picture)
    for row in rows:
        errors = row.errors
        assert errors[2] <= 2.5 and errors[0] <= 8.0 and errors[1] <= 8.0, (row.truth, row.estimate)


def test_the_renderer_places_the_face_where_the_pinhole_says(detector) -> None:
    # the detector's box holds the projected vertices: the picture and the truth describe the same face
    face_render = render_face(prior_face(1000), 20, -10, 5, size=384, face_px=150)
    face = best_face(detector(face_render.image), np.array([192.0, 192.0]))
    low, high = face_render.pixels.min(0), face_render.pixels.max(0)
    assert face is not None
    assert np.abs(face.box[:2] - low).max() < 25 and np.abs(face.box[2:] - high).max() < 25


def _frontal_pose(side: int, distance: float) -> HeadPose:
    """A frontal head at ``distance`` template units on the optical axis of a ``side`` px window's camera."""
    return HeadPose(0.0, 0.0, 0.0, np.eye(3), np.array([0.0, 0.0, distance]), camera_matrix(side, side), 0.0)


def test_a_re_posed_face_carries_its_texture_with_the_turn() -> None:
    """A white dot painted where the head's nose tip projects lands, after the turn, where the turned nose tip
    projects (pinhole by hand); with no turn the face's pixels come back unchanged."""
    side, distance = 300, 6.0
    pose = _frontal_pose(side, distance)
    head = head_model_vertices()
    nose = 1  # mediapipe topology: the tip of the nose

    def project(vertex: np.ndarray) -> np.ndarray:
        x, y, z = vertex[0], -vertex[1], distance - vertex[2]  # model frame -> camera (y down, z away)
        return side * np.array([x / z, y / z]) + side / 2.0

    window = np.random.default_rng(0).integers(20, 90, (side, side, 3)).astype(np.uint8)
    window = cv2.GaussianBlur(window, (0, 0), 2.0)
    assert np.array_equal(repose_photo_face(window, pose, np.eye(3))[140:160, 140:160], window[140:160, 140:160])
    dot = project(head[nose]).round().astype(int)
    painted = window.copy()
    painted[dot[1] - 2 : dot[1] + 3, dot[0] - 2 : dot[0] + 3] = 255
    for yaw, pitch in ((30.0, 0.0), (0.0, -25.0), (-20.0, 20.0)):
        drawn = repose_photo_face(painted, pose, turn(yaw, pitch, 0.0))
        rows, cols = np.nonzero(drawn.min(axis=2) > 200)
        assert len(rows) >= 9, (yaw, pitch)
        expected = project(turn(yaw, pitch, 0.0) @ head[nose])
        assert np.abs(np.array([cols.mean(), rows.mean()]) - expected).max() < 1.0, (yaw, pitch, expected)
        assert np.abs(expected - dot).max() > 10  # the turn did move the nose


def test_re_posed_photo_faces_turn_the_pose_the_right_way(detector, astronaut_image) -> None:
    """The astronaut's face turned by known yaws and pitches: the pose follows each turn's direction, but
    reads it small (measured 2026-12-07 with these first landmarks: about a quarter of each yaw and of each
    pitch; over 26 photo faces, nods read about a fifth first, two fifths refined, while mediapipe reads them
    within 2.3 degrees on the same pictures; docs/mesh.md)."""
    (face,) = detector(astronaut_image)
    turns = [(30.0, 0.0, 0.0), (-30.0, 0.0, 0.0), (0.0, 30.0, 0.0), (0.0, -30.0, 0.0)]
    rows = reposed_rows(detector, astronaut_image, face.box[None], turns, name="astronaut")
    assert [r.label.split(" turned ")[1] for r in rows] == ["+30/+0/+0", "-30/+0/+0", "+0/+30/+0", "+0/-30/+0"]
    assert all(r.estimate is not None for r in rows)
    (right, left, up, down), (truth_right, truth_left, truth_up, truth_down) = (
        [np.array(r.estimate) for r in rows], [np.array(r.truth) for r in rows])
    assert truth_right[0] - truth_left[0] > 50 and truth_up[1] - truth_down[1] > 50  # the turns, seen from the camera
    assert right[0] - left[0] >= 0.15 * (truth_right[0] - truth_left[0]), (right, left)
    assert up[1] - down[1] >= 0.15 * (truth_up[1] - truth_down[1]), (up, down)


def test_the_judge_is_scored_against_its_own_unturned_answer_turned(tmp_path) -> None:
    """mediapipe's answers (cached, so no mediapipe runs) for two faces: the first's turned drawing is its
    unturned head turned exactly by the drawing's turn (error 0), the second face has no unturned answer, so its
    turned drawing is not scored."""
    import json

    from retinaface.evaluation import mesh_accuracy

    head = head_model_vertices()
    flip = np.diag([1.0, -1.0, -1.0])

    def answer(model_rotation: np.ndarray) -> list:  # mediapipe's frame: x right, y down, z away, pixels
        turned = head @ model_rotation.T * 50.0
        return np.stack([100 + turned[:, 0], 100 - turned[:, 1], -turned[:, 2]], axis=1).tolist()

    base_model = turn(10.0, -5.0, 3.0)
    about_camera = rotation_from_euler(20.0, 12.0, 0.0)  # a turn seen from the camera (OpenCV frame)
    box = np.array([50.0, 50.0, 150.0, 160.0])
    images = [np.full((200, 200, 3), value, np.uint8) for value in (10, 20, 30, 40)]
    drawings = [Drawing(0, None, images[0], box, np.eye(3)), Drawing(0, (20.0, 12.0, 0.0), images[1], box, about_camera),
                Drawing(1, None, images[2], box, np.eye(3)), Drawing(1, (0.0, 30.0, 0.0), images[3], box, about_camera)]
    answers = [answer(base_model), answer(flip @ about_camera @ flip @ base_model), None, answer(base_model)]
    store = {}
    for index, (image, points) in enumerate(zip(images, answers)):  # the files judge_drawings writes, byte for byte
        path = tmp_path / f"drawing_{index:05d}.png"
        cv2.imwrite(str(path), image)
        store[mesh_accuracy._box_key(mesh_accuracy._image_key(path), box)] = points
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps(store))
    (row,) = judge_drawings(drawings, python=tmp_path / "no-python", folder=tmp_path, cache=cache)
    assert row.turn == (20.0, 12.0, 0.0)
    np.testing.assert_allclose(row.estimate, row.truth, atol=1e-6)
    assert abs(row.truth[0] - angles_of(turn(10.0, -5.0, 3.0))[0]) > 10  # the truth did turn
