"""High-level API: NumPy images in, faces out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, overload

import numpy as np
import torch

from .config import InferenceConfig
from .io import as_bgr_uint8
from .model import RetinaFace
from .onnx_backend import OnnxRetinaFace, export_onnx
from .pose import HeadPose, estimate_poses
from .tracking import IouTracker
from .weights import WeightsError, load_model, resolve_weights


@dataclass
class Face:
    """One detected face, in original-image pixels.

    - ``box``: ``ndarray[4]`` x1 y1 x2 y2
    - ``score``: face probability in [0, 1]
    - ``landmarks``: ``ndarray[5, 2]`` (x, y): left eye, right eye, nose tip, left and right mouth corner
      (left/right as they appear in the image)
    - ``mesh_coefficients``: ``ndarray[144]`` raw mesh parameters (128 shape/texture, 7 camera, 9 light)
    - ``mesh_vertices`` / ``mesh_colours``: ``ndarray[468, 3]`` decoded mesh (x, y in image pixels, view depth;
      RGB in [0, 1]) when the detector was created with ``mesh=True``, else ``None``
    - ``mesh_model_vertices``: ``ndarray[468, 3]`` the same mesh in the face model's own frame (before the
      camera), kept so that drawing can render it without decoding it again; ``None`` without ``mesh=True``
    - ``pose``: :class:`~retinaface.pose.HeadPose` (yaw, pitch, roll in degrees; conventions in
      :mod:`retinaface.pose`) from the five landmarks, for every face; ``None`` when the face is too small
      or its landmarks are degenerate, with the reason in ``pose_reason``
    - ``track_id``: the face's track across video frames (:class:`~retinaface.tracking.IouTracker`), ``None``
      for single images
    - :attr:`roll`: in-plane rotation of the eye line in the image (any angle, also upside down), unlike
      ``pose.roll``, which describes heads within about 90 degrees of upright
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    mesh_coefficients: np.ndarray
    mesh_vertices: np.ndarray | None = None
    mesh_colours: np.ndarray | None = None
    mesh_model_vertices: np.ndarray | None = None
    pose: HeadPose | None = None
    pose_reason: str | None = None
    track_id: int | None = None

    @property
    def roll(self) -> float:
        """In-plane rotation in degrees, (-180, 180]: the angle of the line from the left to the right eye as
        seen in the image; 0 for an upright face, positive when the face is turned clockwise, 180 upside down."""
        dx, dy = self.landmarks[1] - self.landmarks[0]
        return float(np.degrees(np.arctan2(dy, dx)))

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

    def __init__(self, model: RetinaFace | OnnxRetinaFace, *, mesh: bool = False) -> None:
        self.model = model.eval()
        if mesh and getattr(model, "mesh_branch", None) is None:
            raise WeightsError(self.MESH_NEEDS_TORCH)
        self.decode_mesh = mesh

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "mobilenet0.25",
        *,
        device: str | torch.device = "auto",
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_size: int | None = None,
        backend: str = "torch",
        optimize: bool = True,
        mesh: bool = False,
    ) -> "Detector":
        """Load released weights by name, a ``.safetensors`` / checkpoint file, or (onnxruntime) an ``.onnx`` file.

        ``backend="torch"`` with ``optimize`` folds BatchNorm into the convolutions and uses channels-last
        memory (same results, faster). ``backend="onnxruntime"`` runs the network in onnxruntime on the CPU,
        exporting the weights on the fly unless an exported ``.onnx`` file is given. ``mesh=True`` also decodes
        each face's 3D mesh (PyTorch backend only).
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
                return cls(OnnxRetinaFace(onnx_model, inference=inference, threads=torch.get_num_threads()))
            except Exception as exc:  # onnx/onnxruntime raise their own types for unusable files
                raise WeightsError(f"cannot load {name_or_path} into onnxruntime ({str(exc).splitlines()[0]})") from None
        if str(name_or_path).endswith(".onnx"):
            raise WeightsError("an .onnx file needs backend='onnxruntime' (--backend onnxruntime)")
        model = load_model(name_or_path, inference=inference, device=resolve_device(device), mesh=mesh)
        return cls(model.fuse_for_inference() if optimize else model, mesh=mesh)

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
                poses, reasons = estimate_poses(landmarks, boxes, image.shape[1], image.shape[0])
                results.append([Face(boxes[i], float(scores[i]), landmarks[i], mesh[i], pose=poses[i], pose_reason=reasons[i])
                                for i in range(len(scores))])
        # frame by frame, in order: a face's previous result must exist before its next frame is meshed
        for image, faces in zip(images, results):
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

    def fit_meshes(self, image: np.ndarray, faces: list[Face], init: Sequence[Any] | None = None) -> list[Face]:
        """Fill the ``mesh_*`` fields of every face of ``image`` in place, in one batch. ``init``: per face, the
        same face's state from the previous video frame (``None`` for new faces), for warm starts. Here the
        meshes are decoded from the network's coefficients and placed in the boxes (no fitting yet)."""
        if not faces:
            return faces
        coefficients = torch.from_numpy(np.stack([f.mesh_coefficients for f in faces]).astype(np.float32)).to(self.device)
        boxes = torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float32)).to(self.device)
        with torch.inference_mode():
            placed, decoded = self.model.mesh_branch.image_vertices(coefficients, boxes)
        vertices, colours, model_vertices = (t.cpu().numpy() for t in (placed, decoded.colours, decoded.vertices))
        for i, face in enumerate(faces):
            face.mesh_vertices, face.mesh_colours, face.mesh_model_vertices = vertices[i], colours[i], model_vertices[i]
        return faces
