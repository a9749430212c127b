"""The accuracy benchmark's measures: NME, Procrustes, the reference pose's convention, the reference cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from retinaface.evaluation import mesh_accuracy
from retinaface.evaluation.mesh_accuracy import mediapipe_references, nme, reference_rotation, similarity_procrustes
from retinaface.faces.pose import estimate_pose, euler_from_rotation, head_model_vertices, template_landmarks
from retinaface.utils.rotations import rotation_error_degrees


def _angle(a, b) -> float:
    return float(rotation_error_degrees(a, b))

TEMPLATE = head_model_vertices()  # the head frame both poses are measured in


def test_nme_of_a_known_offset() -> None:
    reference = np.random.default_rng(0).uniform(0, 100, size=(468, 2))
    shifted = reference + [3.0, 4.0]  # every vertex 5 px away
    assert nme(shifted, reference, np.array([0, 0, 50, 200.0])) == pytest.approx(5.0 / 100.0)


def test_procrustes_recovers_a_similarity_transform() -> None:
    rotation = Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix()
    target = 3.5 * TEMPLATE @ rotation.T + [10.0, -4.0, 2.0]
    scale, found, shift = similarity_procrustes(TEMPLATE, target)
    assert scale == pytest.approx(3.5)
    np.testing.assert_allclose(found, rotation, atol=1e-9)
    np.testing.assert_allclose(shift, [10.0, -4.0, 2.0], atol=1e-9)
    assert _angle(found, rotation) < 1e-5
    assert _angle(np.eye(3), Rotation.from_euler("y", 30, degrees=True).as_matrix()) == pytest.approx(30)


def test_the_oracle_placement_puts_a_similar_shape_exactly_on_the_reference() -> None:
    # a reference that is the head itself, turned, scaled and shifted in mediapipe's frame (x right, y down,
    # z away): placing the head by the answer leaves no error; a different shape keeps its own difference
    model = Rotation.from_euler("xyz", [10, -30, 5], degrees=True).as_matrix()
    turned = 80.0 * TEMPLATE @ model.T
    reference = np.stack([300 + turned[:, 0], 200 - turned[:, 1], -turned[:, 2]], axis=1)
    np.testing.assert_allclose(mesh_accuracy.oracle_placement(TEMPLATE, reference), reference, atol=1e-7)
    wider = TEMPLATE * np.array([1.2, 1.0, 1.0])  # a wider face cannot be placed onto it exactly
    box = np.array([220.0, 120.0, 380.0, 280.0])
    assert nme(mesh_accuracy.oracle_placement(wider, reference), reference, box) > 0.01


@pytest.mark.parametrize("yaw, pitch, roll", [(25, 0, 0), (0, -20, 0), (0, 0, 15), (-30, 15, -10)])
def test_reference_pose_and_our_pose_share_conventions(yaw, pitch, roll) -> None:
    # A head turned by a known rotation, seen orthographically as mediapipe reports it (x right, y down in
    # pixels, z growing away from the camera): the reference pose must read the same angles as our PnP.
    model = (Rotation.from_euler("z", -roll, degrees=True) * Rotation.from_euler("y", yaw, degrees=True)
             * Rotation.from_euler("x", -pitch, degrees=True)).as_matrix()
    turned = TEMPLATE @ model.T * 60.0
    points = np.stack([640 + turned[:, 0], 360 - turned[:, 1], -turned[:, 2]], axis=1)
    assert euler_from_rotation(reference_rotation(points, TEMPLATE)) == pytest.approx([yaw, pitch, roll], abs=1e-6)

    # our pose from the same head's five landmarks (weak perspective: a distant camera)
    landmarks = template_landmarks() @ model.T * 60.0
    pixels = np.stack([640 + landmarks[:, 0], 360 - landmarks[:, 1]], axis=1)
    pose, _ = estimate_pose(pixels, np.array([580, 300, 700, 420.0]), 1280, 720)
    assert _angle(pose.relative_rotation, reference_rotation(points, TEMPLATE)) < 2.0


def test_cached_references_need_no_mediapipe(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"not really a jpeg, only hashed")
    boxes = np.array([[10, 20, 110, 140.0], [200, 20, 260, 90.0]])
    key = mesh_accuracy._image_key(image)
    points = np.arange(468 * 3, dtype=float).reshape(468, 3)
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({mesh_accuracy._box_key(key, boxes[0]): points.tolist(),
                                 mesh_accuracy._box_key(key, boxes[1]): None}))
    ((first, second),) = mediapipe_references([(image, boxes)], python=tmp_path / "no-python", cache=cache)
    np.testing.assert_array_equal(first, points)
    assert second is None
    with pytest.raises(FileNotFoundError, match="mediapipe"):  # a box not in the cache needs the interpreter
        mediapipe_references([(image, boxes + 1)], python=tmp_path / "no-python", cache=cache)


def test_shrunk_faces_are_scored_against_the_full_size_reference(tmp_path: Path) -> None:
    """A face of 120 px and one of 30 px; on the copy shrunk by half the detector's mesh is 1 px right of where
    the half-size mesh would be and the judge's full-size points are 2 px below our full-size mesh: NME on the
    copy = |(1, -1)| / sqrt(copy box area), at full size 2 / sqrt(box area); the 30 px face is not scored."""
    from types import SimpleNamespace

    import cv2

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.zeros((200, 240, 3), np.uint8))
    rng = np.random.default_rng(0)
    big, tiny = np.array([40.0, 30.0, 140.0, 150.0]), np.array([180.0, 20.0, 200.0, 50.0])
    vertices = np.concatenate([rng.uniform(big[:2], big[2:], (468, 2)), rng.normal(0, 5, (468, 1))], axis=1)

    def detector(image):
        if image.shape[:2] == (200, 240):
            return [SimpleNamespace(box=big, mesh_vertices=vertices), SimpleNamespace(box=tiny, mesh_vertices=vertices)]
        assert image.shape[:2] == (100, 120)
        return [SimpleNamespace(box=tiny * 0.5, mesh_vertices=vertices * 0.5),
                SimpleNamespace(box=big * 0.5 + 0.3, mesh_vertices=vertices * 0.5 + np.array([1.0, 0.0, 0.0]))]

    reference = vertices + np.array([0.0, 2.0, 0.0])
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({mesh_accuracy._box_key(mesh_accuracy._image_key(photo), big): reference.tolist()}))
    (row,) = mesh_accuracy.evaluate_shrunk(detector, [photo], [0.5], tmp_path / "shrunk", python=tmp_path / "no-python",
                                           cache=cache, judge_small=False)
    small_box = big * 0.5 + 0.3
    assert row.factor == 0.5 and row.size == pytest.approx(60.0) and row.nme_judge is None
    assert row.nme_mesh == pytest.approx(np.sqrt(2.0) / np.sqrt(np.prod(small_box[2:] - small_box[:2])))
    assert row.nme_full == pytest.approx(2.0 / np.sqrt(np.prod(big[2:] - big[:2])))
    assert (tmp_path / "shrunk" / "photo_shrunk0.5.png").is_file()


def test_windows_around_one_face_score_that_face_only(tmp_path: Path) -> None:
    """``central_only``: of two faces with a reference in a 200 x 200 window, only the one over the centre is
    scored (its neighbour at the border is not the face the window was made for)."""
    from types import SimpleNamespace

    import cv2

    window = tmp_path / "window.png"
    cv2.imwrite(str(window), np.zeros((200, 200, 3), np.uint8))
    centre_box, neighbour_box = np.array([60.0, 50.0, 140.0, 150.0]), np.array([130.0, 0.0, 200.0, 80.0])
    vertices = np.concatenate([np.random.default_rng(1).uniform(60, 140, (468, 2)), np.zeros((468, 1))], axis=1)
    faces = [SimpleNamespace(box=b, mesh_vertices=vertices, pose=None) for b in (neighbour_box, centre_box)]
    key = mesh_accuracy._image_key(window)
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({mesh_accuracy._box_key(key, b): (vertices + 1.0).tolist() for b in (centre_box, neighbour_box)}))
    everyone, _ = mesh_accuracy.evaluate_photos(lambda image: faces, [window], python=tmp_path / "no-python", cache=cache)
    central, counts = mesh_accuracy.evaluate_photos(lambda image: faces, [window], python=tmp_path / "no-python", cache=cache,
                                                    central_only=True)
    assert len(everyone) == 2 and [row.box for row in central] == [[60.0, 50.0, 140.0, 150.0]]
    assert counts["large"] == 1


def test_re_posed_windows_turn_the_face_and_keep_the_rest(tmp_path: Path, astronaut_image) -> None:
    """Turned heads made from a photo: one window per face and yaw, named after both; the face turned (its
    pixels change), the window's corners (background) as they were."""
    import cv2

    from retinaface import Detector
    from retinaface.evaluation.pose_truth import face_window

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_image)
    detector = Detector.from_pretrained("mobilenet0.25", device="cpu", refine_landmarks=False)
    paths = mesh_accuracy.write_reposed_photos(detector, [photo], [-40.0, 40.0], tmp_path / "reposed")
    assert [p.name for p in paths] == ["astronaut_reposed0_yaw-40.png", "astronaut_reposed0_yaw+40.png"]
    (face,) = detector(astronaut_image)
    window = face_window(astronaut_image, face.box)
    side = window.shape[0]
    assert side == round(3 * max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
    for path in paths:
        drawn = cv2.imread(str(path))
        assert drawn.shape == window.shape
        corner = slice(0, side // 8)
        assert np.array_equal(drawn[corner, corner], window[corner, corner])
        middle = slice(side * 3 // 8, side * 5 // 8)
        assert np.abs(drawn[middle, middle].astype(int) - window[middle, middle]).mean() > 5
