"""Head pose against exact truth: faces of the face-shape prior rendered at known poses, photos turned in-plane.

Two sources of truth that do not come from :mod:`retinaface.faces.pose`:

- **Rendered prior faces.** A face of the ICT-derived prior (:mod:`retinaface.mesh.prior`: the mean face, or
  an identity drawn from its 60 modes) with the template's colours is turned by a rotation built here with
  SciPy in the documented convention (``R = Rz(-roll) Ry(yaw) Rx(-pitch)`` in the head frame: x right, y up,
  z towards the camera), placed on the optical axis of a pinhole camera whose focal length is the image's
  side (the camera :func:`retinaface.faces.pose.camera_matrix` assumes) and rasterised with the mesh
  renderer's z-buffer and Lambertian shading on a plain background. The angles it was turned by are the
  truth; the detector only sees the picture. Zero is the prior's upright frame (the ICT Face Model's own).
- **Photos turned in-plane.** A square window centred on a face of a real photo is rotated about its centre
  (the principal point) by a known angle: that is a turn of the camera about its optical axis, so, for a face
  at the centre, the roll changes by exactly that angle and yaw and pitch do not change.
- **Photo faces re-posed.** The prior's mean face, posed where the detector's pose puts a photo face, takes
  the photo as its texture (each vertex keeps the pixel it projects to); the face's region of the photo is
  inpainted and the textured mesh is drawn again turned about its origin by a known rotation. A real face's
  skin, eyes and mouth, with its hair and background where they were, turned by an exact rotation: the
  truth is relative (the window's own estimate, turned by it), as for the in-plane turns, but in yaw and
  pitch as well.

The errors are per axis (absolute difference of yaw, pitch and roll in degrees) and geodesic (the angle of
the rotation between estimate and truth). ``scripts/bench_pose_truth.py`` reports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:
    from ..faces.pose import HeadPose

AXES = ("yaw", "pitch", "roll")
_MODEL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])  # head frame (y up, z to the camera) <-> OpenCV object frame


def turn(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The head rotation ``ndarray[3, 3]`` (head frame: x right, y up, z towards the camera) of a pose in degrees,
    written with SciPy from the documented convention ``Rz(-roll) Ry(yaw) Rx(-pitch)``."""
    return (Rotation.from_euler("z", -roll, degrees=True) * Rotation.from_euler("y", yaw, degrees=True)
            * Rotation.from_euler("x", -pitch, degrees=True)).as_matrix()


def angles_of(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`turn` with SciPy: ``(yaw, pitch, roll)`` degrees of a head rotation ``ndarray[3, 3]``."""
    # Rz(-roll) Ry(yaw) Rx(-pitch) is the intrinsic z-y-x sequence with angles (-roll, yaw, -pitch)
    minus_roll, yaw, minus_pitch = Rotation.from_matrix(rotation).as_euler("ZYX", degrees=True)
    return np.array([yaw, -minus_pitch, -minus_roll])


@lru_cache(maxsize=1)
def _assets():
    from ..mesh.prior import load_prior
    from ..mesh.template import load_template

    prior, template = load_prior(), load_template()
    return prior, template


def prior_face(identity_seed: int | None = None, *, scale: float = 1.0) -> np.ndarray:
    """Vertices ``ndarray[468, 3]`` (template units, the prior's upright frame) of the prior's mean face
    (``identity_seed`` ``None``) or of a neutral face whose 60 identity weights are drawn ~ N(0, ``scale``)."""
    prior, _ = _assets()
    mean = prior.mean.numpy().astype(np.float64)
    if identity_seed is None:
        return mean
    weights = np.random.default_rng(identity_seed).normal(0.0, scale, prior.num_identity)
    return mean + np.einsum("i,ivc->vc", weights, prior.identity.numpy().astype(np.float64))


@dataclass
class RenderedFace:
    """One rendered face: ``image`` BGR uint8 ``ndarray[S, S, 3]``, the ``truth`` ``(yaw, pitch, roll)``,
    the vertices' pixel positions ``ndarray[468, 2]`` and the camera ``distance`` (template units)."""

    image: np.ndarray
    truth: tuple[float, float, float]
    pixels: np.ndarray
    distance: float


def render_face(
    vertices: np.ndarray, yaw: float, pitch: float, roll: float, *, size: int = 512, face_px: float = 200.0,
    light: Sequence[float] = (0.3, 0.4, 1.0), background: Sequence[float] = (0.45, 0.45, 0.45),
    noise: float = 0.0, seed: int = 0,
) -> RenderedFace:
    """Render ``vertices`` ``ndarray[468, 3]`` (head frame, template units) with the template's colours, turned
    by :func:`turn` ``(yaw, pitch, roll)`` about the frame's origin, which sits on the optical axis of a
    pinhole camera with focal length ``size`` px (principal point at the centre of the ``size`` x ``size``
    image) at the distance where the template's width of 2 units spans ``face_px`` pixels. ``light``: the
    direction of a point light (head frame), ``background`` RGB in [0, 1], ``noise``: Gaussian pixel noise
    (grey levels)."""
    import torch

    from ..mesh.renderer import Lights, interpolate, rasterize_zbuffer, shade_vertices

    _, template = _assets()
    rotation = turn(yaw, pitch, roll)
    focal = float(size)
    distance = focal * 2.0 / face_px
    turned = vertices @ rotation.T
    camera = np.stack([turned[:, 0], -turned[:, 1], distance - turned[:, 2]], axis=1)  # x right, y down, z forward
    pixels = focal * camera[:, :2] / camera[:, 2:] + size / 2.0
    # the renderer's NDC (PyTorch3D: x left, y up) for pixel centres at integer coordinates
    ndc = np.stack([1.0 - (pixels[:, 0] + 0.5) * 2.0 / size, 1.0 - (pixels[:, 1] + 0.5) * 2.0 / size, camera[:, 2]], axis=1)
    faces = template.render_faces
    with torch.no_grad():
        ndc_t = torch.as_tensor(ndc, dtype=torch.float32)[None]
        pix_to_face = rasterize_zbuffer(ndc_t, faces, size)
        direction = np.asarray(light, np.float64) / np.linalg.norm(light)
        lights = Lights(torch.as_tensor(direction * 8.0 * distance / 4.0, dtype=torch.float32)[None] + torch.zeros(1, 3),
                        torch.full((1, 3), 0.6), torch.full((1, 3), 0.5))
        lit = shade_vertices(torch.as_tensor(turned, dtype=torch.float32)[None], faces, template.colours[None], lights)
        image, mask = interpolate(ndc_t, faces, pix_to_face, lit)
    rgb = image[0].permute(1, 2, 0).numpy()
    alpha = mask[0, 0].numpy()[..., None]
    out = rgb * alpha + np.asarray(background, np.float32) * (1 - alpha)
    out = out * 255.0
    if noise > 0:
        out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape)
    bgr = np.ascontiguousarray(out[..., ::-1].clip(0, 255).astype(np.uint8))
    return RenderedFace(bgr, (float(yaw), float(pitch), float(roll)), pixels, distance)


@dataclass
class PoseRow:
    """One face scored: its ``truth`` and ``estimate`` ``(yaw, pitch, roll)`` (``None``: not detected or no
    pose), ``size`` (the rendered template width or the face's box, px), a free ``label`` and, for re-posed
    photo faces, the ``turn`` ``(yaw, pitch, roll)`` they were re-posed by."""

    label: str
    truth: tuple[float, float, float]
    estimate: tuple[float, float, float] | None
    size: float
    turn: tuple[float, float, float] | None = None

    @property
    def errors(self) -> np.ndarray | None:
        """``|estimate - truth|`` per axis, ``ndarray[3]`` degrees (``None`` without an estimate)."""
        return None if self.estimate is None else np.abs(np.subtract(self.estimate, self.truth))

    @property
    def geodesic(self) -> float | None:
        """Angle (degrees) of the rotation between the estimated and the true head rotation."""
        if self.estimate is None:
            return None
        relative = Rotation.from_matrix(turn(*self.estimate)).inv() * Rotation.from_matrix(turn(*self.truth))
        return float(np.degrees(relative.magnitude()))


def summarize(rows: Sequence[PoseRow]) -> dict[str, float | int | None]:
    """Median and mean absolute error per axis, median geodesic error, and the faces scored / without a pose."""
    scored = [r for r in rows if r.estimate is not None]
    out: dict[str, float | int | None] = {"faces": len(rows), "scored": len(scored)}
    errors = np.array([r.errors for r in scored]).reshape(-1, 3)
    signed = np.array([np.subtract(r.estimate, r.truth) for r in scored]).reshape(-1, 3)
    for k, axis in enumerate(AXES):
        out[f"median_{axis}"] = float(np.median(errors[:, k])) if len(scored) else None
        out[f"mean_{axis}"] = float(errors[:, k].mean()) if len(scored) else None
        out[f"bias_{axis}"] = float(np.median(signed[:, k])) if len(scored) else None
    out["median_geodesic"] = float(np.median([r.geodesic for r in scored])) if scored else None
    return out


def pose_grid(yaws: Iterable[float] = (0, 15, 30, 45, 60), pitches: Iterable[float] = (-30, -15, 0, 15, 30),
              rolls: Iterable[float] = (-30, 0, 30)) -> list[tuple[float, float, float]]:
    """Every ``(yaw, pitch, roll)`` combination of the given angles."""
    return [(float(y), float(p), float(r)) for y in yaws for p in pitches for r in rolls]


def best_face(faces, centre: np.ndarray):
    """The detected face whose box centre is nearest ``centre`` ``ndarray[2]`` and contains it, or ``None``."""
    best, distance = None, math.inf
    for face in faces:
        box = np.asarray(face.box, np.float64)
        if not (box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]):
            continue
        d = float(np.linalg.norm((box[:2] + box[2:]) / 2 - centre))
        if d < distance:
            best, distance = face, d
    return best


def rendered_rows(
    detect: Callable[[np.ndarray], list], poses: Sequence[tuple[float, float, float]], *,
    identities: Sequence[int | None] = (None,), sizes: Sequence[float] = (200.0,), image_size: int = 512,
    lights: Sequence[Sequence[float]] = ((0.3, 0.4, 1.0),), noise: float = 2.0,
    on_face: Callable[[RenderedFace, object], None] | None = None,
) -> list[PoseRow]:
    """Render every pose for every identity (``None``: the mean face; an int: :func:`prior_face`'s seed), face
    size and light (cycled over the poses), run ``detect`` (image BGR -> faces with ``.pose``) and score the
    face found at the image centre. ``on_face(rendered, face)`` sees every render and its face (or ``None``)."""
    rows = []
    for identity in identities:
        vertices = prior_face(identity)
        for size in sizes:
            for index, (yaw, pitch, roll) in enumerate(poses):
                light = lights[index % len(lights)]
                rendered = render_face(vertices, yaw, pitch, roll, size=image_size, face_px=size, light=light,
                                       noise=noise, seed=index)
                face = central_face(detect, rendered.image)
                if on_face is not None:
                    on_face(rendered, face)
                pose = None if face is None else face.pose
                estimate = None if pose is None else (pose.yaw, pose.pitch, pose.roll)
                label = f"{'mean' if identity is None else f'id{identity}'} {size:g}px"
                rows.append(PoseRow(label, (yaw, pitch, roll), estimate, float(size)))
    return rows


def turned_window(image: np.ndarray, centre: Sequence[float], side: int, degrees: float) -> np.ndarray:
    """The ``side`` x ``side`` window of ``image`` centred on ``centre`` (x, y), turned clockwise on screen by
    ``degrees`` about its centre (border pixels replicated), as a new image."""
    # OpenCV's positive angle is counter-clockwise on screen; the window's centre maps to (side/2, side/2)
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -float(degrees), 1.0)
    matrix[:, 2] += np.array([side / 2.0, side / 2.0]) - np.asarray(centre, np.float64)
    return cv2.warpAffine(image, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def face_window(image: np.ndarray, box: np.ndarray, *, context: float = 3.0, degrees: float = 0.0) -> np.ndarray:
    """The square window ``context`` times ``box``'s (``ndarray[4]``, x1 y1 x2 y2) longer side centred on the
    box, turned clockwise by ``degrees`` (:func:`turned_window`): the face at the principal point."""
    box = np.asarray(box, np.float64)
    side = int(round(context * max(box[2] - box[0], box[3] - box[1])))
    return turned_window(image, (box[:2] + box[2:]) / 2, side, degrees)


def central_face(detect: Callable[[np.ndarray], list], window: np.ndarray):
    """The face ``detect`` finds at the centre of ``window`` (:func:`best_face`), or ``None``."""
    return best_face(detect(window), np.array([window.shape[1] / 2.0, window.shape[0] / 2.0]))


def photo_roll_rows(
    detect: Callable[[np.ndarray], list], image: np.ndarray, boxes: np.ndarray, angles: Sequence[float], *,
    name: str = "photo", context: float = 3.0,
) -> list[PoseRow]:
    """Each face (``boxes`` ``ndarray[N, 4]``) of ``image`` in a square window ``context`` times its box centred
    on it, upright and turned clockwise by each of ``angles``: the truth of a turned window is the upright
    window's pose with ``roll`` + angle (yaw and pitch unchanged; exact for a face at the window's centre,
    which is the principal point). Faces without a pose in the upright window are skipped."""
    rows = []
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        upright = central_face(detect, face_window(image, box, context=context))
        if upright is None or upright.pose is None:
            continue
        base = np.array([upright.pose.yaw, upright.pose.pitch, upright.pose.roll])
        size = float(max(box[2] - box[0], box[3] - box[1]))
        for angle in angles:
            face = central_face(detect, face_window(image, box, context=context, degrees=angle))
            pose = None if face is None else face.pose
            estimate = None if pose is None else (pose.yaw, pose.pitch, pose.roll)
            rows.append(PoseRow(f"{name} {angle:+g}deg", (base[0], base[1], base[2] + angle), estimate, size))
    return rows


def repose_photo_face(window: np.ndarray, pose: HeadPose, rotation: np.ndarray) -> np.ndarray:
    """``window`` (BGR ``ndarray[S, S, 3]``, the face near its centre) with the face turned by ``rotation``
    ``ndarray[3, 3]`` (head frame, as :func:`turn` builds them) about the head model's origin: the prior's mean
    face placed by ``pose`` (:class:`~retinaface.faces.pose.HeadPose` estimated in this window, so its camera
    is the window's) carries the window as texture, the face's region is inpainted, and the textured mesh is
    drawn at its turned pose over it (edges softened by 0.7 px). A new image; the window is not changed."""
    import torch

    from ..faces.pose import head_model_vertices
    from ..mesh.renderer import interpolate, rasterize_zbuffer

    _, template = _assets()
    side = window.shape[0]
    flip = _MODEL_TO_OPENCV
    obj = head_model_vertices() @ flip
    focal, centre = pose.camera[0, 0], pose.camera[:2, 2]

    def pixels_and_depth(object_to_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        camera = obj @ object_to_camera.T + pose.translation
        return focal * camera[:, :2] / camera[:, 2:] + centre, camera[:, 2]

    texture_xy, _ = pixels_and_depth(pose.rotation)
    turned_xy, depth = pixels_and_depth(pose.rotation @ flip @ rotation @ flip)
    # the renderer's NDC (PyTorch3D: x left, y up) for pixel centres at integer coordinates
    ndc = np.stack([1.0 - (turned_xy[:, 0] + 0.5) * 2.0 / side, 1.0 - (turned_xy[:, 1] + 0.5) * 2.0 / side, depth], axis=1)
    with torch.no_grad():
        ndc_t = torch.as_tensor(ndc, dtype=torch.float32)[None]
        pix_to_face = rasterize_zbuffer(ndc_t, template.render_faces, side)
        uv, mask = interpolate(ndc_t, template.render_faces, pix_to_face, torch.as_tensor(texture_xy, dtype=torch.float32)[None])
    uv = np.ascontiguousarray(uv[0].permute(1, 2, 0).numpy())
    region = np.zeros((side, side), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(texture_xy.astype(np.float32)).astype(np.int32), 255)
    background = cv2.inpaint(window, cv2.dilate(region, np.ones((5, 5), np.uint8)), 5, cv2.INPAINT_TELEA)
    painted = cv2.remap(window, uv[..., 0], uv[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.GaussianBlur(mask[0, 0].numpy(), (0, 0), 0.7)[..., None]
    return (painted * alpha + background * (1.0 - alpha)).round().clip(0, 255).astype(np.uint8)


class Drawing(NamedTuple):
    """One re-posed photo face as drawn: ``face`` (which face of the photo: its index), the ``turn`` ``(yaw,
    pitch, roll)`` (``None``: the face drawn unturned), the ``image`` (BGR), the painted face's ``box``
    ``ndarray[4]`` and the turn in the camera's frame, ``about_camera`` ``ndarray[3, 3]`` (OpenCV)."""

    face: int
    turn: tuple[float, float, float] | None
    image: np.ndarray
    box: np.ndarray
    about_camera: np.ndarray


def reposed_rows(
    detect: Callable[[np.ndarray], list], image: np.ndarray, boxes: np.ndarray, turns: Sequence[tuple[float, float, float]],
    *, name: str = "photo", context: float = 3.0, on_drawing: Callable[[Drawing], None] | None = None,
) -> list[PoseRow]:
    """Each face (``boxes`` ``ndarray[N, 4]``) of ``image`` in a square window ``context`` times its box centred
    on it, re-posed by each ``(yaw, pitch, roll)`` of ``turns`` (:func:`turn`, degrees) with
    :func:`repose_photo_face` from the pose ``detect`` finds in the window. The truth of a re-posed face is the
    pose ``detect`` finds on the face re-posed by no turn (the same drawing, so both see the same
    inpainting and edges), turned by the known rotation. Faces without a pose are skipped. ``on_drawing`` sees
    every :class:`Drawing`, each face's unturned one first, e.g. for another judge (:func:`judge_drawings`)."""
    from ..faces.pose import euler_from_rotation, line_of_sight

    flip = _MODEL_TO_OPENCV
    rows = []
    for index, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        size = float(max(box[2] - box[0], box[3] - box[1]))
        window = face_window(image, box, context=context)
        painter = central_face(detect, window)
        if painter is None or painter.pose is None:
            continue
        unturned = repose_photo_face(window, painter.pose, np.eye(3))
        base = central_face(detect, unturned)
        if base is None or base.pose is None:
            continue
        if on_drawing is not None:
            on_drawing(Drawing(index, None, unturned, np.asarray(painter.box, np.float64), np.eye(3)))
        sight = line_of_sight(base.pose.translation)
        for yaw, pitch, roll in turns:
            # the turn about the painted mesh, in the camera's frame, applied to the base estimate
            about_camera = painter.pose.rotation @ flip @ turn(yaw, pitch, roll) @ flip @ painter.pose.rotation.T
            truth = euler_from_rotation(sight.T @ about_camera @ base.pose.rotation)
            label = f"{name} #{index} turned {yaw:+g}/{pitch:+g}/{roll:+g}"
            drawn = repose_photo_face(window, painter.pose, turn(yaw, pitch, roll))
            face = central_face(detect, drawn)
            if on_drawing is not None:
                on_drawing(Drawing(index, (yaw, pitch, roll), drawn, np.asarray(painter.box, np.float64), about_camera))
            pose = None if face is None else face.pose
            estimate = None if pose is None else (pose.yaw, pose.pitch, pose.roll)
            rows.append(PoseRow(label, tuple(float(a) for a in truth), estimate, size, (float(yaw), float(pitch), float(roll))))
    return rows


def judge_drawings(drawings: Sequence[Drawing], *, python: str | Path, folder: Path, cache: Path | None = None) -> list[PoseRow]:
    """mediapipe FaceMesh's pose (the accuracy benchmark's judge, run by ``python``, a throwaway environment;
    :func:`~retinaface.evaluation.mesh_accuracy.mediapipe_references`) on re-posed faces, scored as
    :func:`reposed_rows` scores ours: the truth of each turned drawing is mediapipe's pose on the same face's
    unturned drawing, turned by the known turn. The drawings are written to ``folder`` as PNG files for it."""
    from ..faces.pose import euler_from_rotation, head_model_vertices
    from .mesh_accuracy import mediapipe_references, reference_rotation

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, drawing in enumerate(drawings):
        paths.append(folder / f"drawing_{index:05d}.png")
        cv2.imwrite(str(paths[-1]), drawing.image)
    references = mediapipe_references([(path, d.box[None]) for path, d in zip(paths, drawings)], python=python, cache=cache)
    head = head_model_vertices()
    rows, base = [], None
    for drawing, (points,) in zip(drawings, references):
        rotation = None if points is None else reference_rotation(points, head)
        if drawing.turn is None:
            base = rotation
            continue
        if base is None:
            continue
        estimate = None if rotation is None else tuple(float(a) for a in euler_from_rotation(rotation))
        truth = tuple(float(a) for a in euler_from_rotation(drawing.about_camera @ base))
        size = float(max(drawing.box[2] - drawing.box[0], drawing.box[3] - drawing.box[1]))
        rows.append(PoseRow(f"face {drawing.face} turned {'/'.join(f'{a:+g}' for a in drawing.turn)}", truth, estimate, size, drawing.turn))
    return rows


__all__ = ["AXES", "Drawing", "PoseRow", "RenderedFace", "angles_of", "best_face", "central_face", "face_window", "photo_roll_rows", "pose_grid",
           "prior_face", "render_face", "rendered_rows", "judge_drawings", "repose_photo_face", "reposed_rows", "summarize", "turn",
           "turned_window"]
