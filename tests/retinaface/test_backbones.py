import pytest
import torch

from retinaface.model.backbones import DepthwiseSeparable, MobileNetV1
from retinaface.model.retinaface import build_retinaface
from retinaface.config import model_preset


def test_pad_channels_keeps_outputs_and_widens_narrow_blocks():
    model = build_retinaface(model_preset("mobilenet0.25")).eval()
    torch.manual_seed(0)
    for module in model.modules():  # non-trivial BatchNorm statistics so that folding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    trunk = model.fuse_for_inference().backbone.to(memory_format=torch.contiguous_format)
    batch = torch.randn(2, 3, 64, 80) * 50
    with torch.no_grad():
        expected = trunk(batch)
        narrow = [block[0][0].in_channels for stage in (trunk.stage1, trunk.stage2) for block in stage if isinstance(block, DepthwiseSeparable)]
        assert 8 in narrow  # the x0.25 stem really is narrower than a block
        trunk.pad_channels(16)
        got = trunk(batch)
    widths = [block[0][0].in_channels for stage in (trunk.stage1, trunk.stage2, trunk.stage3) for block in stage if isinstance(block, DepthwiseSeparable)]
    assert all(w % 16 == 0 for w in widths)
    assert trunk.stage1[0][0].out_channels == 16
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-4, rtol=1e-4)


def test_pad_channels_needs_folded_batchnorm():
    with pytest.raises(RuntimeError, match="BatchNorm"):
        MobileNetV1(width_multiplier=0.25).eval().pad_channels(16)
