"""The onnxruntime backend and the speed options give the same detections as the plain PyTorch model."""

import numpy as np
import pytest
import torch

from retinaface import Detector
from retinaface.export.onnx import export_onnx, verify_export


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
def plain_first_look():
    """The network's detections as the exported graph gives them: no second look at rolled faces."""
    return Detector.from_pretrained(device="cpu", optimize=False, refine_landmarks=False)


@pytest.fixture(scope="module")
def with_random_mesh_head():
    """The paper's per-anchor mesh head with random weights on the released detector, so the dense and
    sparse mesh outputs are compared meaningfully (the released weights carry the RoI head)."""
    from retinaface.model.weights import load_model
    from retinaface.training.mesh_head import with_fresh_mesh_head

    model = with_fresh_mesh_head(load_model("mobilenet0.25"), "anchor")
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
    ort_batch, plain_batch = ort_detector([crowd_image, small]), plain([crowd_image, small])
    assert len(ort_batch) == len(plain_batch) == 2 and min(len(faces) for faces in plain_batch) >= 5
    for a, b in zip(ort_batch, plain_batch):
        _assert_same(a, b)


@pytest.mark.parametrize("dense_mesh", [False, True])
def test_exported_file_round_trip_with_mesh(tmp_path, with_random_mesh_head, astronaut_image, dense_mesh):
    path = tmp_path / "model.onnx"
    data = export_onnx(with_random_mesh_head, path, dense_mesh=dense_mesh)
    assert max(verify_export(with_random_mesh_head, data, astronaut_image).values()) < 1e-3
    from retinaface.inference.detector import Detector as D

    reference = D(with_random_mesh_head)
    exported = D.from_pretrained(str(path), backend="onnxruntime")
    faces = exported(astronaut_image)
    assert np.abs(faces[0].mesh_coefficients).sum() > 0
    _assert_same(faces, reference(astronaut_image))


@pytest.fixture(scope="module", params=[0.0, 0.05], ids=["one-reading", "four-readings"])
def with_roi_mesh_head(request):
    """The released detection network with a RoI mesh head (the default for new models) of random weights,
    read once per face or four times around each box (``mesh_roi_test_offset``)."""
    import dataclasses

    from retinaface.config import model_preset
    from retinaface.model.retinaface import build_retinaface
    from retinaface.model.weights import load_model

    released = load_model("mobilenet0.25")
    torch.manual_seed(0)
    model = build_retinaface(dataclasses.replace(model_preset("mobilenet0.25"), mesh_roi_test_offset=request.param)).eval()
    assert model.heads.mesh.test_offset == request.param
    assert model.config.mesh_head == "roi"
    model.load_state_dict({k: v for k, v in released.state_dict().items() if not k.startswith("heads.mesh.")}, strict=False)
    for parameter in model.heads.mesh.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return model


def test_exported_roi_mesh_head_matches_pytorch(tmp_path, with_roi_mesh_head, astronaut_image):
    """The graph computes the RoI head (RoiAlign on each kept box's level, convs, linear) for the kept
    detections: boxes, scores, landmarks and coefficients as PyTorch's at a low threshold, on the photo and
    on it enlarged 2x (detections on all three pyramid levels between them), and through the Detector; no
    face, no rows."""
    import cv2
    import onnx

    from retinaface.inference.detector import Detector as D

    path = tmp_path / "roi.onnx"
    data = export_onnx(with_roi_mesh_head, path)
    assert "RoiAlign" in {node.op_type for node in onnx.load_model_from_string(data).graph.node}
    enlarged = cv2.resize(astronaut_image, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR)
    levels, post = set(), with_roi_mesh_head.postprocessor
    for image in (astronaut_image, enlarged):
        assert max(verify_export(with_roi_mesh_head, data, image).values()) < 1e-3  # at score >= 0.02
        saved, post.score_threshold = post.score_threshold, 0.02
        try:
            with torch.no_grad():
                found = with_roi_mesh_head.detect_resized([torch.from_numpy(image).permute(2, 0, 1).float()])[0][0]
        finally:
            post.score_threshold = saved
        levels |= set(with_roi_mesh_head.heads.mesh.levels(found["boxes"]).tolist())
    assert levels == {0, 1, 2}
    reference, exported = D(with_roi_mesh_head), D.from_pretrained(str(path), backend="onnxruntime")
    faces, expected = exported(astronaut_image), reference(astronaut_image)
    assert len(faces) == 1 and np.abs(faces[0].mesh_coefficients).sum() > 1
    _assert_same(faces, expected)
    from retinaface.export.onnx import _session

    blank = _run_graph(_session(data, 2), np.full((1, 96, 128, 3), 128, np.uint8))
    assert blank["mesh_coefficients"].shape == (0, 144)
    with pytest.raises(ValueError, match="dense_mesh"):
        export_onnx(with_roi_mesh_head, dense_mesh=True)


def test_batch_size_does_not_change_results(detector, crowd_image, astronaut_image):
    one_by_one = [detector(crowd_image), detector(astronaut_image)]
    together = detector([crowd_image, astronaut_image])
    _assert_same(together[0], one_by_one[0])
    # the smaller image is padded in the batch; boxes may move slightly, the faces must not change
    _assert_same(together[1], one_by_one[1], box_tol=1.0)


def test_a_graph_onnxruntime_cannot_run_is_refused_at_load(tmp_path, exported_graph_bytes):
    """onnxruntime checks a graph when it builds a session: one is built at load, so a broken file is one
    WeightsError from from_pretrained, not a failure in the middle of a run."""
    import onnx

    from retinaface.errors import WeightsError

    proto = onnx.load_model_from_string(exported_graph_bytes)
    next(node for node in proto.graph.node if node.op_type == "Conv").op_type = "NoSuchOperator"
    path = tmp_path / "broken.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(WeightsError, match="cannot load .*broken.onnx into onnxruntime"):
        Detector.from_pretrained(str(path), backend="onnxruntime")


def test_onnx_weights_need_the_onnx_backend(tmp_path, with_random_mesh_head):
    from retinaface.errors import WeightsError

    path = tmp_path / "m.onnx"
    export_onnx(with_random_mesh_head, path)
    with pytest.raises(WeightsError, match="backend='onnxruntime'"):
        Detector.from_pretrained(str(path))
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(WeightsError, match="cannot load"):
        Detector.from_pretrained(str(bogus), backend="onnxruntime")


def test_repeated_shapes_get_a_specialised_session_with_the_same_results(astronaut_image):
    import retinaface.export.onnx as onnx_module

    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    model = ort_detector.model
    threads = torch.get_num_threads()
    first = ort_detector(astronaut_image)  # dynamic-shape session
    assert not model.sessions.fixed
    second = ort_detector(astronaut_image)  # second sighting: shape-specialised session
    height, width = astronaut_image.shape[:2]
    assert list(model.sessions.fixed) == [(threads, True, 1, height, width)]
    _assert_same(second, first, box_tol=1e-3)
    # the cache of specialised sessions stays bounded however many sizes come twice: the first ones keep
    # theirs, later sizes run in the dynamic session (no session is built per image when sizes cycle)
    sizes = range(64, 64 + 8 * (model.MAX_FIXED_SESSIONS + 2), 8)
    for _ in range(3):
        for size in sizes:
            ort_detector(np.ascontiguousarray(astronaut_image[:size, :size]))
    assert len(model.sessions.fixed) == model.MAX_FIXED_SESSIONS
    assert (threads, True, 1, height, width) in model.sessions.fixed and (threads, True, 1, 64, 64) in model.sessions.fixed
    assert (threads, True, 1, sizes[-1], sizes[-1]) not in model.sessions.fixed
    built = []
    real_session = onnx_module._session
    onnx_module._session = lambda *a, **k: built.append(a) or real_session(*a, **k)
    try:
        for size in sizes:  # another cycle through every size builds nothing
            ort_detector(np.ascontiguousarray(astronaut_image[:size, :size]))
    finally:
        onnx_module._session = real_session
    assert built == []


def test_onnxruntime_threads_follow_pytorchs_at_each_call(astronaut_image):
    """onnxruntime runs on as many threads as PyTorch is set to when a call starts (so torch_threads, as
    detect.py's video loop uses it, governs both engines), with the same faces."""
    from retinaface.utils.threads import torch_threads

    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    with torch_threads(1):
        one = ort_detector(astronaut_image)
    with torch_threads(2):
        two = ort_detector(astronaut_image)
    assert set(ort_detector.model.sessions.dynamic) == {(1, True), (2, True)}
    sessions = ort_detector.model.sessions.dynamic
    assert {key: session.get_session_options().intra_op_num_threads for key, session in sessions.items()} == {(1, True): 1, (2, True): 2}
    _assert_same(one, two, box_tol=1e-3)


def _spinning_entry(session) -> str | None:
    """The session's ``allow_spinning`` entry; ``None`` when not set (onnxruntime's default: spinning)."""
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # "does not have configuration with key"
        return None


def test_onnxruntime_threads_spin_unless_the_caller_says_sleep(astronaut_image):
    """Idle onnxruntime threads spin between calls (its default) for plain calls and sleep inside
    onnxruntime_spinning(False), as detect.py's pipelines run them; the same faces either way."""
    from retinaface.utils.threads import onnxruntime_spinning

    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    spinning = ort_detector(astronaut_image)
    with onnxruntime_spinning(False):
        sleeping = ort_detector(astronaut_image)
    sessions = ort_detector.model.sessions.dynamic
    threads = torch.get_num_threads()
    assert _spinning_entry(sessions[(threads, True)]) is None and _spinning_entry(sessions[(threads, False)]) == "0"
    _assert_same(sleeping, spinning, box_tol=1e-3)


def test_detect_pipelines_run_onnxruntime_with_sleeping_threads(tmp_path, astronaut_image):
    import cv2

    from retinaface import run_detect

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(folder / name), astronaut_image)
    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    before = set(ort_detector.model.sessions.dynamic)  # the session built at load time, to check the file
    summary = run_detect(ort_detector, str(folder), json_path=tmp_path / "f.jsonl", draw=False, progress=False)
    assert summary.faces == 2
    cache = ort_detector.model.sessions
    sessions = {**{k: v for k, v in cache.dynamic.items() if k not in before}, **cache.fixed}
    assert sessions and all(_spinning_entry(session) == "0" for session in sessions.values())
    assert {key[:2] for key in cache.seen} == {(torch.get_num_threads(), False)}  # every call of the run


def test_onnxruntime_detection_restores_the_callers_thread_count(astronaut_image):
    ort_detector = Detector.from_pretrained(backend="onnxruntime")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert len(ort_detector(astronaut_image)) == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported_graph_bytes():
    from retinaface.model.weights import load_model

    return export_onnx(load_model("mobilenet0.25", mesh=False))


@pytest.fixture(scope="module")
def exported_graph(exported_graph_bytes):
    from retinaface.export.onnx import _session

    return _session(exported_graph_bytes, 2)


def _run_graph(session, images, *, score=0.5, iou=0.4, top_k=5000, max_detections=750):
    """The exported file as an outside user runs it: the documented inputs, no code of ours around it."""
    feed = {
        "images": images, "score_threshold": np.array(score, np.float32), "nms_threshold": np.array(iou, np.float32),
        "pre_nms_top_k": np.array(top_k, np.int64), "max_detections": np.array(max_detections, np.int64),
    }
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


@pytest.mark.parametrize("settings", [{}, {"score": 0.02}, {"score": 0.02, "top_k": 40, "max_detections": 7}, {"iou": 0.2}])
def test_exported_graph_alone_gives_the_pytorch_detections(exported_graph, plain_first_look, crowd_image, settings):
    """Raw uint8 HWC photo in, final detections out, equal to the unfused PyTorch Detector's on a crowd
    photo, also at a low threshold where thousands of candidates go into NMS and with per-image caps."""
    out = _run_graph(exported_graph, crowd_image[None], **settings)
    plain = plain_first_look
    post = plain.model.postprocessor
    saved = (post.score_threshold, post.nms_threshold, post.pre_nms_top_k, post.max_detections)
    try:
        post.score_threshold, post.nms_threshold = settings.get("score", 0.5), settings.get("iou", 0.4)
        post.pre_nms_top_k, post.max_detections = settings.get("top_k", 5000), settings.get("max_detections", 750)
        faces = plain(crowd_image)
    finally:
        post.score_threshold, post.nms_threshold, post.pre_nms_top_k, post.max_detections = saved
    assert len(faces) == len(out["scores"]) > (7 if "max_detections" not in settings else 6)
    assert (out["image_ids"] == 0).all() and (np.diff(out["scores"]) <= 0).all()
    height, width = crowd_image.shape[:2]
    np.testing.assert_allclose(out["scores"], [f.score for f in faces], atol=1e-4)
    # the graph's boxes are unclipped; the Detector clips them to the image
    clipped = np.clip(out["boxes"], 0, [width, height, width, height])
    np.testing.assert_allclose(clipped, np.stack([f.box for f in faces]), atol=0.05)
    np.testing.assert_allclose(out["landmarks"].reshape(-1, 5, 2), np.stack([f.landmarks for f in faces]), atol=0.05)
    assert out["mesh_coefficients"].shape == (len(faces), 144)


def test_exported_graph_batches_images_and_returns_nothing_for_no_face(exported_graph, astronaut_image):
    blank = np.full((1, 96, 128, 3), 128, np.uint8)
    empty = _run_graph(exported_graph, blank)
    assert {k: v.shape for k, v in empty.items()} == {
        "image_ids": (0,), "scores": (0,), "boxes": (0, 4), "landmarks": (0, 10), "mesh_coefficients": (0, 144)
    }
    # a face-less image between two copies of the photo: detections come grouped by image, none for the blank
    height, width = astronaut_image.shape[:2]
    batch = np.stack([astronaut_image, np.full_like(astronaut_image, 128), astronaut_image])
    out = _run_graph(exported_graph, batch)
    single = _run_graph(exported_graph, astronaut_image[None])
    assert out["image_ids"].tolist() == [0] * len(single["scores"]) + [2] * len(single["scores"])
    for image in (0, 2):
        np.testing.assert_allclose(out["boxes"][out["image_ids"] == image], single["boxes"], atol=1e-3)


def test_files_of_the_earlier_onnx_format_are_refused_with_a_reason(tmp_path):
    import onnx

    from retinaface.errors import WeightsError
    from retinaface.model.weights import load_model

    path = tmp_path / "old.onnx"
    proto = onnx.load_model_from_string(export_onnx(load_model("mobilenet0.25", mesh=False)))
    kept = [p for p in proto.metadata_props if p.key != "retinaface_onnx_format"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(WeightsError, match="export it again"):
        Detector.from_pretrained(str(path), backend="onnxruntime")


def test_resized_images_go_through_the_graph_unrounded(crowd_image):
    """With max_size the resized float image goes to the graph as it is (its float-input form), not rounded
    to 8 bits: the PyTorch backend's detections within float rounding (8-bit rounding moved boxes by 0.11 px)."""
    ort_detector = Detector.from_pretrained(backend="onnxruntime", max_size=640, refine_landmarks=False)
    torch_detector = Detector.from_pretrained(device="cpu", optimize=False, max_size=640, refine_landmarks=False)
    ours, theirs = ort_detector(crowd_image), torch_detector(crowd_image)
    assert len(ours) == len(theirs) > 20
    np.testing.assert_allclose(np.stack([f.box for f in ours]), np.stack([f.box for f in theirs]), atol=0.01)
    np.testing.assert_allclose(np.stack([f.landmarks for f in ours]), np.stack([f.landmarks for f in theirs]), atol=0.01)
    np.testing.assert_allclose([f.score for f in ours], [f.score for f in theirs], atol=1e-4)
    model = ort_detector.model
    assert set(model._forms) == {(False, True), (True, True)} and not model.sessions.seen  # only the float graph ran


def test_float_input_graph_gives_the_8_bit_graphs_outputs(exported_graph_bytes, astronaut_image):
    """The float-input graph fed the 8-bit image minus the mean gives exactly the 8-bit graph's detections."""
    from retinaface.export.onnx import _session, float_input_graph

    eight_bit = _run_graph(_session(exported_graph_bytes, 1), astronaut_image[None])
    mean = np.array([104.0, 117.0, 123.0], np.float32).reshape(1, 3, 1, 1)
    normalised = np.ascontiguousarray(astronaut_image.transpose(2, 0, 1)[None].astype(np.float32) - mean)
    float_graph = _session(float_input_graph(exported_graph_bytes), 1)
    assert float_graph.get_inputs()[0].type == "tensor(float)"
    floats = _run_graph(float_graph, normalised)
    assert len(eight_bit["scores"]) == 1
    for name, value in eight_bit.items():
        np.testing.assert_array_equal(floats[name], value)
    # a batch of two (the second all mean, i.e. zeros): the face in image 0 only, the same values
    pair = _run_graph(float_graph, np.concatenate([normalised, np.zeros_like(normalised)]))
    assert pair["image_ids"].tolist() == [0]
    np.testing.assert_array_equal(pair["boxes"], eight_bit["boxes"])

def test_graph_without_the_mesh_head_gives_the_same_detections(exported_graph_bytes, crowd_image):
    """without_mesh_head drops the RoI head's nodes (no RoiAlign left) and its output; every other output is
    the full graph's, bit for bit, on a photo with 27 faces."""
    import onnx

    from retinaface.export.onnx import _session, without_mesh_head

    headless = without_mesh_head(exported_graph_bytes)
    ops = {node.op_type for node in onnx.load_model_from_string(headless).graph.node}
    assert "RoiAlign" not in ops and "RoiAlign" in {n.op_type for n in onnx.load_model_from_string(exported_graph_bytes).graph.node}
    full = _run_graph(_session(exported_graph_bytes, 1), crowd_image[None])
    session = _session(headless, 1)
    assert [o.name for o in session.get_outputs()] == ["image_ids", "scores", "boxes", "landmarks"]
    without = _run_graph(session, crowd_image[None])
    assert len(full["scores"]) == 27
    for name, value in without.items():
        np.testing.assert_array_equal(value, full[name])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_detector_without_the_mesh_head(backend, crowd_image):
    """mesh_head=False: the same faces with empty mesh coefficients; a head start cannot go without the head."""
    from retinaface.errors import WeightsError

    with_head = Detector.from_pretrained(device="cpu", backend=backend)(crowd_image)
    without = Detector.from_pretrained(device="cpu", backend=backend, mesh_head=False)(crowd_image)
    assert len(with_head) == len(without) == 27
    for a, b in zip(with_head, without):
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        assert a.score == b.score and a.mesh_coefficients.shape == (144,) and b.mesh_coefficients.shape == (0,)
    with pytest.raises(WeightsError, match="mesh_head=True"):
        Detector.from_pretrained(device="cpu", backend=backend, mesh=True, mesh_start="head", mesh_head=False)
