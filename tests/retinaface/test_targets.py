"""Target assignment and hard-negative mining, against small cases worked out by hand."""

import torch

from retinaface.model.box_coder import BoxCoder
from retinaface.model.loss import hard_negatives
from retinaface.model.matcher import AnchorMatcher
from retinaface.model.targets import TargetAssigner


def _assigner():
    return TargetAssigner(matcher=AnchorMatcher(positive_iou=0.5, negative_iou=0.3), box_coder=BoxCoder())


def test_stacked_targets_for_a_batch_with_and_without_faces():
    # three 10x10 anchors (cx, cy, w, h): one on the face, one overlapping it by 1/3 (IoU 0.2), one far away
    anchors = torch.tensor([[5.0, 5.0, 10.0, 10.0], [12.0, 5.0, 10.0, 10.0], [50.0, 50.0, 10.0, 10.0]])
    face = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    points = torch.tensor([[[2.0, 3.0], [8.0, 3.0], [5.0, 5.0], [3.0, 8.0], [7.0, 8.0]]])
    targets = [
        {"boxes": face, "landmarks": points, "landmarks_valid": torch.tensor([True])},
        {"boxes": torch.zeros(0, 4), "landmarks": torch.zeros(0, 5, 2)},
        {"boxes": face},  # no landmarks at all
    ]
    assigned = _assigner()(anchors, targets)
    assert assigned.labels.tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert torch.equal(assigned.matched_boxes[0, 0], face[0]) and assigned.matched_boxes[0, 1:].eq(0).all()
    # the face is exactly its anchor: zero box offsets; landmark (x - cx) / (0.1 w)
    assert torch.allclose(assigned.box_targets[0, 0], torch.zeros(4), atol=1e-6)
    expected = ((points[0] - torch.tensor([5.0, 5.0])) / 1.0).flatten()
    assert torch.allclose(assigned.landmark_targets[0, 0], expected)
    assert assigned.landmarks_valid.tolist() == [[True, False, False], [False] * 3, [False] * 3]
    assert assigned.box_targets[1].eq(0).all() and assigned.landmark_targets[2].eq(0).all()


def test_ignored_band_between_thresholds():
    anchors = torch.tensor([[5.0, 5.0, 10.0, 10.0], [7.0, 5.0, 10.0, 10.0]])  # second: IoU 8/12 with the face
    face = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    matcher = AnchorMatcher(positive_iou=0.7, negative_iou=0.3)
    assigned = TargetAssigner(matcher=matcher, box_coder=BoxCoder())(anchors, [{"boxes": face}])
    assert assigned.labels.tolist() == [[1, -1]]


def test_hard_negatives_pick_the_highest_losses_per_row():
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3], [0.2, 0.4, 0.8, 0.6, 0.1]])
    negative = torch.tensor([[True, False, True, True, True], [True, True, True, True, False]])
    picked = hard_negatives(loss, negative, torch.tensor([2, 3]))
    # row 0: anchor 1 is not a negative, so the two hardest negatives are 3 (0.7) and 2 (0.5)
    assert picked.tolist() == [[False, False, True, True, False], [False, True, True, True, False]]
    assert not hard_negatives(loss, negative, torch.tensor([0, 0])).any()
