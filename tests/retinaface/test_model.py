import dataclasses

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface.config import InferenceConfig, LossConfig, model_preset
from retinaface.model.retinaface import build_retinaface


@pytest.mark.parametrize("backbone", ["mobilenet0.25", "resnet50"])
@pytest.mark.parametrize("size", [(97, 131), (32, 32), (250, 61)])
def test_head_output_shapes_match_anchors(backbone, size):
    model = build_retinaface(dataclasses.replace(model_preset(backbone), mesh_head="anchor")).eval()  # the per-anchor mesh head's dense form
    h, w = size
    with torch.no_grad():
        batch = model.preprocessor([torch.rand(3, h, w) * 255])[0]
        outputs, anchors = model.head_outputs(batch)
    num = anchors.shape[0]
    assert num == model.anchor_generator.for_image_size(h, w).shape[0]
    assert outputs.class_logits.shape == (1, num, 2)
    assert outputs.box_deltas.shape == (1, num, 4)
    assert outputs.landmark_deltas.shape == (1, num, 10)
    assert outputs.mesh_coefficients.shape == (1, num, 144)


def test_forward_returns_per_image_detections_for_mixed_sizes():
    model = build_retinaface(model_preset("mobilenet0.25"), InferenceConfig(score_threshold=0.0)).eval()
    with torch.no_grad():
        dets = model([torch.rand(3, 50, 70) * 255, torch.rand(3, 90, 40) * 255])
    assert len(dets) == 2
    for det, (h, w) in zip(dets, [(50, 70), (90, 40)]):
        boxes = det["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) > 0
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= h).all()


def test_batched_equals_single_for_the_largest_image(detector, astronaut_image):
    small = astronaut_image[::2, ::2].copy()
    batched = detector([astronaut_image, small])
    single_big, single_small = detector(astronaut_image), detector(small)
    assert len(batched[0]) == len(single_big) == 1
    np.testing.assert_allclose(batched[0][0].box, single_big[0].box, atol=1e-3)
    # the smaller image is padded inside the batch; its face must still be found in the same place
    assert len(batched[1]) == len(single_small) == 1
    np.testing.assert_allclose(batched[1][0].box, single_small[0].box, atol=1.0)


def test_resize_maps_results_back_to_original_pixels(detector, astronaut_image):
    full = detector(astronaut_image)[0]
    detector.max_size = 256
    try:
        half = detector(astronaut_image)[0]
    finally:
        detector.max_size = None
    # detected at half resolution (so less precise), reported in original pixels: near the full-size result;
    # a missing 1/scale would put everything about 100 px off
    np.testing.assert_allclose(half.box, full.box, atol=6.0)
    np.testing.assert_allclose(half.landmarks, full.landmarks, atol=8.0)


def test_tiny_overfit_model_learns(astronaut_image):
    """A randomly initialised detector learns to find one face in a few dozen steps."""
    torch.manual_seed(0)
    face = torch.from_numpy(astronaut_image[40:200, 160:290].copy()).permute(2, 0, 1).float()
    image = torch.full((3, 128, 128), 90.0)
    patch = torch.nn.functional.interpolate(face[None], size=(64, 52), mode="bilinear", antialias=True)[0]
    image[:, 30:94, 40:92] = patch
    target = {"boxes": torch.tensor([[44.0, 36.0, 88.0, 88.0]]), "landmarks": torch.tensor([[[56.0, 55], [76, 56], [66, 68], [58, 78], [74, 79]]])}
    # the pixel term renders a mesh per step and is not what this test is about (test_mesh_training is)
    model = build_retinaface(model_preset("mobilenet0.25"), loss=LossConfig(pixel_weight=0.0)).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(120):
        losses = model([image], [target])
        total = sum(losses.values())
        first = first if first is not None else total.item()
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    assert total.item() < first / 5
    model.eval()  # the default score threshold, 0.5
    with torch.no_grad():
        det = model([image])[0]
    assert len(det["boxes"]) >= 1
    assert box_iou(det["boxes"][:1], target["boxes"]).item() > 0.5


def test_detections_without_mesh_match_the_full_pass_but_for_the_coefficients(astronaut_image):
    """detect(mesh=False) leaves the mesh head out: the same boxes, scores and landmarks, no coefficients."""
    from retinaface.model.weights import load_model

    model = load_model("mobilenet0.25", mesh=False).fuse_for_inference()  # as Detector runs it
    crops = [torch.from_numpy(np.ascontiguousarray(astronaut_image[:256, 128:384])).permute(2, 0, 1),
             torch.from_numpy(np.ascontiguousarray(astronaut_image[:200, :300])).permute(2, 0, 1)]
    with torch.inference_mode():
        full, skipped = model(crops), model.detect(crops, mesh=False)
    assert sum(len(one["boxes"]) for one in full) >= 1
    for a, b in zip(full, skipped):
        for key in ("boxes", "scores", "landmarks"):
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
        assert b["mesh_coefficients"].shape == (len(a["boxes"]), 0)
