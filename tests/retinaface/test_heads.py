import dataclasses

import torch

from retinaface.config import model_preset
from retinaface.model.heads import FusedRetinaFaceHeads
from retinaface.model.retinaface import build_retinaface


def _anchor_model():
    """The paper's per-anchor mesh head (the released weights'), which these tests are about."""
    return build_retinaface(dataclasses.replace(model_preset("mobilenet0.25"), mesh_head="anchor")).eval()


def test_sparse_mesh_equals_dense_mesh_at_indexed_anchors():
    torch.manual_seed(0)
    model = _anchor_model()
    for conv in model.heads.mesh.convs:  # the released head is zero; use random weights to make this meaningful
        torch.nn.init.normal_(conv.weight)
        torch.nn.init.normal_(conv.bias)
    batch = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        dense, _ = model.network(batch, dense_mesh=True)
        sparse, _ = model.network(batch, dense_mesh=False)
    num_anchors = dense.mesh_coefficients.shape[1]
    image_ids = torch.tensor([0, 1, 1, 0, 1])
    anchor_ids = torch.tensor([0, 1, num_anchors - 1, num_anchors // 2, 2 * 9 * 12 + 3])  # all three levels, both slots
    expected = dense.mesh_coefficients[image_ids, anchor_ids]
    assert torch.allclose(sparse.mesh_coefficients[image_ids, anchor_ids], expected, atol=1e-4)
    assert sparse.mesh_coefficients[torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)].shape == (0, 144)


def _randomised(model):
    torch.manual_seed(1)
    for head in (model.heads.classification, model.heads.box, model.heads.landmarks, model.heads.mesh):
        for conv in head.convs:
            torch.nn.init.normal_(conv.weight, std=0.1)
            torch.nn.init.normal_(conv.bias, std=0.1)
    return model


def test_fused_heads_give_the_separate_heads_outputs():
    model = _randomised(_anchor_model())
    features = [torch.randn(2, 64, 9, 12), torch.randn(2, 64, 5, 6), torch.randn(2, 64, 3, 3)]
    fused = FusedRetinaFaceHeads(model.heads)
    with torch.no_grad():
        separate, merged = model.heads(features, dense_mesh=True), fused(features, dense_mesh=True)
        sparse = fused(features, dense_mesh=False).mesh_coefficients
    for name in ("class_logits", "box_deltas", "landmark_deltas", "mesh_coefficients"):
        assert torch.allclose(getattr(merged, name), getattr(separate, name), atol=1e-5), name
    rows = torch.tensor([0, 1, 1]), torch.tensor([0, 2 * 9 * 12 + 1, separate.class_logits.shape[1] - 1])
    assert torch.allclose(sparse[rows], separate.mesh_coefficients[rows], atol=1e-5)


def test_fuse_for_inference_twice_is_harmless():
    model = _randomised(_anchor_model())
    batch = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, _ = model.network(batch)
        model.fuse_for_inference()
        heads = model.heads
        model.fuse_for_inference()
        assert model.heads is heads and isinstance(heads, FusedRetinaFaceHeads)
        got, _ = model.network(batch.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got.box_deltas, expected.box_deltas, atol=1e-4)
    assert torch.allclose(got.class_logits, expected.class_logits, atol=1e-4)
