import numpy as np
import pytest
import torch

from retinaface.errors import InputError


def _boxes(faces):
    return np.array([f.box for f in faces])


def test_finds_the_astronaut(detector, astronaut_image):
    faces = detector(astronaut_image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    x1, y1, x2, y2 = face.box
    # every landmark inside the box; eyes above nose above mouth; image-left eye first
    assert ((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)).all()
    assert ((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)).all()
    assert face.landmarks[0, 0] < face.landmarks[1, 0] and face.landmarks[3, 0] < face.landmarks[4, 0]
    assert face.landmarks[:2, 1].max() < face.landmarks[2, 1] < face.landmarks[3:, 1].min()
    assert face.mesh_coefficients.shape == (144,)


@pytest.mark.parametrize("convert", ["gray", "gray1", "bgra", "uint16", "float"])
def test_other_image_formats_just_work(detector, astronaut_image, convert):
    import cv2

    gray = cv2.cvtColor(astronaut_image, cv2.COLOR_BGR2GRAY)
    variants = {
        "gray": gray,
        "gray1": gray[:, :, None],
        "bgra": cv2.cvtColor(astronaut_image, cv2.COLOR_BGR2BGRA),
        "uint16": astronaut_image.astype(np.uint16) * 257,
        "float": astronaut_image.astype(np.float32) / 255.0,
    }
    reference = detector(astronaut_image if convert not in ("gray", "gray1") else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    faces = detector(variants[convert])
    assert len(faces) == len(reference) == 1
    np.testing.assert_allclose(faces[0].box, reference[0].box, atol=0.5)


def test_list_input_returns_one_list_per_image(detector, astronaut_image):
    blank = np.full((100, 150, 3), 127, np.uint8)
    results = detector([astronaut_image, blank])
    assert [len(r) for r in results] == [1, 0]
    assert detector([]) == []


def test_unusable_arrays_raise_input_error(detector):
    with pytest.raises(InputError, match="unsupported image shape"):
        detector(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(InputError, match="dtype"):
        detector(np.zeros((10, 10, 3), np.int64))
    with pytest.raises(InputError, match="zero size"):
        detector(np.zeros((0, 10, 3), np.uint8))


def test_thresholds_are_adjustable(detector, crowd_image):
    default = len(detector(crowd_image))
    detector.score_threshold = 0.9
    try:
        strict = len(detector(crowd_image))
    finally:
        detector.score_threshold = 0.5
    assert strict < default


def test_mesh_decoding_places_the_mesh_on_the_face(astronaut_image):
    from retinaface import Detector

    meshed = Detector.from_pretrained(device="cpu", mesh=True, mesh_steps=5)
    (face,) = meshed(astronaut_image)
    assert face.mesh_vertices.shape == (468, 3) and face.mesh_colours.shape == (468, 3)
    x1, y1, x2, y2 = face.box
    w, h = x2 - x1, y2 - y1
    xs, ys = face.mesh_vertices[:, 0], face.mesh_vertices[:, 1]
    # the fitted face fills the box (a detector box cuts the forehead: allow a margin) ...
    assert x1 - 0.3 * w <= xs.min() < x1 + 0.3 * w and x2 - 0.3 * w < xs.max() <= x2 + 0.3 * w
    assert y1 - 0.4 * h <= ys.min() < y1 + 0.4 * h and y2 - 0.3 * h < ys.max() <= y2 + 0.3 * h
    # ... and its landmark vertices land on the detected landmarks, to within what a face shape that they
    # place but do not bend allows (the prior's mean face posed by PnP alone leaves about 1.8 % of w here)
    assert face.mesh_residual["landmark_px"] < 0.03 * w and 0 < face.mesh_residual["pixel_l1"] < 0.3
    record = face.to_dict(include_mesh=True)
    assert len(record["mesh_coefficients"]) == 144 and len(record["mesh_vertices"]) == 468
    assert set(record["mesh_residual"]) == {"pixel_l1", "landmark_px"}
    assert np.isfinite(np.array(record["mesh_vertices"])).all()
    assert "mesh_vertices" not in face.to_dict()


def test_meshes_fit_the_same_with_the_network_in_onnxruntime(astronaut_image):
    """The mesh fit runs in PyTorch whichever engine runs the network: with onnxruntime's detections (the
    same up to float rounding) the fitted mesh lies within a hundredth of a pixel of the PyTorch backend's."""
    from retinaface import Detector

    (ours,) = Detector.from_pretrained(backend="onnxruntime", mesh=True)(astronaut_image)
    (theirs,) = Detector.from_pretrained(device="cpu", mesh=True)(astronaut_image)
    assert ours.mesh_vertices is not None and ours.mesh_vertices.shape == (468, 3)
    np.testing.assert_allclose(ours.mesh_vertices, theirs.mesh_vertices, atol=0.01)
    assert ours.mesh_residual["landmark_px"] == pytest.approx(theirs.mesh_residual["landmark_px"], abs=0.01)


def test_auto_backend_picks_onnxruntime_for_long_runs_on_the_cpu():
    """Videos, cameras and folders (long runs) repay the export; single photos do not."""
    from retinaface.inference.detector import choose_backend

    assert choose_backend("auto", weights="mobilenet0.25", device="cpu", long_run=True) == "onnxruntime"
    assert choose_backend("auto", weights="mobilenet0.25", device="cpu", long_run=False) == "torch"
    assert choose_backend("auto", weights="exported.onnx", device="cpu", long_run=False) == "onnxruntime"
    assert choose_backend("torch", weights="mobilenet0.25", device="cpu", long_run=True) == "torch"
    assert choose_backend("onnxruntime", weights="mobilenet0.25", device="cpu", long_run=False) == "onnxruntime"


def test_drawing_meshes_draws_the_carried_vertices(astronaut_image):
    import dataclasses

    from retinaface import Detector
    from retinaface.faces.mesh_overlay import draw_meshes

    meshed = Detector.from_pretrained(device="cpu", mesh=True)
    branch = meshed.model.mesh_branch
    torch.manual_seed(0)
    coefficients = torch.randn(1, 144) * 0.3  # a non-template face, so a wrong mesh would show
    faces = meshed(astronaut_image)
    box = torch.from_numpy(faces[0].box[None].copy())
    with torch.inference_mode():
        placed, decoded = branch.image_vertices(coefficients, box)
    face = dataclasses.replace(faces[0], mesh_coefficients=coefficients[0].numpy(), mesh_vertices=placed[0].numpy(),
                               mesh_colours=decoded.colours[0].numpy(), mesh_model_vertices=decoded.vertices[0].numpy())
    calls = []
    hook = branch.decoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        reused = draw_meshes(astronaut_image, [face], branch)
        assert not calls  # drawn from the carried vertices
        decoded_again = draw_meshes(astronaut_image, [dataclasses.replace(face, mesh_vertices=None)], branch)
        assert len(calls) == 1  # faces without vertices are decoded from their coefficients
    finally:
        hook.remove()
    assert np.abs(reused.astype(int) - decoded_again.astype(int)).max() <= 1
    assert (reused != astronaut_image).any()


def test_poses_are_estimated_when_first_read_and_equal_the_eager_estimate(detector, astronaut_image, monkeypatch):
    import retinaface.faces.face as face_module
    from retinaface.faces.pose import estimate_pose

    calls = []
    monkeypatch.setattr(face_module, "estimate_pose", lambda *a: calls.append(a) or estimate_pose(*a))
    faces = detector(astronaut_image)
    assert len(faces) == 1 and not calls  # detection alone estimates nothing
    height, width = astronaut_image.shape[:2]
    eager, reason = estimate_pose(faces[0].landmarks, faces[0].box, width, height)
    assert faces[0].pose_reason is reason is None and len(calls) == 1
    assert (faces[0].pose.yaw, faces[0].pose.pitch, faces[0].pose.roll) == (eager.yaw, eager.pitch, eager.roll)
    assert faces[0].to_dict()["pose"] == eager.to_dict() and len(calls) == 1  # estimated once
    # a face built without its image size has no camera, hence no pose, and says why
    from retinaface.faces.face import Face

    bare = Face(faces[0].box, 0.9, faces[0].landmarks, faces[0].mesh_coefficients)
    assert (bare.pose, bare.pose_reason) == (None, "image size unknown") and len(calls) == 1
    assert bare.to_dict()["pose_reason"] == "image size unknown"


def test_the_pose_always_belongs_to_the_current_landmarks(detector, astronaut_image):
    """The pose is derived from the landmarks, never carried: after the landmarks are replaced, edited in
    place, or a copy is made with new ones (``dataclasses.replace``, as smoothing does), it is estimated
    from the new ones. Here the same face rolled by 20 degrees in the image (pose.roll is clockwise-positive,
    so it grows by about 20)."""
    import dataclasses

    import cv2

    face = detector(astronaut_image)[0]
    before = face.pose.roll
    centre = face.landmarks.mean(axis=0)
    turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -20.0, 1.0)  # OpenCV: positive = anticlockwise
    rolled = (np.c_[face.landmarks, np.ones(5)] @ turn.T).astype(np.float32)
    copy = dataclasses.replace(face, landmarks=rolled)
    assert copy.pose.roll == pytest.approx(before + 20.0, abs=2.0)
    assert face.pose.roll == pytest.approx(before)  # the original keeps its own
    face.landmarks[:] = rolled  # in place
    assert face.pose.roll == pytest.approx(before + 20.0, abs=2.0)
    face.landmarks = (np.c_[rolled, np.ones(5)] @ cv2.invertAffineTransform(turn).T).astype(np.float32)
    assert face.pose.roll == pytest.approx(before, abs=0.5)
