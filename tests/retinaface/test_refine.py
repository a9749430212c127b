"""The landmark refiner: exact crop geometry and mapping back, fallbacks, and better landmarks on small faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from retinaface import Detector
from retinaface.faces.landmarks import FLIPPED_LANDMARK_ORDER, in_plane_angles, transform_boxes, transform_landmarks
from retinaface.inference.refine import LandmarkRefiner, crop_transforms


def test_crop_transform_centres_and_scales_the_box():
    maps, side = crop_transforms(np.array([[10.0, 20.0, 50.0, 100.0]]), face_size=160, context=2.0)
    assert side == 320
    # longer side 80 px -> 160 px, box centre (30, 60) -> crop centre (160, 160)
    np.testing.assert_allclose(maps[0], [[2.0, 0.0, 100.0], [0.0, 2.0, 40.0]])


def test_crop_transform_turns_a_rolled_face_upright_about_the_box_centre():
    box = np.array([[10.0, 20.0, 50.0, 100.0]])
    maps, side = crop_transforms(box, face_size=160, context=2.0, angles=np.array([np.pi / 2]))
    # a face rolled a quarter turn clockwise: its rightward axis points down the image; the crop turns it back
    np.testing.assert_allclose(maps[0], [[0.0, 2.0, 40.0], [-2.0, 0.0, 220.0]], atol=1e-12)
    centre, below = np.array([30.0, 60.0, 1.0]), np.array([30.0, 70.0, 1.0])
    np.testing.assert_allclose(maps[0] @ centre, [160.0, 160.0], atol=1e-12)
    np.testing.assert_allclose(maps[0] @ below, [180.0, 160.0], atol=1e-12)  # 10 px down the image -> 20 px right


LEVEL_FACE = np.array([[110, 65], [130, 65], [120, 78], [112, 88], [128, 88]], dtype=np.float64)


def _rolled(points, degrees, centre=(120.0, 75.0)):
    return transform_landmarks(points, cv2.getRotationMatrix2D(centre, -degrees, 1.0))  # clockwise in the image


@pytest.mark.parametrize("degrees", [0.0, 12.0, -30.0, 75.0, 160.0])
def test_in_plane_angle_of_a_rolled_face(degrees):
    np.testing.assert_allclose(np.degrees(in_plane_angles(_rolled(LEVEL_FACE, degrees))), degrees, atol=1e-9)


def test_in_plane_angle_of_a_turned_head_follows_the_mouth_as_well_as_the_eyes():
    turned = LEVEL_FACE.copy()
    turned[:2, 0] = [116.0, 124.0]  # yawed: the eyes close together, the eye line as level as before
    both = np.stack([_rolled(turned, 20.0), _rolled(LEVEL_FACE, 20.0)])
    np.testing.assert_allclose(np.degrees(in_plane_angles(both)), [20.0, 20.0], atol=1e-9)
    assert in_plane_angles(np.zeros((0, 5, 2))).shape == (0,)


class FakeDetector:
    """Answers each crop with known landmarks: the 'true' points mapped into the crop (mirrored for mirror
    crops, in the mirrored image's left/right order), and the expected box."""

    def __init__(self, true_landmarks, boxes, *, flip=True, shift_box=0.0, empty=False, angles=None):
        self.maps, self.side = crop_transforms(boxes, face_size=64, context=2.0, angles=angles)
        self.true, self.boxes, self.flip, self.shift_box, self.empty = true_landmarks, boxes, flip, shift_box, empty
        self.calls = []

    def __call__(self, crops):
        self.calls.append([tuple(c.shape) for c in crops])
        k = len(self.boxes)
        out = []
        for index, _ in enumerate(crops):
            face, mirrored = index % k, index >= k
            m = self.maps[face]
            points = transform_landmarks(self.true[face], m)
            box = transform_boxes(self.boxes[face], m) + self.shift_box
            if mirrored:
                points = points[FLIPPED_LANDMARK_ORDER].copy()
                points[:, 0] = self.side - points[:, 0]
                box = np.array([self.side - box[2], box[1], self.side - box[0], box[3]])
            n = 0 if self.empty else 1
            out.append({"boxes": torch.tensor(box[None], dtype=torch.float32)[:n],
                        "landmarks": torch.tensor(points[None], dtype=torch.float32)[:n]})
        return out


def _faces():
    boxes = np.array([[100.0, 50.0, 140.0, 100.0], [10.0, 10.0, 30.0, 34.0]])
    detected = np.array([[[110, 65], [130, 65], [120, 78], [112, 88], [128, 88]],
                         [[15, 18], [25, 18], [20, 24], [16, 29], [24, 29]]], dtype=np.float64)
    true = detected + np.array([1.5, -2.0])  # what the closer look 'sees'
    return boxes, detected, true


def test_refined_landmarks_average_the_original_and_both_views():
    boxes, detected, true = _faces()
    fake = FakeDetector(true, boxes)
    refiner = LandmarkRefiner(fake, face_size=64, context=2.0, flip=True)
    refined = refiner(np.zeros((200, 200, 3), np.uint8), boxes, detected)
    assert fake.calls == [[(3, 128, 128)] * 4]  # both faces and their mirrors in one batch
    np.testing.assert_allclose(refined, (detected + 2 * true) / 3, atol=1e-4)


def _rolled_faces(rolls):
    boxes = np.array([[100.0, 50.0, 140.0, 100.0], [10.0, 10.0, 30.0, 34.0], [150.0, 120.0, 190.0, 170.0]])[: len(rolls)]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    level = np.array([[[-10, -10], [10, -10], [0, 3], [-8, 13], [8, 13]]], dtype=np.float64) + centres[:, None]
    detected = np.stack([_rolled(points, roll, centre=tuple(centre)) for points, roll, centre in zip(level, rolls, centres)])
    return boxes, detected, detected + np.array([1.5, -2.0])


def test_rolled_faces_are_looked_at_upright_and_their_first_landmarks_count_less():
    """Rolled by 40 degrees: the crops are turned upright and only their answers count; by 15: the first
    landmarks count half; by 5: fully, as one more view."""
    boxes, detected, true = _rolled_faces([40.0, 15.0, 5.0])
    fake = FakeDetector(true, boxes, angles=np.radians([40.0, 15.0, 5.0]))
    refined = LandmarkRefiner(fake, face_size=64, context=2.0, flip=True)(np.zeros((200, 200, 3), np.uint8), boxes, detected)
    assert fake.calls == [[(3, 128, 128)] * 6]
    np.testing.assert_allclose(refined[0], true[0], atol=1e-4)
    np.testing.assert_allclose(refined[1], (0.5 * detected[1] + 2 * true[1]) / 2.5, atol=1e-4)
    np.testing.assert_allclose(refined[2], (detected[2] + 2 * true[2]) / 3, atol=1e-4)
    unturned = LandmarkRefiner(FakeDetector(true, boxes), face_size=64, context=2.0, upright=False)(
        np.zeros((200, 200, 3), np.uint8), boxes, detected)
    np.testing.assert_allclose(unturned, (detected + 2 * true) / 3, atol=1e-4)


def test_a_tolerance_leaves_that_much_roll_in_the_crop():
    boxes, detected, true = _rolled_faces([40.0, -15.0, 5.0])
    fake = FakeDetector(true, boxes, angles=np.radians([30.0, -5.0, 0.0]))  # turned by the roll beyond 10 degrees
    refined = LandmarkRefiner(fake, face_size=64, context=2.0, flip=False, upright_tolerance=10.0)(
        np.zeros((200, 200, 3), np.uint8), boxes, detected)
    np.testing.assert_allclose(refined[0], true[0], atol=1e-4)
    np.testing.assert_allclose(refined[1], (0.5 * detected[1] + true[1]) / 1.5, atol=1e-4)
    np.testing.assert_allclose(refined[2], (detected[2] + true[2]) / 2, atol=1e-4)


def test_only_rolled_faces_are_looked_at_again_and_blend_smoothly():
    boxes, detected, true = _rolled_faces([40.0, 15.0, 5.0])
    fake = FakeDetector(true[:2], boxes[:2], angles=np.radians([40.0, 15.0]))
    refined = LandmarkRefiner(fake, face_size=64, context=2.0, only_rolled=True)(np.zeros((200, 200, 3), np.uint8), boxes, detected)
    assert fake.calls == [[(3, 128, 128)] * 4]  # the upright face is not sent
    np.testing.assert_allclose(refined[0], true[0], atol=1e-4)
    np.testing.assert_allclose(refined[1], 0.5 * detected[1] + 0.5 * true[1], atol=1e-4)
    np.testing.assert_array_equal(refined[2], detected[2])
    with pytest.raises(ValueError, match="upright"):
        LandmarkRefiner(fake, only_rolled=True, upright=False)
    with pytest.raises(ValueError, match="increasing"):
        LandmarkRefiner(fake, first_look_rolls=(20.0, 10.0))


def test_without_mirror_only_the_plain_crop_is_used():
    boxes, detected, true = _faces()
    refined = LandmarkRefiner(FakeDetector(true, boxes), face_size=64, context=2.0, flip=False)(
        np.zeros((200, 200, 3), np.uint8), boxes, detected)
    np.testing.assert_allclose(refined, (detected + true) / 2, atol=1e-4)


@pytest.mark.parametrize("fake_kwargs", [{"empty": True}, {"shift_box": 90.0}])
def test_faces_not_found_again_keep_their_landmarks(fake_kwargs):
    boxes, detected, true = _faces()
    refined = LandmarkRefiner(FakeDetector(true, boxes, **fake_kwargs), face_size=64, context=2.0)(
        np.zeros((200, 200, 3), np.uint8), boxes, detected)
    np.testing.assert_array_equal(refined, detected)


def test_non_finite_faces_are_left_alone_and_never_sent():
    boxes, detected, true = _faces()
    boxes[1, 0] = np.nan
    fake = FakeDetector(true[:1], boxes[:1])
    refined = LandmarkRefiner(fake, face_size=64, context=2.0)(np.zeros((200, 200, 3), np.uint8), boxes, detected)
    assert fake.calls == [[(3, 128, 128)] * 2]
    np.testing.assert_allclose(refined[0], (detected[0] + 2 * true[0]) / 3, atol=1e-4)
    np.testing.assert_array_equal(refined[1], detected[1])
    empty = LandmarkRefiner(fake)(np.zeros((20, 20, 3), np.uint8), np.zeros((0, 4)), np.zeros((0, 5, 2)))
    assert empty.shape == (0, 5, 2)


def _landmark_error_vs_full_resolution(image, factor, refine):
    """Mean landmark distance (fraction of the face size) between detections on the image shrunk by
    ``factor`` and the full-resolution detections scaled down: the full-size view is the better-resolved
    reference for the same faces."""
    from torchvision.ops import box_iou

    full = Detector.from_pretrained(device="cpu")(image)
    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    faces = Detector.from_pretrained(device="cpu", refine_landmarks=refine)(small)
    reference_boxes = torch.tensor(np.array([f.box for f in full]) * factor)
    overlap = box_iou(torch.tensor(np.array([f.box for f in faces])), reference_boxes).numpy()
    errors = []
    for face, row in zip(faces, overlap):
        j = int(row.argmax())
        if row[j] >= 0.5:
            size = float((reference_boxes[j, 2:] - reference_boxes[j, :2]).prod().sqrt())
            errors.append(np.linalg.norm(face.landmarks - full[j].landmarks * factor, axis=1).mean() / size)
    return float(np.mean(errors)), len(errors)


def test_refinement_brings_a_small_face_closer_to_its_full_resolution_landmarks(astronaut_image):
    plain, count = _landmark_error_vs_full_resolution(astronaut_image, 0.25, refine=False)
    refined, refined_count = _landmark_error_vs_full_resolution(astronaut_image, 0.25, refine=True)
    assert count == refined_count == 1
    assert refined < 0.75 * plain  # measured 0.022 against 0.046


def test_refinement_helps_a_crowd_of_small_faces(crowd_image):
    plain, count = _landmark_error_vs_full_resolution(crowd_image, 0.5, refine=False)
    refined, refined_count = _landmark_error_vs_full_resolution(crowd_image, 0.5, refine=True)
    assert count >= 15 and refined_count >= 15
    assert refined < 0.85 * plain  # measured 0.044 against 0.058 over 21 faces


def test_detector_refines_only_when_asked_and_updates_the_pose(astronaut_image):
    plain = Detector.from_pretrained(device="cpu")(astronaut_image)
    refined = Detector.from_pretrained(device="cpu", refine_landmarks=True)(astronaut_image)
    assert len(plain) == len(refined) == 1
    np.testing.assert_array_equal(plain[0].box, refined[0].box)
    moved = np.linalg.norm(plain[0].landmarks - refined[0].landmarks, axis=1)
    assert 0 < moved.max() < 0.05 * (plain[0].box[2] - plain[0].box[0])
    assert refined[0].pose is not None and refined[0].pose != plain[0].pose
    assert Detector.from_pretrained(device="cpu").landmark_refiner.only_rolled  # upright faces are left alone
    assert Detector.from_pretrained(device="cpu", refine_landmarks=False).landmark_refiner is None


def _mesh_head_calls(model) -> list[int]:
    calls = [0]

    def count(*_):
        calls[0] += 1

    model.heads.mesh.register_forward_hook(count)
    return calls


def test_refiner_never_runs_the_mesh_head_and_refines_as_with_it(astronaut_image):
    """The refiner reads only landmarks: its crops' detections skip the RoI mesh head, and the refined
    landmarks are those of a full detection pass, bit for bit."""
    detector = Detector.from_pretrained(device="cpu", refine_landmarks=True)
    assert type(detector.model.heads.mesh).__name__ == "RoIMeshHead"
    faces = detector.find([astronaut_image])[0]
    boxes, landmarks = np.stack([f.box for f in faces]), np.stack([f.landmarks for f in faces])
    calls = _mesh_head_calls(detector.model)
    skipped = detector.landmark_refiner(astronaut_image, boxes, landmarks)
    assert calls[0] == 0
    full = LandmarkRefiner(lambda crops: detector.model(crops), face_size=detector.landmark_refiner.face_size,
                           context=detector.landmark_refiner.context, flip=detector.landmark_refiner.flip,
                           upright_tolerance=detector.landmark_refiner.upright_tolerance,
                           first_look_rolls=detector.landmark_refiner.first_look_rolls, min_iou=detector.landmark_refiner.min_iou)(astronaut_image, boxes, landmarks)
    assert calls[0] > 0  # the full pass does run it, so the hook would have seen the refiner's
    assert not np.array_equal(skipped, landmarks)
    np.testing.assert_array_equal(skipped, full)


@pytest.mark.parametrize("degrees", [-30.0, 30.0])
def test_upright_crops_find_a_rolled_face_as_the_upright_photo_does(astronaut_image, degrees):
    """The astronaut turned by 30 degrees: the landmarks refined on upright crops land where the refined
    landmarks of the untouched photo, turned with it, are (0.005 of the face against 0.027-0.031 with
    unturned crops), and the head's roll changes by the turn."""
    from retinaface.config import RefineConfig

    height, width = astronaut_image.shape[:2]
    upright = Detector.from_pretrained(device="cpu", refine_landmarks=True)(astronaut_image)[0]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), -degrees, 1.0)  # clockwise in the image
    turned_image = cv2.warpAffine(astronaut_image, turn, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    expected = transform_landmarks(upright.landmarks, turn)
    size = float(np.sqrt(np.prod(upright.box[2:] - upright.box[:2])))

    def found(refine):
        faces = Detector.from_pretrained(device="cpu", refine_landmarks=True, refine=refine)(turned_image)
        face = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks - expected, axis=1).mean()))
        return face, float(np.linalg.norm(face.landmarks - expected, axis=1).mean()) / size

    face, error = found(RefineConfig())
    _, unturned_error = found(RefineConfig(upright=False))
    assert error < 0.012 and error < 0.5 * unturned_error
    assert abs(face.pose.roll - upright.pose.roll - degrees) < 2.0
