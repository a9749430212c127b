"""The per-face stages, run once on a frame's final faces: refine landmarks, track, fit the 3-D mesh.

Detection (the network, and for test-time views the merge of every view's faces) ends with the faces a
frame keeps. Only then does the work that belongs to each final face run, in this order, so that a mesh is
fitted to the landmarks the user sees and never to a view that is thrown away afterwards:

1. refine: a second, closer look at each face (:class:`~retinaface.inference.refine.LandmarkRefiner`);
2. track: track ids across consecutive frames (:class:`~retinaface.faces.tracking.IouTracker`);
3. smooth: in sequences, each track's box and landmarks One-Euro filtered (:class:`TrackSmoother`);
4. fit: the 3-D mesh fitted to the photo (:class:`MeshFitter`), warm-started from the same track's
   previous fit;
5. pose: not a stage of its own: :attr:`Face.pose` is derived from the face's landmarks when read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..faces.face import Face
from ..config import DEFAULT_MESH_START, MESH_STARTS, SmoothConfig
from ..faces.tracking import IouTracker, OneEuroFilter
from ..media.images import as_bgr_uint8
from .refine import LandmarkRefiner


class MeshFitter:
    """Fits each face's 3-D mesh to the photo (:func:`retinaface.mesh.photo_fit.fit_faces`: a start, then
    ``steps`` steps of analysis by synthesis; 0 keeps the start) and fills the faces' ``mesh_*`` fields (see
    :class:`~retinaface.faces.face.Face`). ``start``: one of :data:`MESH_STARTS` (default
    :data:`DEFAULT_MESH_START`); ``"head"`` with 0 steps gives the detector's own mesh, unfitted."""

    def __init__(self, *, steps: int | None = None, start: str | None = None) -> None:
        if steps is not None and steps < 0:
            raise ValueError("mesh steps must be 0 or more")
        start = DEFAULT_MESH_START if start is None else start
        if start not in MESH_STARTS:
            raise ValueError(f"mesh start must be one of {', '.join(MESH_STARTS)}, got {start!r}")
        from ..mesh.photo_fit import FitConfig

        default = FitConfig()
        self.config = default if steps is None else FitConfig(steps=steps, warm_steps=min(steps, default.warm_steps))
        self.start = start

    def __call__(self, image: np.ndarray, faces: list[Face], init: Sequence[Any] | None = None) -> list[Face]:
        """Fit every face of ``image`` (``ndarray[H, W, 3]`` BGR, the frame the faces' pixels refer to) in one
        batch, in place. ``init``: per face, a previous fit's ``mesh_state`` to start from (e.g. the same
        face in the previous video frame) or ``None``."""
        if not faces:
            return faces
        if init is not None and len(init) != len(faces):
            raise ValueError(f"init has {len(init)} states for {len(faces)} faces")
        init = list(init) if init is not None else [None] * len(faces)
        with torch.inference_mode(False), torch.enable_grad():  # the fit needs autograd even if the caller disabled it
            # 8-bit: fit_faces converts only the faces' region to float (the same values). OpenCV swaps the
            # channels of a 1280x720 frame in a tenth of the time a copy through NumPy's reversed view takes
            rgb = torch.from_numpy(cv2.cvtColor(as_bgr_uint8(image), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
            boxes = torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float32))
            landmarks = torch.from_numpy(np.stack([f.landmarks for f in faces]).astype(np.float32))
            for rows, start in self._groups(faces, boxes, init):
                index = torch.tensor(rows)
                fits = self._fit(rgb, boxes[index], landmarks[index], [init[i] for i in rows], start)
                self._fill([faces[i] for i in rows], fits, boxes[index])
        return faces

    def _groups(self, faces: list[Face], boxes: torch.Tensor, init: list[Any]) -> list[tuple[list[int], Any]]:
        """Faces fitted together, with the state they start from (``None``: PnP or their ``init``)."""
        if self.start == "pnp":
            return [(list(range(len(faces))), None)]
        from ..mesh.head_start import state_from_coefficients
        from ..mesh.prior import load_prior

        # all-zero coefficients: the head said nothing (an untrained head, or a face found in a rotated or
        # mirrored view, whose camera was another frame's): those start from PnP
        said = [bool(np.any(faces[i].mesh_coefficients != 0) and np.all(np.isfinite(faces[i].mesh_coefficients))) for i in range(len(faces))]
        fresh = [i for i, state in enumerate(init) if state is None and said[i]]
        others = [i for i, state in enumerate(init) if state is not None or not said[i]]
        groups: list[tuple[list[int], Any]] = [(others, None)] if others else []
        if fresh:
            prior = load_prior()
            coefficients = torch.from_numpy(np.stack([faces[i].mesh_coefficients for i in fresh]).astype(np.float32))
            start = state_from_coefficients(coefficients, boxes[torch.tensor(fresh)], num_identity=prior.num_identity, num_expression=prior.num_expression)
            groups.append((fresh, start))
        return groups

    def _fit(self, rgb: torch.Tensor, boxes: torch.Tensor, landmarks: torch.Tensor, init: list[Any], start: Any):
        from ..mesh.photo_fit import FitState, fit_faces

        if start is not None:
            return fit_faces(rgb, boxes, landmarks, config=self.config, start=start)
        warm = None
        if any(state is not None for state in init):
            # faces without a previous fit get non-finite rows, which fit_faces starts from PnP
            fresh = FitState(*(torch.full((1, *t.shape[1:]), float("nan")) for t in next(s for s in init if s is not None)))
            warm = FitState(*(torch.cat([t.clone() for t in parts]) for parts in zip(*(s if s is not None else fresh for s in init))))
        return fit_faces(rgb, boxes, landmarks, config=self.config, init=warm)

    def _fill(self, faces: list[Face], fits: Any, boxes: torch.Tensor) -> None:
        from ..mesh.photo_fit import renderer_coefficients

        coefficients = renderer_coefficients(fits, boxes, focal=self.config.focal).numpy()
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


@dataclass
class TrackMemory:
    """What a track keeps between frames (in ``IouTracker.state``): its last face and its smoothing filter."""

    face: Face
    smoother: OneEuroFilter | None = None


class TrackSmoother:
    """One-Euro filters each track's box and landmarks (``SmoothConfig``), at the tracker's frame rate."""

    def __init__(self, config: SmoothConfig = SmoothConfig()) -> None:
        self.config = config

    def __call__(self, face: Face, memory: TrackMemory | None, fps: float) -> OneEuroFilter:
        """Smooth ``face`` in place with its track's filter (a new one for a new track); returns the filter."""
        smoother = memory.smoother if memory is not None and memory.smoother is not None else OneEuroFilter(
            frequency=fps, min_cutoff=self.config.min_cutoff, beta=self.config.beta)
        state = smoother(np.concatenate([face.box, face.landmarks.reshape(-1)]).astype(np.float64))
        face.box = state[:4].astype(face.box.dtype)
        face.landmarks = state[4:].reshape(5, 2).astype(face.landmarks.dtype)
        return smoother


class FaceStages:
    """Refine -> track -> smooth -> fit, once per final face of each frame (module docstring). Each stage is
    optional; tracking and smoothing need a tracker (a sequence). With no stage and no tracker, faces pass
    through unchanged."""

    def __init__(
        self, *, refiner: LandmarkRefiner | None = None, smoother: TrackSmoother | None = None, mesh_fitter: MeshFitter | None = None,
    ) -> None:
        self.refiner = refiner
        self.smoother = smoother
        self.mesh_fitter = mesh_fitter

    def __call__(
        self, images: Sequence[np.ndarray], faces_per_image: list[list[Face]], *, tracker: IouTracker | None = None
    ) -> list[list[Face]]:
        """Run the stages over ``faces_per_image`` (the final faces of each of ``images``, in their pixels), in
        place and in frame order. With a ``tracker``, ``images`` are consecutive frames of one sequence: faces
        get ``track_id``\\ s and each mesh fit starts from the same track's fit in the previous frame.
        The same as :meth:`refine` then :meth:`track_and_fit`."""
        return self.track_and_fit(images, self.refine(images, faces_per_image), tracker=tracker)

    def refine(self, images: Sequence[np.ndarray], faces_per_image: list[list[Face]]) -> list[list[Face]]:
        """The refiner alone, in place: it needs nothing but each frame and its own faces, so frames may be
        refined ahead of (or beside) the previous frames' :meth:`track_and_fit`."""
        if len(images) != len(faces_per_image):
            raise ValueError(f"{len(images)} images but faces for {len(faces_per_image)}")
        if self.refiner is None:
            return faces_per_image
        for image, faces in zip(images, faces_per_image):
            if faces:
                refined = self.refiner(as_bgr_uint8(image), np.stack([f.box for f in faces]), np.stack([f.landmarks for f in faces]))
                for face, points in zip(faces, refined):
                    face.landmarks = points.astype(np.float32)
        return faces_per_image

    def track_and_fit(
        self, images: Sequence[np.ndarray], faces_per_image: list[list[Face]], *, tracker: IouTracker | None = None
    ) -> list[list[Face]]:
        """Tracking, smoothing and the mesh fit on already refined faces, in place; frames in order (each
        track's fit starts from its fit in the previous frame given to this method)."""
        if len(images) != len(faces_per_image):
            raise ValueError(f"{len(images)} images but faces for {len(faces_per_image)}")
        for image, faces in zip(images, faces_per_image):  # a track's previous fit must exist before its next frame
            memories: list[TrackMemory | None] = [None] * len(faces)
            smoothers: list[OneEuroFilter | None] = [None] * len(faces)
            if tracker is not None:
                ids = tracker.update(np.stack([f.box for f in faces]) if faces else np.zeros((0, 4)))
                for face, track_id in zip(faces, ids):
                    face.track_id = int(track_id)
                memories = [tracker.state.get(face.track_id) for face in faces]
                if self.smoother is not None:
                    smoothers = [self.smoother(face, memory, tracker.fps) for face, memory in zip(faces, memories)]
            if self.mesh_fitter is not None:
                self.mesh_fitter(image, faces, init=[None if m is None else m.face.mesh_state for m in memories])
            if tracker is not None:
                tracker.state.update((face.track_id, TrackMemory(face, smoother)) for face, smoother in zip(faces, smoothers))
        return faces_per_image
