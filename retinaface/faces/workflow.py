"""What happens to each frame's final faces: aligned crops and anonymisation (with tracks in sequences).

The pipeline calls :meth:`FaceWorkflow.begin` once per image or video and :meth:`FaceWorkflow.process`
for every frame in order; one workflow serves one run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import CROP_STYLES, align_face
from .anonymize import METHODS, anonymize, keep_largest
from .face import Face
from .tracking import IouTracker


@dataclass(frozen=True)
class WorkflowConfig:
    """Per-frame face handling.

    - ``track``: give faces in videos/animations a ``track_id`` (implied by anonymising a sequence and by
      ``keep_track_ids``); smoothing is a per-face stage of the detector (``Detector(smooth=...)``)
    - ``anonymize``: ``"blur"`` or ``"pixelate"`` every face, ``anonymize_strength`` scaling the effect;
      ``keep_largest`` / ``keep_track_ids`` leave chosen faces untouched; in sequences a track missed for up
      to ``carry_frames`` frames stays covered at its last box
    - ``crops_dir`` / ``crop_style``: write each face's aligned crop (``arcface112`` or ``ffhq``)
    - ``meshes_dir``: write each fitted face mesh as a PLY file (:mod:`retinaface.faces.mesh_export`)
    """

    track: bool = False
    track_iou: float = 0.3
    anonymize: str | None = None
    anonymize_strength: float = 1.0
    keep_largest: bool = False
    keep_track_ids: tuple[int, ...] = ()
    carry_frames: int = 2
    crops_dir: Path | None = None
    crop_style: str = "arcface112"
    meshes_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.anonymize is not None and self.anonymize not in METHODS:
            raise ValueError(f"unknown anonymisation method {self.anonymize!r}; choose one of {', '.join(METHODS)}")
        if not self.anonymize_strength > 0:
            raise ValueError(f"anonymisation strength must be positive, got {self.anonymize_strength}")
        if self.crop_style not in CROP_STYLES:
            raise ValueError(f"unknown crop style {self.crop_style!r}; choose one of {', '.join(CROP_STYLES)}")
        if self.carry_frames < 0:
            raise ValueError(f"carry frames must be 0 or more, got {self.carry_frames}")

    @property
    def tracks_sequences(self) -> bool:
        return self.track or self.anonymize is not None or bool(self.keep_track_ids)

    @property
    def draws_boxes(self) -> bool:
        """Anonymised outputs show the anonymised picture only (boxes would point at the hidden faces)."""
        return self.anonymize is None


@dataclass
class FrameResult:
    """``faces`` (with track ids), ``image`` (anonymised frame, or ``None`` to draw as usual) and
    per-face extra JSON fields (``crop``)."""

    faces: list[Face]
    image: np.ndarray | None
    extras: list[dict] = field(default_factory=list)


class FaceWorkflow:
    """Applies a :class:`WorkflowConfig` frame by frame (state: the current sequence's tracker and filters)."""

    def __init__(self, config: WorkflowConfig) -> None:
        self.config = config
        self._tracker: IouTracker | None = None
        self._tracked_while_detecting = False
        self._sequence = False

    def new_tracker(self, fps: float = 30.0) -> IouTracker:
        """A tracker with this workflow's settings (overlap threshold, frames a lost face stays covered) for a
        sequence at ``fps`` frames per second."""
        return IouTracker(iou_threshold=self.config.track_iou, max_missed=self.config.carry_frames, fps=fps)

    def begin(self, *, sequence: bool, tracker: IouTracker | None = None) -> None:
        """Start a new image (``sequence=False``) or video/animation (tracks start over). ``tracker``: the
        sequence's tracker when detection already assigns track ids with it (one set of ids per video)."""
        self._sequence = sequence and self.config.tracks_sequences
        self._tracker = (tracker or self.new_tracker()) if self._sequence else None
        self._tracked_while_detecting = tracker is not None

    def process(self, source: str, frame: int, image: np.ndarray, faces: Sequence[Face]) -> FrameResult:
        faces = list(faces)
        if self._tracker is not None and not self._tracked_while_detecting:
            ids = self._tracker.update(np.stack([f.box for f in faces]) if faces else np.zeros((0, 4)))
            faces = [dataclasses.replace(f, track_id=i) for f, i in zip(faces, ids)]
        extras = [{} for _ in faces]
        if self.config.crops_dir is not None:
            for index, face in enumerate(faces):
                extras[index]["crop"] = self._write_crop(source, frame, index, image, face)
        if self.config.meshes_dir is not None:
            for index, face in enumerate(faces):
                if face.mesh_model_vertices is not None:  # faces too small to fit have no mesh
                    extras[index]["mesh_file"] = self._write_mesh(source, frame, index, face)
        picture = self._anonymized(image, faces) if self.config.anonymize is not None else None
        return FrameResult(faces, picture, extras)

    def _file_name(self, source: str, frame: int, index: int, suffix: str) -> str:
        """``<input stem>[_<frame>]_<face>.<suffix>``: one file per face, frames numbered in sequences."""
        stem = Path(source).stem if not source.startswith("camera:") else source.replace(":", "")
        return f"{stem}_{frame:06d}_{index:02d}{suffix}" if self._sequence or frame else f"{stem}_{index:02d}{suffix}"

    def _write_mesh(self, source: str, frame: int, index: int, face: Face) -> str:
        from .mesh_export import write_face_mesh

        return os.fspath(write_face_mesh(Path(self.config.meshes_dir) / self._file_name(source, frame, index, ".ply"), face))

    def _write_crop(self, source: str, frame: int, index: int, image: np.ndarray, face: Face) -> dict:
        from ..outputs.atomic import write_image

        crop = align_face(image, face.landmarks, style=self.config.crop_style)
        path = Path(self.config.crops_dir) / self._file_name(source, frame, index, ".png")
        write_image(path, crop.image)
        return {"path": os.fspath(path), "style": self.config.crop_style, **crop.to_dict()}

    def _anonymized(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        keep: set[int] = set()
        if self.config.keep_largest:
            largest = keep_largest([f.box for f in faces])
            if largest is not None:
                keep.add(largest)
        if self.config.keep_track_ids:
            keep |= {i for i, f in enumerate(faces) if f.track_id in self.config.keep_track_ids}
        boxes = [f.box for i, f in enumerate(faces) if i not in keep]
        meshes = [f.mesh_vertices for i, f in enumerate(faces) if i not in keep]
        if self._tracker is not None:  # faces the detector lost for a frame or two stay covered
            for track in self._tracker.missing():
                if track.track_id not in self.config.keep_track_ids:
                    boxes.append(track.box)
                    meshes.append(None)
        return anonymize(image, boxes, method=self.config.anonymize, strength=self.config.anonymize_strength, mesh_vertices=meshes)
