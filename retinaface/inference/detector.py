"""The detector API: NumPy images in, final faces out, through one declared interface.

:class:`FaceDetector` is what every detector offers: :meth:`~FaceDetector.find` (the network stage: boxes,
scores, landmarks and the head's mesh coefficients; for test-time views, every view merged in the original
frame) and :meth:`~FaceDetector.detect_batch`, which runs the per-face stages
(:mod:`retinaface.inference.stages`) once on what ``find`` kept. :class:`Detector` wraps one network;
:class:`~retinaface.inference.tta.TestTimeAugmentation` and :class:`~retinaface.inference.views.MultiViewDetector`
wrap a :class:`Detector` and share its stages.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Sequence, overload

import numpy as np
import torch

from ..config import MESH_STARTS, InferenceConfig, RefineConfig, SmoothConfig
from ..errors import InputError, WeightsError
from ..export.onnx import OnnxRetinaFace, export_onnx
from ..faces.face import Face
from ..faces.tracking import IouTracker
from ..media.images import as_bgr_uint8
from ..model.retinaface import RetinaFace
from ..model.weights import load_model, resolve_weights
from .refine import LandmarkRefiner
from .stages import FaceStages, MeshFitter, TrackSmoother

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; ``InputError`` for a device this machine lacks."""
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


def choose_backend(backend: str, *, weights: str | os.PathLike, device: str | torch.device, long_run: bool) -> str:
    """The engine ``"torch"`` or ``"onnxruntime"`` for :meth:`Detector.from_pretrained`. ``"auto"``: onnxruntime
    for ``.onnx`` weights, and on the CPU for ``long_run`` inputs (videos, cameras, folders), where its faster
    network repays the export at load time (about a second); PyTorch otherwise (GPUs, single photos).
    Other values are returned as they are."""
    if backend != "auto":
        return backend
    if str(weights).endswith(".onnx"):
        return "onnxruntime"
    return "onnxruntime" if long_run and resolve_device(device).type == "cpu" else "torch"


class FaceDetector(abc.ABC):
    """What every detector offers (module docstring). Subclasses implement :meth:`find` and the properties;
    calling and :meth:`detect_batch` are the same for all."""

    stages: FaceStages
    """The per-face stages run on :meth:`find`'s faces: refine, track, fit."""

    @abc.abstractmethod
    def find(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The network stage: per image (``ndarray[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` BGR or ``[H, W, 4]``),
        the faces it keeps, in its pixels, before any per-face stage."""

    @property
    @abc.abstractmethod
    def model(self) -> RetinaFace | OnnxRetinaFace:
        """The network (for drawing meshes and for the refiner's closer look)."""

    @property
    def device(self) -> torch.device:
        return self.model.preprocessor.pixel_mean.device

    @property
    def nms_threshold(self) -> float:
        return self.model.postprocessor.nms_threshold

    @property
    def decode_mesh(self) -> bool:
        """Whether :meth:`detect_batch` fits a 3-D mesh to every face."""
        return self.stages.mesh_fitter is not None

    @overload
    def __call__(self, images: np.ndarray) -> list[Face]: ...
    @overload
    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...

    def __call__(self, images):
        if isinstance(images, np.ndarray):
            return self.detect_batch([images])[0]
        return self.detect_batch(list(images))

    def detect_batch(self, images: Sequence[np.ndarray], *, tracker: IouTracker | None = None) -> list[list[Face]]:
        """Final faces of each image (any sizes): :meth:`find`, then the per-face stages once per face.

        With a ``tracker``, ``images`` are consecutive video frames: each face gets a ``track_id``, and the mesh
        fit starts from the same face's fit in the previous frame (kept in ``tracker.state``).
        """
        if not images:
            return []
        return self.stages(images, self.find(images), tracker=tracker)


class Detector(FaceDetector):
    """Face detector wrapping a :class:`RetinaFace` model.

    >>> det = Detector.from_pretrained("mobilenet0.25")
    >>> faces = det(image_bgr)               # list[Face] for one HxW, HxWx1, HxWx3 (BGR) or HxWx4 image
    >>> per_image = det([img_a, img_b])      # list[list[Face]] for a list of images of any sizes
    """

    BACKENDS = ("torch", "onnxruntime")

    def __init__(
        self, model: RetinaFace | OnnxRetinaFace, *, mesh: bool = False, mesh_steps: int | None = None, mesh_start: str | None = None,
        refine_landmarks: bool | None = None, refine: RefineConfig = RefineConfig(), smooth: SmoothConfig | None = None,
        mesh_head: bool = True,
    ) -> None:
        self._model = model.eval()
        self.mesh_head = bool(mesh_head)
        if mesh and mesh_start == "head" and not mesh_head:
            raise WeightsError("mesh_start='head' starts from the mesh head's coefficients: it needs mesh_head=True")
        if mesh_steps is not None and mesh_steps < 0:
            raise WeightsError("mesh_steps must be 0 or more")
        if mesh_start is not None and mesh_start not in MESH_STARTS:
            raise WeightsError(f"mesh_start must be one of {', '.join(MESH_STARTS)}, got {mesh_start!r}")
        if mesh and mesh_start == "head" and getattr(getattr(model, "config", None), "mesh_head", None) != "roi":
            raise WeightsError("starting meshes from the detector's own mesh needs weights with a trained RoI mesh head "
                               "(these weights have the paper's per-anchor head); use the PnP start")
        refiner = None
        if refine_landmarks is None and not mesh:
            # a second look only at the faces rolled beyond the first look's range
            refine = dataclasses.replace(refine, upright=True, only_rolled=True)
        if refine_landmarks is not False:
            refiner = LandmarkRefiner(
                self._detect_crops, face_size=refine.face_size, context=refine.context, flip=refine.flip, upright=refine.upright,
                upright_tolerance=refine.upright_tolerance, first_look_rolls=refine.first_look_rolls, only_rolled=refine.only_rolled,
                min_iou=refine.min_iou)
        self.stages = FaceStages(
            refiner=refiner, smoother=None if smooth is None else TrackSmoother(smooth),
            mesh_fitter=MeshFitter(steps=mesh_steps, start=mesh_start) if mesh else None,
        )

    @property
    def model(self) -> RetinaFace | OnnxRetinaFace:
        return self._model

    @property
    def landmark_refiner(self) -> LandmarkRefiner | None:
        return self.stages.refiner

    def _detect_crops(self, crops: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        # the refiner reads only landmarks: the mesh head need not run on the crops' detections
        return self.model.detect([crop.to(self.device) for crop in crops], mesh=False)

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
        mesh_start: str | None = None,
        refine_landmarks: bool | None = None,
        refine: RefineConfig = RefineConfig(),
        smooth: SmoothConfig | None = None,
        mesh_head: bool = True,
    ) -> "Detector":
        """Load released weights by name, a ``.safetensors`` / checkpoint file, or (onnxruntime) an ``.onnx`` file.

        ``backend="torch"`` with ``optimize`` folds BatchNorm into the convolutions and uses channels-last
        memory (same results, faster). ``backend="onnxruntime"`` runs the network in onnxruntime on the CPU,
        exporting the weights on the fly unless an exported ``.onnx`` file is given. ``mesh=True`` also fits
        each face's 3D mesh (in PyTorch, whichever backend runs the network) with ``mesh_steps`` optimisation steps
        (default: ``FitConfig.steps``; 0 = the start itself), starting from ``mesh_start``: ``"pnp"`` (the
        prior's mean face posed by PnP of the five landmarks) or ``"head"`` (the detector's own mesh, from its
        RoI mesh head; :data:`~retinaface.config.MESH_STARTS`, default ``DEFAULT_MESH_START``).
        ``refine_landmarks=True`` (the default with ``mesh``) takes a second, closer look at each face, turned
        upright (:mod:`retinaface.inference.refine`, settings ``refine``, e.g. ``REFINE_PRESETS["video"]``), and
        replaces its landmarks and pose by the steadier refined ones; the default without ``mesh`` looks again
        only at faces rolled beyond ``refine.first_look_rolls`` (no cost for upright faces); ``False`` never.
        ``smooth`` One-Euro filters each track's box and landmarks in sequences (:meth:`detect_batch` with a
        tracker), before the mesh fit. ``mesh_head=False`` skips the network's mesh head: ``Face.mesh_coefficients`` is then empty (``ndarray[0]``) unless a mesh
        is fitted, and photos with many faces detect faster (crowd.jpg, 27 faces: 0.79x the onnxruntime call).
        """
        inference = InferenceConfig(score_threshold=score_threshold, nms_threshold=nms_threshold, max_size=max_size)
        if backend not in cls.BACKENDS:
            raise WeightsError(f"unknown backend {backend!r}; choose one of {', '.join(cls.BACKENDS)}")
        if backend == "onnxruntime":
            if str(name_or_path).endswith(".onnx"):
                path = resolve_weights(name_or_path)
                onnx_model = path.read_bytes()
            else:
                onnx_model = export_onnx(load_model(name_or_path, mesh=False))
            try:
                onnx_retinaface = OnnxRetinaFace(onnx_model, inference=inference)
            except Exception as exc:  # onnx/onnxruntime raise their own types for unusable files
                raise WeightsError(f"cannot load {name_or_path} into onnxruntime ({str(exc).splitlines()[0]})") from None
            return cls(onnx_retinaface, mesh=mesh, mesh_steps=mesh_steps, mesh_start=mesh_start, refine_landmarks=refine_landmarks,
                       refine=refine, smooth=smooth, mesh_head=mesh_head)
        if str(name_or_path).endswith(".onnx"):
            raise WeightsError("an .onnx file needs backend='onnxruntime' (--backend onnxruntime)")
        model = load_model(name_or_path, inference=inference, device=resolve_device(device), mesh=mesh)
        return cls(model.fuse_for_inference() if optimize else model, mesh=mesh, mesh_steps=mesh_steps, mesh_start=mesh_start,
                   refine_landmarks=refine_landmarks, refine=refine, smooth=smooth, mesh_head=mesh_head)

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

    def find(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The network on ``images`` (any sizes, one batch): boxes, scores, landmarks and the head's mesh
        coefficients, in each image's pixels (see :meth:`FaceDetector.find`)."""
        if not images:
            return []
        tensors = [torch.from_numpy(as_bgr_uint8(im)).to(self.device).permute(2, 0, 1) for im in images]
        with torch.inference_mode():
            detections = self.model.detect(tensors, mesh=self.mesh_head)
        results = []
        for image, det in zip(images, detections):
            boxes, scores = det["boxes"].cpu().numpy(), det["scores"].cpu().numpy()
            landmarks, mesh = det["landmarks"].cpu().numpy(), det["mesh_coefficients"].cpu().numpy()
            size = (image.shape[1], image.shape[0])
            results.append([Face(boxes[i], float(scores[i]), landmarks[i], mesh[i], image_size=size) for i in range(len(scores))])
        return results


class ViewsDetector(FaceDetector):
    """Base of the detectors that run a :class:`Detector`'s network over views of each image (test-time
    scales and mirroring, rotations): they share its network and its per-face stages."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.stages = detector.stages

    @property
    def model(self) -> RetinaFace | OnnxRetinaFace:
        return self.detector.model

    @property
    def nms_threshold(self) -> float:
        return self.detector.nms_threshold
