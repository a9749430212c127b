"""The exported graph's MobileNet channels are padded to onnxruntime's channel block on this CPU (16 with
AVX-512, 8 with AVX2), recorded in the metadata; every block gives the same detections."""

import numpy as np
import onnx
import pytest

from retinaface.export.onnx import CHANNEL_BLOCK_METADATA_KEY, export_onnx
from retinaface.model.weights import load_model
import retinaface.utils.cpu as cpu


def _stem_channels(data: bytes) -> tuple[int, int]:
    proto = onnx.load_model_from_string(data)
    weights = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    first_conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    metadata = {p.key: p.value for p in proto.metadata_props}
    return weights[first_conv.input[1]][0], int(metadata[CHANNEL_BLOCK_METADATA_KEY])


@pytest.fixture(scope="module")
def model():
    return load_model("mobilenet0.25", mesh=False)


def test_padding_follows_the_cpu_and_keeps_the_detections(model, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(cpu, "_features", lambda: {"AVX": True, "AVX2": True, "AVX512F": False})
    assert cpu.instruction_set() == "AVX2" and cpu.onnxruntime_channel_block() == 8
    avx2 = export_onnx(model)
    monkeypatch.setattr(cpu, "_features", lambda: {"AVX": True, "AVX2": True, "AVX512F": True})
    assert cpu.instruction_set() == "AVX-512" and cpu.onnxruntime_channel_block() == 16
    avx512 = export_onnx(model)
    assert _stem_channels(avx2) == (8, 8)  # the x0.25 stem's 8 channels fill an AVX2 block
    assert _stem_channels(avx512) == (16, 16)
    assert _stem_channels(export_onnx(model, channel_block=32)) == (32, 32)

    from retinaface.media.images import read_image
    from retinaface.samples import ASTRONAUT

    image = read_image(ASTRONAUT)[None]
    settings = {"score_threshold": np.array(0.02, np.float32), "nms_threshold": np.array(0.4, np.float32),
                "pre_nms_top_k": np.array(5000, np.int64), "max_detections": np.array(750, np.int64)}
    outputs = [ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"images": image, **settings}) for data in (avx2, avx512)]
    assert len(outputs[0][1]) > 0
    for a, b in zip(*outputs):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_the_instruction_set_is_named():
    assert cpu.instruction_set()
    assert cpu.cpu_model()
    assert "CPU: " in cpu.summary_line()
