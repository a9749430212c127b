import torch

from retinaface.model.box_coder import BoxCoder
from retinaface.model.heads import HeadOutputs
from retinaface.model.postprocess import DetectionPostProcessor, face_probability


def _outputs(face_probability: list[list[float]]) -> HeadOutputs:
    """Head outputs whose anchors all decode to themselves, with the given face probabilities."""
    p = torch.tensor(face_probability)
    logits = torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=-1)  # softmax[..., 1] == p
    n, a = p.shape
    return HeadOutputs(logits, torch.zeros(n, a, 4), torch.zeros(n, a, 10), torch.arange(n * a * 3.0).reshape(n, a, 3))


ANCHORS = torch.tensor(
    [
        [50.0, 50.0, 20.0, 20.0],  # box 40..60
        [52.0, 50.0, 20.0, 20.0],  # overlaps the first: IoU = 18*20 / (2*400 - 360) = 0.818
        [150.0, 50.0, 20.0, 20.0],  # far away
    ]
)


def test_nms_suppresses_overlaps_within_an_image_only():
    post = DetectionPostProcessor(box_coder=BoxCoder(), score_threshold=0.5, nms_threshold=0.4)
    dets = post(_outputs([[0.9, 0.95, 0.8], [0.9, 0.6, 0.3]]), ANCHORS)
    # image 0: anchor 1 (0.95) suppresses anchor 0; anchor 2 survives. image 1: anchor 2 below threshold.
    assert torch.allclose(dets[0]["scores"], torch.tensor([0.95, 0.8]))
    assert torch.allclose(dets[0]["boxes"], torch.tensor([[42.0, 40, 62, 60], [140.0, 40, 160, 60]]))
    assert torch.allclose(dets[1]["scores"], torch.tensor([0.9]))
    # mesh coefficients follow their anchor: image 0 anchor 1 -> values 3, 4, 5
    assert dets[0]["mesh_coefficients"][0].tolist() == [3.0, 4.0, 5.0]
    assert dets[0]["landmarks"].shape == (2, 5, 2)


def test_loose_nms_keeps_overlaps_and_max_detections_caps():
    post = DetectionPostProcessor(box_coder=BoxCoder(), score_threshold=0.5, nms_threshold=0.9, max_detections=2)
    dets = post(_outputs([[0.9, 0.95, 0.8]]), ANCHORS)
    assert torch.allclose(dets[0]["scores"], torch.tensor([0.95, 0.9]))


def test_nothing_above_threshold_gives_empty_tensors():
    post = DetectionPostProcessor(box_coder=BoxCoder(), score_threshold=0.99)
    dets = post(_outputs([[0.9, 0.95, 0.8]]), ANCHORS)
    assert dets[0]["boxes"].shape == (0, 4) and dets[0]["landmarks"].shape == (0, 5, 2)


def test_pre_nms_top_k_keeps_best_candidates():
    post = DetectionPostProcessor(box_coder=BoxCoder(), score_threshold=0.1, nms_threshold=0.4, pre_nms_top_k=1)
    dets = post(_outputs([[0.9, 0.2, 0.8]]), ANCHORS)
    # only the best candidate (anchor 0) enters NMS, so anchor 2 (0.8) is gone although it overlaps nothing
    assert torch.allclose(dets[0]["scores"], torch.tensor([0.9]))


def test_face_probability_equals_softmax_and_stays_finite():
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(1000, 2) * 5, torch.tensor([[90.0, -90.0], [-90.0, 90.0], [0.0, 0.0]])])
    probability = face_probability(logits)
    assert torch.allclose(probability, torch.softmax(logits.double(), dim=-1)[:, 1].float(), atol=1e-6)
    assert torch.isfinite(probability).all() and probability[-3:].tolist() == [0.0, 1.0, 0.5]


def test_pre_nms_top_k_applies_per_image():
    post = DetectionPostProcessor(box_coder=BoxCoder(), score_threshold=0.1, nms_threshold=0.4, pre_nms_top_k=1)
    dets = post(_outputs([[0.9, 0.2, 0.8], [0.05, 0.05, 0.3]]), ANCHORS)
    # image 0 has three candidates and keeps its best; image 1 has one, which a batch-wide cap would have dropped
    assert torch.allclose(dets[0]["scores"], torch.tensor([0.9]))
    assert torch.allclose(dets[1]["scores"], torch.tensor([0.3]))
    assert torch.allclose(dets[1]["boxes"], torch.tensor([[140.0, 40, 160, 60]]))
