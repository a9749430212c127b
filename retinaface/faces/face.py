"""The detected face: box, score, landmarks, mesh fields, and a head pose that always belongs to its landmarks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .landmarks import transform_boxes, transform_landmarks
from .pose import HeadPose, estimate_pose


def round_like_python(values: Any, decimals: int) -> list:
    """``values`` (any array-like of numbers, e.g. ``ndarray[468, 3]`` float32) as nested lists of Python floats,
    each exactly ``round(float(v), decimals)``: the same numbers, NaN and infinities
    included, so the same JSON text, in a few array operations instead of one call of ``round`` per value.

    ``rint(v * 10**decimals) / 10**decimals`` is Python's result wherever the scaled value is not within its
    own float error of a half-integer: the product's rounding cannot have moved it across or onto a tie, and
    the division gives the float nearest the rounded decimal, as ``round`` does. The few values near a tie
    (exact halves, or values too large to hold a fractional digit), NaN and infinities go through ``round``,
    and so does every value for ``decimals`` outside 0-15 (where the power of ten is no longer exact).
    """
    x = np.asarray(values, dtype=np.float64)
    if not 0 <= decimals <= 15:
        return np.array([round(float(v), decimals) for v in x.ravel()], dtype=np.float64).reshape(x.shape).tolist()
    scale = 10.0**decimals
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = x * scale
        result = np.rint(scaled) / scale
        doubtful = ~(np.abs(scaled - np.floor(scaled) - 0.5) > np.spacing(np.abs(scaled)))
    if doubtful.any():
        result[doubtful] = [round(float(v), decimals) for v in x[doubtful]]
    return result.tolist()


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
    - ``track_id``: the face's track across video frames (:class:`~retinaface.faces.tracking.IouTracker`),
      ``None`` for single images
    - ``mesh_residual``: with ``mesh=True``, ``{"pixel_l1", "landmark_px"}``: the fit's mean L1 (0-1 RGB) over
      the pixels the mesh covers and the mean distance between the detected and fitted landmarks; drop fits
      with large values. ``None`` (with ``mesh_vertices`` ``None``) for faces not fitted (box under 10 px,
      non-finite input)
    - ``mesh_state``: the fit's warm-start state (``retinaface.mesh.photo_fit.FitState``, one row), to pass
      as ``init`` for the same face in the next video frame
    - ``image_size``: ``(width, height)`` of the image the face was detected in: the camera the pose is
      estimated with

    Derived, never stored apart from what they are derived from:

    - :attr:`pose`: :class:`~retinaface.faces.pose.HeadPose` (yaw, pitch, roll in degrees) estimated from the
      current landmarks, box and image size when read (about 0.1-0.3 ms, then cached until one of them
      changes, in-place edits included); ``None`` when the face is too small, its landmarks are degenerate or
      the image size is unknown, with the reason in :attr:`pose_reason`
    - :attr:`roll`: in-plane rotation of the eye line in the image (any angle, also upside down), unlike
      ``pose.roll``, which describes heads within about 90 degrees of upright
    - :attr:`landmarks68`: the 68 Multi-PIE / iBUG points of the fitted mesh (``None`` without a mesh)
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    mesh_coefficients: np.ndarray
    mesh_vertices: np.ndarray | None = None
    mesh_colours: np.ndarray | None = None
    mesh_model_vertices: np.ndarray | None = None
    track_id: int | None = None
    mesh_residual: dict[str, float] | None = None
    mesh_state: Any = None
    image_size: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def pose(self) -> HeadPose | None:
        """Head pose from the current landmarks (class docstring); ``None`` with :attr:`pose_reason` when unknown."""
        return self._pose_and_reason()[0]

    @property
    def pose_reason(self) -> str | None:
        """Why :attr:`pose` is ``None`` (one phrase), else ``None``."""
        return self._pose_and_reason()[1]

    def _pose_and_reason(self) -> tuple[HeadPose | None, str | None]:
        # keyed on the values, not the array objects, so that in-place edits of the landmarks re-estimate too
        key = (np.asarray(self.landmarks, np.float64).tobytes(), np.asarray(self.box, np.float64).tobytes(), self.image_size)
        cached = self.__dict__.get("_pose_cache")
        if cached is None or cached[0] != key:
            if self.image_size is None:
                result: tuple[HeadPose | None, str | None] = (None, "image size unknown")
            else:
                result = estimate_pose(self.landmarks, self.box, *self.image_size)
            cached = self.__dict__["_pose_cache"] = (key, result)
        return cached[1]

    @property
    def roll(self) -> float:
        """In-plane rotation in degrees, (-180, 180]: the angle of the line from the left to the right eye as
        seen in the image; 0 for an upright face, positive when the face is turned clockwise, 180 upside down."""
        dx, dy = self.landmarks[1] - self.landmarks[0]
        return float(np.degrees(np.arctan2(dy, dx)))

    @property
    def landmarks68(self) -> np.ndarray | None:
        """``ndarray[68, 2]`` (x, y pixels) in the iBUG / Multi-PIE order (jaw 0-16 from the subject's right,
        brows 17-26, nose 27-35, eyes 36-47, lips 48-67), read off the fitted mesh's vertices through the
        template's 68-point correspondence (``retinaface.mesh.prior.MULTIPIE68_TO_TEMPLATE``); ``None``
        without a mesh. The jaw points are fixed vertices of the mesh, so on a head turned far they follow
        the jaw bone rather than the visible outline."""
        if self.mesh_vertices is None:
            return None
        from ..mesh.prior import MULTIPIE68_TO_TEMPLATE

        return np.asarray(self.mesh_vertices)[list(MULTIPIE68_TO_TEMPLATE), :2]

    def transformed(self, matrix: np.ndarray, image_size: tuple[int, int] | None) -> Face:
        """This face in another frame: ``matrix`` (``ndarray[2, 3]``, affine, pixels to pixels: a scaling, a
        mirroring, a 90-degree rotation or a mix) maps box, landmarks and mesh points; ``image_size`` is
        ``(width, height)`` of the new frame. A mirroring swaps the left and right landmarks, so that "left
        eye" stays the eye on the image's left. The box becomes the bounds of its mapped corners (exact for
        the maps above); mesh depths scale with the map; ``mesh_state`` (a camera of the old frame) is dropped, and
        so are the ``mesh_coefficients`` (zeros) unless the map only scales."""
        matrix = np.asarray(matrix, np.float64)
        vertices = self.mesh_vertices
        if vertices is not None:
            scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
            vertices = np.concatenate([vertices[:, :2] @ matrix[:, :2].T + matrix[:, 2], vertices[:, 2:] * scale], axis=1).astype(vertices.dtype)
        linear = matrix[:, :2]
        coefficients = self.mesh_coefficients
        if not (np.isclose(linear[0, 1], 0) and np.isclose(linear[1, 0], 0) and np.isclose(linear[0, 0], linear[1, 1]) and linear[0, 0] > 0):
            # the head's camera and pose refer to the old frame's crop; rotated or mirrored they would be wrong
            coefficients = np.zeros_like(np.asarray(coefficients))
        return replace(
            self,
            mesh_coefficients=coefficients,
            box=transform_boxes(self.box, matrix).astype(np.asarray(self.box).dtype),
            landmarks=transform_landmarks(self.landmarks, matrix).astype(np.asarray(self.landmarks).dtype),
            mesh_vertices=vertices, mesh_state=None, image_size=image_size,
        )

    def to_dict(self, *, include_mesh: bool = False, decimals: int = 2) -> dict[str, Any]:
        """JSON-friendly dict: ``{"box": [x1, y1, x2, y2], "score", "landmarks": [[x, y] x 5], "roll",
        "pose": {"yaw", "pitch", "roll"} or null}``, plus ``"pose_reason"`` when the pose is null and
        ``"track_id"`` in videos; with ``include_mesh`` also ``mesh_coefficients`` and, if fitted,
        ``mesh_vertices`` ``[[x, y, depth] x 468]`` (image pixels, the template's vertex order) and
        ``landmarks68`` ``[[x, y] x 68]``."""
        pose, reason = self._pose_and_reason()
        record: dict[str, Any] = {
            "box": round_like_python(self.box, decimals),
            "score": round(float(self.score), 5),
            "landmarks": round_like_python(self.landmarks, decimals),
            "roll": round(self.roll, 1),
            "pose": None if pose is None else pose.to_dict(),
        }
        if pose is None and reason is not None:
            record["pose_reason"] = reason
        if self.track_id is not None:
            record["track_id"] = int(self.track_id)
        if include_mesh:
            record["mesh_coefficients"] = round_like_python(self.mesh_coefficients, 5)
            if self.mesh_vertices is not None:
                record["mesh_vertices"] = round_like_python(self.mesh_vertices, 1)
                record["landmarks68"] = round_like_python(self.landmarks68, decimals)
            record["mesh_residual"] = self.mesh_residual
        return record
