import math

import torch

from retinaface.model.box_coder import BoxCoder


def test_hand_computed_encoding():
    coder = BoxCoder(center_variance=0.1, size_variance=0.2)
    anchor = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    box = torch.tensor([[6.0, 4.0, 16.0, 14.0]])  # centre (11, 9), size 10x10
    deltas = coder.encode_boxes(box, anchor)
    expected = torch.tensor([[1 / 2.0, -1 / 2.0, math.log(0.5) / 0.2, math.log(0.5) / 0.2]])
    assert torch.allclose(deltas, expected)
    points = torch.tensor([[[10.0, 10.0], [14.0, 8.0], [0.0, 0.0], [12.0, 12.0], [8.0, 12.0]]])
    encoded = coder.encode_landmarks(points, anchor)
    assert torch.allclose(encoded, torch.tensor([[0, 0, 2, -1, -5, -5, 1, 1, -1, 1.0]]))


def test_round_trip_random():
    torch.manual_seed(0)
    coder = BoxCoder()
    anchors = torch.cat([torch.rand(500, 2) * 640, torch.rand(500, 1).expand(-1, 2) * 300 + 8], dim=1)
    x1y1 = torch.rand(500, 2) * 600
    boxes = torch.cat([x1y1, x1y1 + torch.rand(500, 2) * 200 + 2], dim=1)
    landmarks = torch.rand(500, 5, 2) * 640
    assert torch.allclose(coder.decode_boxes(coder.encode_boxes(boxes, anchors), anchors), boxes, atol=1e-3)
    assert torch.allclose(coder.decode_landmarks(coder.encode_landmarks(landmarks, anchors), anchors), landmarks, atol=1e-3)


def test_decode_clamps_huge_size_offsets():
    coder = BoxCoder()
    boxes = coder.decode_boxes(torch.tensor([[0.0, 0.0, 1e4, -1e4]]), torch.tensor([[50.0, 50.0, 16.0, 16.0]]))
    assert torch.isfinite(boxes).all()
    assert boxes[0, 2] - boxes[0, 0] <= 1000.0 + 1e-3
