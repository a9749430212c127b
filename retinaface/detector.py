"""High-level API: NumPy images in, faces out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence, overload

import numpy as np
import torch

from .config import InferenceConfig, RefineConfig
from .io import as_bgr_uint8
from .model import RetinaFace
from .onnx_backend import OnnxRetinaFace, export_onnx
from .pose import HeadPose, estimate_pose
from .refine import LandmarkRefiner
from .tracking import IouTracker
from .weights import WeightsError, load_model, resolve_weights


class _NotEstimated:
    def __repr__(self) -> str:
        return "<estimated when first read>"


_NOT_ESTIMATED = _NotEstimated()
_POSE_INPUTS = frozenset({"landmarks", "box", "image_size"})


class _PoseField:
    """Descriptor behind :attr:`Face.pose` and :attr:`Face.pose_reason`: a value given to the constructor
    (or assigned) is kept; otherwise the pose is estimated from the landmarks when either is first read, so
    callers that never read poses (benchmarks, anonymisation, test-time passes) do not pay for them."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = f"_{name}_value"

    def __get__(self, face, owner=None):
        if face is None:
            return _NOT_ESTIMATED  # the dataclass default
        value = face.__dict__.get(self.slot, _NOT_ESTIMATED)
        if value is _NOT_ESTIMATED:
            face._estimate_pose()
            value = face.__dict__[self.slot]
        return value

    def __set__(self, face, value) -> None:
        face.__dict__[self.slot] = value


@dataclass
class Face:
    """One detected face, in original-image pixels.

    - ``box``: ``ndarray[4]`` x1 y1 x2 y2
    - ``score``: face probability in [0, 1]
    - ``landmarks``: ``ndarray[5, 2]`` (x, y): left eye, right eye, nose tip, left and right mouth corner
      (left/right as they appear in the image)
    - ``mesh_coefficients``: ``ndarray[144]`` mesh parameters (128 shape/texture, 7 camera, 9 light): the
      network's prediction, or with ``mesh=True`` the fitted mesh expressed in that layout
    - ``mesh_vertices``: ``ndarray[468, 3]`` the fitted mesh with ``mesh=True`` (template vertex order = mediapipe
      face-mesh order; x, y in image pixels; z: depth in pixels relative to the head's centre, positive away
      from the camera), else ``None``; ``mesh_colours``: ``ndarray[468, 3]`` the model's albedo, RGB in [0, 1]
    - ``mesh_model_vertices``: ``ndarray[468, 3]`` the same mesh in the face model's own frame (before the
      camera), kept so that drawing can render it without decoding it again; ``None`` without ``mesh=True``
    - ``pose``: :class:`~retinaface.pose.HeadPose` (yaw, pitch, roll in degrees; conventions in
      :mod:`retinaface.pose`) from the five landmarks, for every face; ``None`` when the face is too small
      or its landmarks are degenerate, with the reason in ``pose_reason``. Estimated when ``pose`` or
      ``pose_reason`` is first read (about 0.1-0.3 ms per face); ``None`` for a face built without a pose
      and without ``image_size``
    - ``track_id``: the face's track across video frames (:class:`~retinaface.tracking.IouTracker`), ``None``
      for single images
    - :attr:`roll`: in-plane rotation of the eye line in the image (any angle, also upside down), unlike
      ``pose.roll``, which describes heads within about 90 degrees of upright
    - ``mesh_residual``: with ``mesh=True``, ``{"pixel_l1", "landmark_px"}``: the fit's mean L1 (0-1 RGB) over
      the pixels the mesh covers and the mean distance between the detected and fitted landmarks; drop fits
      with large values. ``None`` (with ``mesh_vertices`` ``None``) for faces not fitted (box under 10 px,
      non-finite input)
    - ``mesh_state``: the fit's warm-start state (``retinaface.mesh.photo_fit.FitState``, one row), to pass
      as ``init`` for the same face in the next video frame
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    mesh_coefficients: np.ndarray
    mesh_vertices: np.ndarray | None = None
    mesh_colours: np.ndarray | None = None
    mesh_model_vertices: np.ndarray | None = None
    pose: HeadPose | None = _PoseField()  # type: ignore[assignment]
    pose_reason: str | None = _PoseField()  # type: ignore[assignment]
    track_id: int | None = None
    mesh_residual: dict[str, float] | None = None
    mesh_state: Any = None
    image_size: tuple[int, int] | None = field(default=None, repr=False)
    """``(width, height)`` of the image the face was detected in: the camera the pose is estimated with."""

    @property
    def roll(self) -> float:
        """In-plane rotation in degrees, (-180, 180]: the angle of the line from the left to the right eye as
        seen in the image; 0 for an upright face, positive when the face is turned clockwise, 180 upside down."""
        dx, dy = self.landmarks[1] - self.landmarks[0]
        return float(np.degrees(np.arctan2(dy, dx)))

    def __setattr__(self, name: str, value: Any) -> None:
        # an estimated pose belongs to the landmarks, box and camera it came from: new ones estimate it anew
        # (a pose that was given stays as given)
        if name in _POSE_INPUTS and self.__dict__.get("_pose_estimated", False):
            for slot in ("_pose_value", "_pose_reason_value", "_pose_estimated"):
                self.__dict__.pop(slot, None)
        super().__setattr__(name, value)

    def _estimate_pose(self) -> None:
        given_pose = self.__dict__.get("_pose_value", _NOT_ESTIMATED)
        if given_pose is _NOT_ESTIMATED:
            pose, reason = None, None
            if self.image_size is not None:
                pose, reason = estimate_pose(self.landmarks, self.box, *self.image_size)
            self.__dict__["_pose_value"] = pose
            if self.__dict__.get("_pose_reason_value", _NOT_ESTIMATED) is _NOT_ESTIMATED:
                self.__dict__["_pose_reason_value"] = reason
            self.__dict__["_pose_estimated"] = True
        else:  # a pose was given without a reason
            self.__dict__["_pose_reason_value"] = None

    def to_dict(self, *, include_mesh: bool = False, decimals: int = 2) -> dict[str, Any]:
        """JSON-friendly dict: ``{"box": [x1, y1, x2, y2], "score", "landmarks": [[x, y] x 5], "roll",
        "pose": {"yaw", "pitch", "roll"} or null}``, plus ``"pose_reason"`` when the pose is null and
        ``"track_id"`` in videos; with ``include_mesh`` also ``mesh_coefficients`` and, if decoded,
        ``mesh_vertices`` ``[[x, y, depth] x 468]`` (image pixels, the template's vertex order)."""
        record: dict[str, Any] = {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
            "roll": round(self.roll, 1),
            "pose": None if self.pose is None else self.pose.to_dict(),
        }
        if self.pose is None and self.pose_reason is not None:
            record["pose_reason"] = self.pose_reason
        if self.track_id is not None:
            record["track_id"] = int(self.track_id)
        if include_mesh:
            record["mesh_coefficients"] = [round(float(v), 5) for v in self.mesh_coefficients]
            if self.mesh_vertices is not None:
                record["mesh_vertices"] = [[round(float(c), 1) for c in v] for v in self.mesh_vertices]
            record["mesh_residual"] = self.mesh_residual
        return record


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``InputError`` for a device this machine lacks."""
    from .io import InputError

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} asked for but CUDA is not available here; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return resolved
    if resolved.type == "mps" and torch.backends.mps.is_available():
        return resolved
    raise InputError(f"device {str(device)!r} is not supported here; use auto, cpu or cuda")


class Detector:
    """Face detector wrapping a :class:`RetinaFace` model.

    >>> det = Detector.from_pretrained("mobilenet0.25")
    >>> faces = det(image_bgr)               # list[Face] for one HxW, HxWx1, HxWx3 (BGR) or HxWx4 image
    >>> per_image = det([img_a, img_b])      # list[list[Face]] for a list of images of any sizes
    """

    BACKENDS = ("torch", "onnxruntime")
    MESH_NEEDS_TORCH = "decoding meshes needs the PyTorch backend (the onnxruntime model has no mesh decoder)"

    def __init__(
        self, model: RetinaFace | OnnxRetinaFace, *, mesh: bool = False, mesh_steps: int | None = None,
        refine_landmarks: bool | None = None, refine: RefineConfig = RefineConfig(),
    ) -> None:
        self.model = model.eval()
        if mesh and getattr(model, "mesh_branch", None) is None:
            raise WeightsError(self.MESH_NEEDS_TORCH)
        if mesh_steps is not None and mesh_steps < 0:
            raise WeightsError("mesh_steps must be 0 or more")
        self.decode_mesh = mesh
        self.mesh_steps = mesh_steps
        self.landmark_refiner = None
        if mesh if refine_landmarks is None else refine_landmarks:
            self.landmark_refiner = LandmarkRefiner(
                self._detect_crops, face_size=refine.face_size, context=refine.context, flip=refine.flip, min_iou=refine.min_iou)

    def _detect_crops(self, crops: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.model([crop.to(self.device) for crop in crops])

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "mobilenet0.25",
        *,
        device: str | torch.device = "auto",
        score_threshold: float = InferenceConfig.score_threshold,
        nms_threshold: float = InferenceConfig.nms_threshold,
        max_size: int | None = InferenceConfig.max_size,
        backend: str = "torch",
        optimize: bool = True,
        mesh: bool = False,
        mesh_steps: int | None = None,
        refine_landmarks: bool | None = None,
        refine: RefineConfig = RefineConfig(),
    ) -> "Detector":
        """Load released weights by name, a ``.safetensors`` / checkpoint file, or (onnxruntime) an ``.onnx`` file.

        ``backend="torch"`` with ``optimize`` folds BatchNorm into the convolutions and uses channels-last
        memory (same results, faster). ``backend="onnxruntime"`` runs the network in onnxruntime on the CPU,
        exporting the weights on the fly unless an exported ``.onnx`` file is given. ``mesh=True`` also fits
        each face's 3D mesh (PyTorch backend only; :meth:`fit_meshes`) with ``mesh_steps`` optimisation steps
        (default: ``FitConfig.steps``; 0 = the PnP pose of the five landmarks with the prior's mean face).
        ``refine_landmarks`` (default: on with ``mesh``) takes a second, closer look at each face
        (:mod:`retinaface.refine`, settings ``refine``, e.g. ``REFINE_PRESETS["video"]``) and replaces its
        landmarks and pose by the steadier refined ones.
        """
        inference = InferenceConfig(score_threshold=score_threshold, nms_threshold=nms_threshold, max_size=max_size)
        if backend not in cls.BACKENDS:
            raise WeightsError(f"unknown backend {backend!r}; choose one of {', '.join(cls.BACKENDS)}")
        if backend == "onnxruntime":
            if mesh:  # fail before exporting anything
                raise WeightsError(cls.MESH_NEEDS_TORCH)
            if str(name_or_path).endswith(".onnx"):
                path = resolve_weights(name_or_path)
                onnx_model = path.read_bytes()
            else:
                onnx_model = export_onnx(load_model(name_or_path, mesh=False))
            try:
                return cls(OnnxRetinaFace(onnx_model, inference=inference, threads=torch.get_num_threads()), refine_landmarks=refine_landmarks, refine=refine)
            except Exception as exc:  # onnx/onnxruntime raise their own types for unusable files
                raise WeightsError(f"cannot load {name_or_path} into onnxruntime ({str(exc).splitlines()[0]})") from None
        if str(name_or_path).endswith(".onnx"):
            raise WeightsError("an .onnx file needs backend='onnxruntime' (--backend onnxruntime)")
        model = load_model(name_or_path, inference=inference, device=resolve_device(device), mesh=mesh)
        return cls(model.fuse_for_inference() if optimize else model, mesh=mesh, mesh_steps=mesh_steps, refine_landmarks=refine_landmarks, refine=refine)

    @property
    def device(self) -> torch.device:
        return self.model.preprocessor.pixel_mean.device

    @property
    def score_threshold(self) -> float:
        return self.model.postprocessor.score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.model.postprocessor.score_threshold = float(value)

    @property
    def nms_threshold(self) -> float:
        return self.model.postprocessor.nms_threshold

    @nms_threshold.setter
    def nms_threshold(self, value: float) -> None:
        self.model.postprocessor.nms_threshold = float(value)

    @property
    def max_size(self) -> int | None:
        return self.model.preprocessor.max_size

    @max_size.setter
    def max_size(self, value: int | None) -> None:
        self.model.preprocessor.max_size = value

    @overload
    def __call__(self, images: np.ndarray) -> list[Face]: ...
    @overload
    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...

    def __call__(self, images):
        if isinstance(images, np.ndarray):
            return self.detect_batch([images])[0]
        return self.detect_batch(list(images))

    def detect_batch(self, images: Sequence[np.ndarray], *, tracker: IouTracker | None = None) -> list[list[Face]]:
        """Detect faces in each image (any sizes, batched through the network together).

        With a ``tracker``, ``images`` are consecutive video frames: each face gets a ``track_id``, and the mesh
        path is given the same face from the previous frame (kept in ``tracker.state``) to start from.
        """
        if not images:
            return []
        tensors = [torch.from_numpy(as_bgr_uint8(im)).to(self.device).permute(2, 0, 1) for im in images]
        with torch.inference_mode():
            detections = self.model(tensors)
            results = []
            for image, det in zip(images, detections):
                boxes, scores = det["boxes"].cpu().numpy(), det["scores"].cpu().numpy()
                landmarks, mesh = det["landmarks"].cpu().numpy(), det["mesh_coefficients"].cpu().numpy()
                size = (image.shape[1], image.shape[0])
                results.append([Face(boxes[i], float(scores[i]), landmarks[i], mesh[i], image_size=size) for i in range(len(scores))])
        return self.track_and_fit(images, results, tracker=tracker)

    def track_and_fit(
        self, images: Sequence[np.ndarray], results: list[list[Face]], *, tracker: IouTracker | None = None
    ) -> list[list[Face]]:
        """The per-frame steps after detection, in frame order: track ids from ``tracker`` (consecutive video
        frames) and, with ``mesh=True``, mesh fits warm-started from the same track's previous fit."""
        # a face's previous result must exist before its next frame is meshed
        for image, faces in zip(images, results):
            if self.landmark_refiner is not None and faces:
                self.refine_landmarks(image, faces)
            previous: list[Face | None] = [None] * len(faces)
            if tracker is not None:
                for face, track_id in zip(faces, tracker.update(np.stack([f.box for f in faces]) if faces else np.zeros((0, 4)))):
                    face.track_id = int(track_id)
                previous = [tracker.state.get(face.track_id) for face in faces]
            if self.decode_mesh:
                self.fit_meshes(image, faces, init=[getattr(p, "mesh_state", None) for p in previous])
            if tracker is not None:
                tracker.state.update((face.track_id, face) for face in faces)
        return results

    def refine_landmarks(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """Replace the faces' landmarks by the refiner's (:mod:`retinaface.refine`), in place; poses not
        given explicitly are then estimated from the refined landmarks."""
        image = as_bgr_uint8(image)
        refined = self.landmark_refiner(image, np.stack([f.box for f in faces]), np.stack([f.landmarks for f in faces]))
        for face, points in zip(faces, refined):
            face.landmarks = points.astype(np.float32)
        return faces

    def fit_meshes(self, image: np.ndarray, faces: list[Face], init: Sequence[Any] | None = None) -> list[Face]:
        """Fit the 3D mesh of every face of ``image`` (as given to the detector) in one batch and fill the
        faces' ``mesh_*`` fields in place (see :class:`Face`). ``init``: per face, a previous fit's
        ``mesh_state`` to warm-start from (e.g. the same face in the previous video frame) or ``None``."""
        if not faces:
            return faces
        from .mesh.photo_fit import FitConfig, FitState, fit_faces, renderer_coefficients

        config = FitConfig() if self.mesh_steps is None else FitConfig(steps=self.mesh_steps, warm_steps=min(self.mesh_steps, FitConfig.warm_steps))
        with torch.inference_mode(False), torch.enable_grad():  # the fit needs autograd even if the caller disabled it
            rgb = torch.from_numpy(np.ascontiguousarray(as_bgr_uint8(image)[..., ::-1])).permute(2, 0, 1).float() / 255
            boxes = torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float32))
            landmarks = torch.from_numpy(np.stack([f.landmarks for f in faces]).astype(np.float32))
            start = None
            if init is not None and any(state is not None for state in init):
                if len(init) != len(faces):
                    raise ValueError(f"init has {len(init)} states for {len(faces)} faces")
                # faces without a previous fit get non-finite rows, which fit_faces starts from PnP
                fresh = FitState(*(torch.full((1, *t.shape[1:]), float("nan")) for t in next(s for s in init if s is not None)))
                start = FitState(*(torch.cat([t.clone() for t in parts]) for parts in zip(*(s if s is not None else fresh for s in init))))
            fits = fit_faces(rgb, boxes, landmarks, config=config, init=start)
        coefficients = renderer_coefficients(fits, boxes, focal=config.focal).numpy()
        vertices, model_vertices, colours = fits.vertices.numpy(), fits.model_vertices.numpy(), fits.colours.numpy()
        for i, face in enumerate(faces):
            if not bool(fits.valid[i]):
                face.mesh_vertices = face.mesh_colours = face.mesh_model_vertices = face.mesh_residual = face.mesh_state = None
                continue
            face.mesh_coefficients = coefficients[i]
            face.mesh_vertices, face.mesh_model_vertices, face.mesh_colours = vertices[i], model_vertices[i], colours[i]
            face.mesh_residual = {
                "pixel_l1": round(float(fits.pixel_residual[i]), 4), "landmark_px": round(float(fits.landmark_residual[i]), 2),
            }
            face.mesh_state = fits.state.index([i])
        return faces
