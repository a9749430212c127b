import torch

from retinaface.model.matcher import AnchorMatcher

NEG, IGN = AnchorMatcher.NEGATIVE, AnchorMatcher.IGNORE


def test_hand_made_iou_matrix():
    iou = torch.tensor(
        [
            # a0   a1   a2   a3    a4   a5
            [0.70, 0.40, 0.10, 0.00, 0.55, 0.0],  # face 0
            [0.20, 0.60, 0.25, 0.00, 0.60, 0.0],  # face 1
            [0.00, 0.00, 0.20, 0.10, 0.00, 0.0],  # face 2: best anchor only 0.2, still gets a2
        ]
    )
    matches = AnchorMatcher(positive_iou=0.5, negative_iou=0.3)(iou)
    # a0 -> face 0 (0.7); a1 -> face 1 (0.6); a2 forced to face 2 (its best); a3 < 0.3 negative;
    # a4 -> face 1 (0.6 beats 0.55); a5 overlaps nothing.
    assert matches.tolist() == [0, 1, 2, NEG, 1, NEG]


def test_ignore_band_and_empty():
    matcher = AnchorMatcher(positive_iou=0.5, negative_iou=0.3)
    iou = torch.tensor([[0.9, 0.45, 0.31, 0.29]])
    assert matcher(iou).tolist() == [0, IGN, IGN, NEG]
    assert matcher(torch.zeros(0, 4)).tolist() == [NEG] * 4


def test_face_without_overlap_gets_no_anchor():
    matcher = AnchorMatcher()
    iou = torch.tensor([[0.0, 0.0, 0.0]])
    assert matcher(iou).tolist() == [NEG, NEG, NEG]
