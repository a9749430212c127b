"""IoU tracking: exact small cases, crossings, missed frames, state lifetime, empty and NaN input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as torch_box_iou

from retinaface.tracking import IouTracker, box_iou


def test_box_iou_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(2, 20, 2))
    wh = rng.uniform(1, 50, size=(2, 20, 2))
    a, b = np.concatenate([xy[0], xy[0] + wh[0]], 1), np.concatenate([xy[1], xy[1] + wh[1]], 1)
    expected = torch_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b), expected, atol=1e-12)


def test_box_iou_of_nan_and_empty_boxes_is_zero() -> None:
    iou = box_iou(np.array([[np.nan, 0, 10, 10], [5, 5, 5, 5]]), np.array([[0, 0, 10, 10.0]]))
    assert iou.tolist() == [[0.0], [0.0]]
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_faces_keep_their_ids_while_they_move() -> None:
    tracker = IouTracker()
    a, b = np.array([0, 0, 40, 40.0]), np.array([100, 0, 140, 40.0])
    assert tracker.update(np.stack([a, b])).tolist() == [0, 1]
    for step in range(1, 6):
        shift = np.array([5.0 * step, 2.0 * step] * 2)
        # listed in the other order: ids follow the boxes, not their position in the list
        assert tracker.update(np.stack([b + shift, a + shift])).tolist() == [1, 0]


def test_optimal_assignment_beats_greedy() -> None:
    # IoU of tracks 0, 1 with boxes p, q: 0-p 0.48, 0-q 0.67, 1-p 0.08, 1-q 0.54. Greedy (best pair first)
    # would give track 0 to q and leave p with track 1 below the threshold (a spurious new track); the
    # optimal one-to-one matching keeps both tracks.
    tracker = IouTracker(iou_threshold=0.3)
    tracker.update(np.array([[0, 0, 10, 10], [5, 0, 15, 10.0]]))
    ids = tracker.update(np.array([[-3.5, 0, 6.5, 10], [2, 0, 12, 10.0]]))
    assert ids.tolist() == [0, 1]


def test_new_faces_get_new_ids_and_ids_are_never_reused() -> None:
    tracker = IouTracker(max_missed=0)
    assert tracker.update(np.array([[0, 0, 10, 10.0]])).tolist() == [0]
    assert tracker.update(np.array([[50, 50, 60, 60.0]])).tolist() == [1]  # no overlap: a new face
    assert tracker.active_ids == [1]  # track 0 ended (missed once, max_missed=0)
    assert tracker.update(np.array([[0, 0, 10, 10.0]])).tolist() == [2]


def test_a_briefly_missed_face_keeps_its_id_and_state() -> None:
    tracker = IouTracker(max_missed=2)
    box = np.array([[0, 0, 20, 20.0]])
    (track,) = tracker.update(box)
    tracker.state[track] = "previous fit"
    tracker.update(np.zeros((0, 4)))
    tracker.update(np.zeros((0, 4)))
    assert tracker.update(box).tolist() == [track] and tracker.state[track] == "previous fit"
    for _ in range(3):
        tracker.update(np.zeros((0, 4)))
    assert tracker.active_ids == [] and tracker.state == {}


def test_low_overlap_does_not_match() -> None:
    tracker = IouTracker(iou_threshold=0.5)
    tracker.update(np.array([[0, 0, 10, 10.0]]))
    assert tracker.update(np.array([[6, 0, 16, 10.0]])).tolist() == [1]  # IoU 4/16 = 0.25


def test_nan_boxes_start_their_own_tracks_without_breaking_others() -> None:
    tracker = IouTracker()
    tracker.update(np.array([[0, 0, 10, 10.0]]))
    ids = tracker.update(np.array([[np.nan] * 4, [1, 0, 11, 10.0]]))
    assert ids.tolist() == [1, 0]


@pytest.mark.parametrize("kwargs", [{"iou_threshold": 0.0}, {"iou_threshold": 1.5}, {"max_missed": -1}])
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        IouTracker(**kwargs)


def test_detector_hands_each_face_its_previous_frame_for_warm_starts(detector, astronaut_image) -> None:
    from retinaface import Detector

    class Recording(Detector):
        """Stands in for the mesh fit: records the warm-start states it is given and leaves one per face."""

        def fit_meshes(self, image, faces, init=None):
            self.calls.append(list(init))
            for face in faces:
                face.mesh_state = ("fit of frame", len(self.calls) - 1, face.track_id)
            return faces

    recording = Recording(detector.model)
    recording.decode_mesh, recording.calls = True, []
    tracker = IouTracker()
    shifted = np.roll(astronaut_image, 6, axis=1)  # the face moved a little: same track
    first = recording.detect_batch([astronaut_image, shifted], tracker=tracker)
    second = recording.detect_batch([astronaut_image], tracker=tracker)
    assert [len(f) for f in first + second] == [1, 1, 1]
    assert {f[0].track_id for f in first + second} == {0}
    assert recording.calls == [[None], [("fit of frame", 0, 0)], [("fit of frame", 1, 0)]]
    assert tracker.state[0] is second[0][0]
