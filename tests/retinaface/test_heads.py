import torch

from retinaface.config import model_preset
from retinaface.model import build_retinaface


def test_sparse_mesh_equals_dense_mesh_at_indexed_anchors():
    torch.manual_seed(0)
    model = build_retinaface(model_preset("mobilenet0.25")).eval()
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
