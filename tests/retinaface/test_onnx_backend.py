"""The onnxruntime backend and the speed options give the same detections as the plain PyTorch model."""

import numpy as np
import pytest
import torch

from retinaface import Detector
from retinaface.onnx_backend import export_onnx, verify_export


def _assert_same(faces_a, faces_b, box_tol=0.5):
    assert len(faces_a) == len(faces_b)
    for a, b in zip(faces_a, faces_b):
        np.testing.assert_allclose(a.box, b.box, atol=box_tol)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=box_tol)
        assert abs(a.score - b.score) < 1e-4
        np.testing.assert_allclose(a.mesh_coefficients, b.mesh_coefficients, atol=1e-4)


@pytest.fixture(scope="module")
def plain():
    return Detector.from_pretrained(device="cpu", optimize=False)


@pytest.fixture(scope="module")
def with_random_mesh_head():
    """A model whose mesh head is non-zero, so mesh coefficients are compared meaningfully."""
    from retinaface.weights import load_model

    model = load_model("mobilenet0.25")
    torch.manual_seed(0)
    for conv in model.heads.mesh.convs:
        torch.nn.init.normal_(conv.weight, std=0.05)
        torch.nn.init.normal_(conv.bias, std=0.05)
    return model


def test_fused_channels_last_model_matches_plain(plain, detector, crowd_image, astronaut_image):
    assert detector.model.fused and not plain.model.fused
    _assert_same(detector(crowd_image), plain(crowd_image))
    _assert_same(detector(astronaut_image), plain(astronaut_image))


def test_fused_model_refuses_training(detector, astronaut_image):
    with pytest.raises(RuntimeError, match="fused for inference"):
        detector.model([torch.zeros(3, 32, 32)], [{"boxes": torch.zeros(0, 4)}])


def test_onnxruntime_backend_matches_pytorch(plain, crowd_image):
    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    _assert_same(ort_detector(crowd_image), plain(crowd_image))
    # batches of different sizes go through the same padding path
    small = np.ascontiguousarray(crowd_image[100:400, 200:700])
    for a, b in zip(ort_detector([crowd_image, small]), plain([crowd_image, small])):
        _assert_same(a, b)


@pytest.mark.parametrize("dense_mesh", [False, True])
def test_exported_file_round_trip_with_mesh(tmp_path, with_random_mesh_head, astronaut_image, dense_mesh):
    path = tmp_path / "model.onnx"
    data = export_onnx(with_random_mesh_head, path, dense_mesh=dense_mesh)
    assert max(verify_export(with_random_mesh_head, data, astronaut_image).values()) < 1e-3
    from retinaface.detector import Detector as D

    reference = D(with_random_mesh_head)
    exported = D.from_pretrained(str(path), backend="onnxruntime")
    faces = exported(astronaut_image)
    assert np.abs(faces[0].mesh_coefficients).sum() > 0
    _assert_same(faces, reference(astronaut_image))


def test_batch_size_does_not_change_results(detector, crowd_image, astronaut_image):
    one_by_one = [detector(crowd_image), detector(astronaut_image)]
    together = detector([crowd_image, astronaut_image])
    _assert_same(together[0], one_by_one[0])
    # the smaller image is padded in the batch; boxes may move slightly, the faces must not change
    _assert_same(together[1], one_by_one[1], box_tol=1.0)


def test_onnx_weights_need_the_onnx_backend(tmp_path, with_random_mesh_head):
    from retinaface.weights import WeightsError

    path = tmp_path / "m.onnx"
    export_onnx(with_random_mesh_head, path)
    with pytest.raises(WeightsError, match="backend='onnxruntime'"):
        Detector.from_pretrained(str(path))
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(WeightsError, match="cannot load"):
        Detector.from_pretrained(str(bogus), backend="onnxruntime")


def test_repeated_shapes_get_a_specialised_session_with_the_same_results(astronaut_image):
    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    model = ort_detector.model
    first = ort_detector(astronaut_image)  # dynamic-shape session
    assert not model._fixed_sessions
    second = ort_detector(astronaut_image)  # second sighting: shape-specialised session
    height, width = astronaut_image.shape[:2]
    assert list(model._fixed_sessions) == [(1, height, width)]
    _assert_same(second, first, box_tol=1e-3)
    # the cache of specialised sessions stays bounded however many sizes come twice
    for size in range(64, 64 + 8 * (model.MAX_FIXED_SESSIONS + 2), 8):
        crop = np.ascontiguousarray(astronaut_image[:size, :size])
        ort_detector(crop)
        ort_detector(crop)
    assert len(model._fixed_sessions) == model.MAX_FIXED_SESSIONS
    assert (1, 64 + 8 * (model.MAX_FIXED_SESSIONS + 1), 64 + 8 * (model.MAX_FIXED_SESSIONS + 1)) in model._fixed_sessions


def test_onnxruntime_detection_restores_the_callers_thread_count(astronaut_image):
    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(ort_detector(astronaut_image)) == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
