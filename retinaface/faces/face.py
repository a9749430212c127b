"""The detected face: box, score, landmarks, mesh fields and a head pose that always belongs to its landmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pose import HeadPose, estimate_pose


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
