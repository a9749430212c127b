"""High-level API: NumPy images in, faces out."""

from __future__ import annotations

import os
from typing import Any, Sequence, overload

import numpy as np
import torch

from ..config import InferenceConfig, RefineConfig
from ..media.images import as_bgr_uint8
from ..model.retinaface import RetinaFace
from ..export.onnx import OnnxRetinaFace, export_onnx
from .refine import LandmarkRefiner
from ..faces.tracking import IouTracker
from ..errors import WeightsError
from ..model.weights import load_model, resolve_weights
from ..faces.face import Face


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``InputError`` for a device this machine lacks."""
    from ..errors import InputError

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
        from ..mesh.photo_fit import FitConfig, FitState, fit_faces, renderer_coefficients

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
