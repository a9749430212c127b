"""Head pose (yaw, pitch, roll) from the detector's five landmarks, by PnP against the face template.

Only NumPy and OpenCV: the template's five landmark points are read straight from its ``.npz`` asset, so
pose needs neither PyTorch3D nor torch-geometric and runs for every face, with or without ``--mesh``.

Conventions (degrees; the subject's head as seen in the image):

- ``yaw > 0``: the face turns towards the image's right (its nose points to the right of the picture,
  i.e. the subject turns to their own left);
- ``pitch > 0``: the face looks up (nose towards the top of the picture);
- ``roll > 0``: the face is rotated clockwise in the picture (the image-right eye is lower than the
  image-left eye).

The head rotation in the template's model frame (x right, y up, z towards the camera) is
``R = Rz(-roll) @ Ry(yaw) @ Rx(-pitch)``: pitch is applied first, then yaw, then roll about the line of
sight. The angles are relative to the line of sight to the face: a face looking straight at the camera is
(0, 0, 0) wherever it is in the picture. PnP solves in the camera's frame (a pinhole with focal length
``max(W, H)`` pixels, about 53 degrees across the long side, principal point at the image centre); the
smallest rotation that turns the optical axis onto the ray to the face is then taken out. The focal length
matters little because faces are small compared with their distance. Five points admit a mirror solution
(the face tilted the other way, facing away); only solutions facing the camera are kept. "Frontal" is the
upright frame of the face-shape prior (the ICT Face Model's own, :func:`head_model_vertices`), whose
landmark vertices (:func:`template_landmarks`) PnP solves against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..utils.resources import package_path

MIN_FACE_SIZE = 20.0
"""Faces whose box is smaller than this (pixels, longer side) get no pose: five landmarks a few pixels
apart do not constrain a rotation."""
MAX_REPROJECTION_ERROR = 0.12
"""Largest mean landmark reprojection error, as a fraction of the box size, for a pose to be trusted."""

# Model frame (x right, y up, z towards the camera) -> OpenCV object frame (x right, y down, z away from
# the camera), so that a frontal face has the identity rotation in OpenCV's convention.
_FLIP = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class HeadPose:
    """One face's head pose.

    - ``yaw``, ``pitch``, ``roll``: degrees (conventions in the module docstring)
    - ``rotation``: ``ndarray[3, 3]`` OpenCV camera-from-object rotation (object frame = template model
      frame with y and z flipped), ``translation``: ``ndarray[3]`` in template units (the template's
      x-y extent is [-1, 1]) — together what ``cv2.projectPoints`` needs with ``camera``; the angles describe
      :attr:`relative_rotation`, this rotation with the line of sight to the face taken out
    - ``camera``: ``ndarray[3, 3]`` the intrinsics PnP used (:func:`camera_matrix`)
    - ``reprojection_error``: mean landmark reprojection error as a fraction of the box size
    """

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    translation: np.ndarray
    camera: np.ndarray
    reprojection_error: float

    @property
    def relative_rotation(self) -> np.ndarray:
        """``ndarray[3, 3]``: :attr:`rotation` with the line of sight taken out (what the angles describe)."""
        return line_of_sight(self.translation).T @ self.rotation

    def to_dict(self, decimals: int = 1) -> dict[str, float]:
        """``{"yaw", "pitch", "roll"}`` in degrees."""
        return {"yaw": round(self.yaw, decimals), "pitch": round(self.pitch, decimals), "roll": round(self.roll, decimals)}


@lru_cache(maxsize=1)
def head_model_vertices() -> np.ndarray:
    """The head that defines pose zero, ``ndarray[468, 3]`` (template vertex order and model frame): the
    upright mean face of the face-shape prior. The template itself is one person's head, pitched about
    14 degrees; as the pose model it made frontal faces read as looking up."""
    with np.load(package_path("retinaface.mesh", "assets/face_prior.npz")) as data:
        return data["mean"].astype(np.float64)


@lru_cache(maxsize=1)
def template_landmarks() -> np.ndarray:
    """The head model's five landmarks in its model frame, ``ndarray[5, 3]`` (detector order), through the
    template's landmark weights."""
    with np.load(package_path("retinaface.mesh", "assets/face_template.npz")) as data:
        return data["landmark_weights"].astype(np.float64) @ head_model_vertices()


def camera_matrix(width: int, height: int, centre: tuple[float, float] | None = None) -> np.ndarray:
    """Assumed pinhole intrinsics ``ndarray[3, 3]`` for a ``width`` x ``height`` image, with the principal
    point at ``centre`` (x, y pixels; default: the image centre)."""
    focal = float(max(width, height))
    cx, cy = (width / 2.0, height / 2.0) if centre is None else centre
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def line_of_sight(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation ``ndarray[3, 3]`` turning the optical axis (0, 0, 1) onto ``direction`` ``ndarray[3]``
    (camera frame): how a camera would turn to look straight at a point in that direction."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    axis = np.cross([0.0, 0.0, 1.0], d)
    sine = np.linalg.norm(axis)
    if sine < 1e-12:
        return np.eye(3)
    return cv2.Rodrigues(axis / sine * math.atan2(sine, d[2]))[0]


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """``(yaw, pitch, roll)`` degrees ``ndarray[..., 3]`` of OpenCV object-to-camera rotations ``ndarray[..., 3, 3]``."""
    model = _FLIP @ rotation @ _FLIP  # the same rotation expressed in the model frame
    yaw = np.arcsin(np.clip(-model[..., 2, 0], -1.0, 1.0))
    roll = -np.arctan2(model[..., 1, 0], model[..., 0, 0])
    pitch = -np.arctan2(model[..., 2, 1], model[..., 2, 2])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """OpenCV object-to-camera rotation ``ndarray[3, 3]`` for a head pose in degrees (inverse of
    :func:`euler_from_rotation`)."""
    y, p, r = np.radians([yaw, pitch, roll])

    def axis(k: int, angle: float) -> np.ndarray:
        return cv2.Rodrigues(np.eye(3)[k] * angle)[0]

    model = axis(2, -r) @ axis(1, y) @ axis(0, -p)
    return _FLIP @ model @ _FLIP


def _degenerate(points: np.ndarray) -> str | None:
    if not np.isfinite(points).all():
        return "non-finite landmarks"
    centred = points - points.mean(axis=0)
    spread = np.linalg.svd(centred, compute_uv=False)
    if spread[0] <= 1e-6 or spread[1] / spread[0] < 0.05:
        return "landmarks (nearly) collinear"
    return None


_GOOD_FIT = 0.06  # reprojection error (fraction of the box) below which SQPnP's answer is not second-guessed
_LM_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-10)


def _refine(obj, points, K, rvec, tvec, size) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Levenberg-Marquardt from ``(rvec, tvec)``; ``(error, rotation, tvec)`` or ``None`` if the result is not
    finite, behind the camera or facing away from it."""
    rvec, tvec = cv2.solvePnPRefineLM(obj, points, K, None, rvec.copy(), tvec.copy(), criteria=_LM_CRITERIA)
    if not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2, 0] <= 0:
        return None
    rotation = cv2.Rodrigues(rvec)[0]
    if (line_of_sight(tvec[:, 0]).T @ rotation)[2, 2] <= 0:  # the face points away from the camera
        return None
    projected, _ = cv2.projectPoints(obj, rvec, tvec, K, None)
    error = float(np.linalg.norm(projected[:, 0] - points, axis=1).mean() / size)
    return (error, rotation, tvec) if math.isfinite(error) else None


def estimate_pose(landmarks: np.ndarray, box: np.ndarray, width: int, height: int) -> tuple[HeadPose | None, str | None]:
    """Head pose of one face from its ``landmarks`` ``ndarray[5, 2]`` (pixels, detector order) and ``box``
    ``ndarray[4]`` (x1 y1 x2 y2) in a ``width`` x ``height`` image.

    Returns ``(pose, None)``, or ``(None, reason)`` for faces too small, with non-finite or collinear
    landmarks, cut off by the image border (a landmark outside the image: it is a guess), where PnP fails, or whose landmarks the rigid template cannot explain (mean reprojection
    error above :data:`MAX_REPROJECTION_ERROR` of the box size).
    """
    box = np.asarray(box, dtype=np.float64)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(box).all():
        return None, "non-finite box"
    size = max(box[2] - box[0], box[3] - box[1])
    if size < MIN_FACE_SIZE:
        return None, f"face smaller than {MIN_FACE_SIZE:g} px"
    if (reason := _degenerate(points)) is not None:
        return None, reason
    if (points < 0).any() or (points[:, 0] > width).any() or (points[:, 1] > height).any():
        return None, "face cut off by the image border (landmarks outside the image)"
    obj = template_landmarks() @ _FLIP
    K = camera_matrix(width, height)
    # SQPnP (a global solver valid from 3 points), polished by Levenberg-Marquardt on the reprojection
    # error. Five points admit a mirror solution; when SQPnP's faces away from the camera or fits poorly, a
    # second start from a frontal face at the box's distance (template width 2 -> box width) is tried and
    # the better solution facing the camera wins.
    best = None
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, points, K, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:  # SQPnP refuses points spread over a tiny part of the view (a small face in a large photo)
        ok = False
    if ok and np.isfinite(rvec).all() and np.isfinite(tvec).all():
        best = _refine(obj, points, K, rvec, tvec, size)
    if best is None or best[0] > _GOOD_FIT:
        distance = K[0, 0] * 2.0 / max(box[2] - box[0], 1.0)
        centre = ((box[0] + box[2]) / 2 - K[0, 2]) / K[0, 0], ((box[1] + box[3]) / 2 - K[1, 2]) / K[1, 1]
        frontal = cv2.Rodrigues(line_of_sight(np.array([centre[0], centre[1], 1.0])))[0]
        other = _refine(obj, points, K, frontal, np.array([[centre[0]], [centre[1]], [1.0]]) * distance, size)
        if other is not None and (best is None or other[0] < best[0]):
            best = other
    if best is None:
        return None, "PnP found no pose facing the camera"
    error, rotation, tvec = best
    if error > MAX_REPROJECTION_ERROR:
        return None, f"landmarks do not fit a rigid face (reprojection error {error:.2f} of the face size)"
    pose = HeadPose(0.0, 0.0, 0.0, rotation, tvec[:, 0].copy(), K, error)
    yaw, pitch, roll = (float(a) for a in euler_from_rotation(pose.relative_rotation))
    return HeadPose(yaw, pitch, roll, rotation, tvec[:, 0].copy(), K, error), None


def estimate_poses(
    landmarks: np.ndarray, boxes: np.ndarray, width: int, height: int
) -> tuple[list[HeadPose | None], list[str | None]]:
    """:func:`estimate_pose` for all faces of one image: ``landmarks`` ``ndarray[N, 5, 2]``, ``boxes``
    ``ndarray[N, 4]``. Returns the poses and, for the faces without one, the reasons (else ``None``)."""
    results = [estimate_pose(lm, box, width, height) for lm, box in zip(landmarks, boxes)]
    return [pose for pose, _ in results], [reason for _, reason in results]


def pose_axes(pose: HeadPose, *, length: float = 0.8) -> np.ndarray:
    """Image points ``ndarray[4, 2]`` of the head's frame for drawing: the template's nose tip, then the tips
    of its x (right), y (up) and z (out of the face) axes, each ``length`` template units long."""
    nose = template_landmarks()[2]
    points = np.vstack([nose, nose + length * np.eye(3)]) @ _FLIP
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(pose.rotation)[0], pose.translation, pose.camera, None)
    return projected[:, 0]
