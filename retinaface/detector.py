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
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    mesh_coefficients: np.ndarray
    mesh_vertices: np.ndarray | None = None
    mesh_colours: np.ndarray | None = None
    mesh_model_vertices: np.ndarray | None = None

    def to_dict(self, *, include_mesh: bool = False, decimals: int = 2) -> dict[str, Any]:
        """JSON-friendly dict: ``{"box": [x1, y1, x2, y2], "score", "landmarks": [[x, y] x 5]}``; with
        ``include_mesh`` also ``mesh_coefficients`` and, if decoded, ``mesh_vertices`` ``[[x, y, depth] x 468]``."""
        record: dict[str, Any] = {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.landmarks],
        }
        if include_mesh:
            record["mesh_coefficients"] = [round(float(v), 5) for v in self.mesh_coefficients]
            if self.mesh_vertices is not None:
                record["mesh_vertices"] = [[round(float(c), 1) for c in v] for v in self.mesh_vertices]
        return record


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
        score_threshold: float = InferenceConfig.score_threshold,
        nms_threshold: float = InferenceConfig.nms_threshold,
        max_size: int | None = InferenceConfig.max_size,
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

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect faces in each image (any sizes, batched through the network together)."""
        if not images:
            return []
        tensors = [torch.from_numpy(as_bgr_uint8(im)).to(self.device).permute(2, 0, 1) for im in images]
        with torch.inference_mode():
            detections = self.model(tensors)
            results = []
            for det in detections:
                vertices = colours = model_vertices = None
                if self.decode_mesh and len(det["boxes"]):
                    placed, decoded = self.model.mesh_branch.image_vertices(det["mesh_coefficients"], det["boxes"])
                    vertices, colours, model_vertices = (t.cpu().numpy() for t in (placed, decoded.colours, decoded.vertices))
                boxes, scores = det["boxes"].cpu().numpy(), det["scores"].cpu().numpy()
                landmarks, mesh = det["landmarks"].cpu().numpy(), det["mesh_coefficients"].cpu().numpy()
                results.append([
                    Face(boxes[i], float(scores[i]), landmarks[i], mesh[i],
                         *(None if per_face is None else per_face[i] for per_face in (vertices, colours, model_vertices)))
                    for i in range(len(scores))
                ])
        return results
