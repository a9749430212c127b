"""Accuracy of our face meshes and head poses against an independent reference (mediapipe FaceMesh).

mediapipe is the judge only: it runs in a throwaway environment through ``scripts/mediapipe_reference.py``
(a subprocess; never imported here), and nothing it produces may become training data, fitting targets or
part of the product. Its 468 points come in the same vertex order as our template.

Measures, per face:

- NME: mean 2-D distance between our 468 vertices and the reference's, divided by ``sqrt(box area)``
  (the detector's box);
- NME of two vertex groups, with the same normaliser: the jaw and chin (the mesh's contour vertices of the
  Multi-PIE jaw points 0-16) and the lips (Multi-PIE 48-67), through the 68-point correspondence
  (:data:`retinaface.mesh.prior.MULTIPIE68_TO_TEMPLATE`, published anatomy of mediapipe's topology);
- head-pose error: our five-landmark PnP pose (:mod:`retinaface.pose`) against the pose of the reference
  points, found by a similarity Procrustes fit (Umeyama) of the template's 468 vertices to the reference
  points in 3-D (mediapipe's points are close to an orthographic view of the face, so this is the head's
  rotation relative to the line of sight, the same convention as our PnP pose). Reported as the angle of
  the relative rotation (geodesic) and as the mean absolute yaw / pitch / roll difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..faces.pose import _FLIP, HeadPose, euler_from_rotation
from ..outputs.atomic import atomic_write
from ..utils.rotations import rotation_error_degrees

REFERENCE_CONTEXT = 1.8
"""Side of the square crop given to mediapipe, in units of the box's longer side."""
REFERENCE_CROP = 256
"""Pixels of that crop (mediapipe's face mesh works best around 192-256 px)."""
MEDIAPIPE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mediapipe_reference.py"  # in a checkout
"""The worker run in mediapipe's environment (in the source checkout; not part of the wheel)."""


def nme(vertices: np.ndarray, reference: np.ndarray, box: np.ndarray) -> float:
    """Mean 2-D distance between ``vertices`` and ``reference`` ``ndarray[V, >=2]`` (pixels) over
    ``sqrt`` of the area of ``box`` ``ndarray[4]`` (x1 y1 x2 y2)."""
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    return float(np.linalg.norm(vertices[:, :2] - reference[:, :2], axis=1).mean() / np.sqrt(area))


def vertex_groups() -> dict[str, list[int]]:
    """Template vertices of the groups reported apart: ``"jaw"`` (the jaw and chin contour, Multi-PIE points
    0-16) and ``"lips"`` (Multi-PIE 48-67, outer and inner lip contour)."""
    from ..mesh.prior import MULTIPIE68_TO_TEMPLATE

    return {"jaw": list(MULTIPIE68_TO_TEMPLATE[0:17]), "lips": list(MULTIPIE68_TO_TEMPLATE[48:68])}


TURNED_YAW = 30.0
TURNED_ROLL = 15.0
"""A face is a turned head when the reference's |yaw| exceeds :data:`TURNED_YAW` or its |roll| :data:`TURNED_ROLL` degrees."""


def is_turned(reference_pose: Sequence[float]) -> bool:
    """Whether a reference pose ``(yaw, pitch, roll)`` (degrees) is a turned head (:data:`TURNED_YAW`, :data:`TURNED_ROLL`)."""
    return abs(reference_pose[0]) > TURNED_YAW or abs(reference_pose[2]) > TURNED_ROLL


def write_turned_photos(paths: Sequence[Path], angles: Sequence[float], folder: Path) -> list[Path]:
    """Copies of each photo turned clockwise on screen by each of ``angles`` (degrees) about its centre, on a
    canvas grown to hold the whole photo (borders replicated), written losslessly as PNG into ``folder``:
    the faces' roll grows by the angle. Returns the written paths (photo-major)."""
    import cv2

    from ..media.images import read_image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        image = read_image(path)
        height, width = image.shape[:2]
        for angle in angles:
            matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), -float(angle), 1.0)
            cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
            size = (int(np.ceil(width * cos + height * sin)), int(np.ceil(width * sin + height * cos)))
            matrix[:, 2] += np.array(size) / 2.0 - np.array([width / 2.0, height / 2.0])
            turned = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            target = folder / f"{Path(path).stem}_turned{angle:+g}.png"
            cv2.imwrite(str(target), turned)
            written.append(target)
    return written


def write_reposed_photos(
    detect, paths: Sequence[Path], yaws: Sequence[float], folder: Path, *, min_size: float = 60.0, context: float = 3.0,
) -> list[Path]:
    """Turned heads built from real photos: each face of at least ``min_size`` px (box's longer side) that
    ``detect`` (image BGR -> faces with ``.pose``) finds in each photo, in a square window ``context`` times its
    box, drawn again turned by each of ``yaws`` (degrees; :func:`~retinaface.evaluation.pose_truth.repose_photo_face`:
    the prior's mean face posed by ``detect``'s pose carries the photo, hair and background stay), written
    losslessly as PNG into ``folder`` as ``<photo>_reposed<face>_yaw<yaw>.png``. Returns the written paths."""
    import cv2

    from ..media.images import read_image
    from .pose_truth import central_face, face_window, repose_photo_face, turn

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        image = read_image(path)
        boxes = [f.box for f in detect(image) if max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
        for index, box in enumerate(boxes):
            window = face_window(image, box, context=context)
            painter = central_face(detect, window)
            if painter is None or painter.pose is None:
                continue
            for yaw in yaws:
                target = folder / f"{Path(path).stem}_reposed{index}_yaw{yaw:+g}.png"
                cv2.imwrite(str(target), repose_photo_face(window, painter.pose, turn(float(yaw), 0.0, 0.0)))
                written.append(target)
    return written


def similarity_procrustes(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``target ~ scale * R @ source + t`` (Umeyama 1991) for ``ndarray[V, 3]`` point sets;
    returns ``(scale, R ndarray[3, 3] (a proper rotation), t ndarray[3])``."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s / len(source))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / s.var(axis=0).sum())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def reference_rotation(points: np.ndarray, template_vertices: np.ndarray) -> np.ndarray:
    """OpenCV-convention head rotation ``ndarray[3, 3]`` (as :class:`~retinaface.pose.HeadPose.rotation`) of
    reference points ``ndarray[468, 3]`` (x, y image pixels, z depth towards the scene, mediapipe's sign),
    from a similarity fit of the template (model frame: x right, y up, z towards the camera)."""
    model_frame = points * np.array([1.0, -1.0, -1.0])
    _, rotation, _ = similarity_procrustes(template_vertices.astype(np.float64), model_frame)
    return _FLIP @ rotation @ _FLIP


@dataclass
class PoseError:
    """Our pose against the reference: ``angle`` (geodesic, degrees), ``mean_abs`` (mean |difference| of
    yaw, pitch, roll) and the reference's ``(yaw, pitch, roll)``."""

    angle: float
    mean_abs: float
    reference: tuple[float, float, float]


def pose_error(pose: HeadPose, reference_points: np.ndarray, template_vertices: np.ndarray) -> PoseError:
    """:class:`PoseError` of ``pose`` against the pose of ``reference_points`` ``ndarray[468, 3]``."""
    ref = reference_rotation(reference_points, template_vertices)
    ref_angles = euler_from_rotation(ref)
    ours = np.array([pose.yaw, pose.pitch, pose.roll])
    return PoseError(float(rotation_error_degrees(pose.relative_rotation, ref)), float(np.abs(ours - ref_angles).mean()),
                     tuple(float(a) for a in ref_angles))


def _image_key(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _box_key(image_key: str, box: Sequence[float]) -> str:
    return f"{image_key}|{REFERENCE_CONTEXT}|{REFERENCE_CROP}|" + ",".join(f"{v:.1f}" for v in box)


def mediapipe_references(
    requests: Sequence[tuple[Path, np.ndarray]], *, python: str | os.PathLike, cache: Path | None = None,
) -> list[list[np.ndarray | None]]:
    """Reference points ``ndarray[468, 3]`` (image pixels; ``None`` where mediapipe found no face) for each
    ``(image path, boxes ndarray[N, 4])``, computed by ``scripts/mediapipe_reference.py`` under the
    interpreter ``python`` (a throwaway environment with mediapipe) and cached in ``cache`` (JSON keyed by
    image content, crop settings and box), so reruns with the same detections do not start mediapipe."""
    store: dict[str, list | None] = {}
    if cache is not None and cache.is_file():
        store = json.loads(cache.read_text())
    keys = []
    missing = []
    for path, boxes in requests:
        image_key = _image_key(path)
        keys.append([_box_key(image_key, box) for box in boxes])
        todo = [box for box, key in zip(boxes, keys[-1]) if key not in store]
        if todo:
            missing.append((path, todo, [k for k in keys[-1] if k not in store]))
    if missing:
        if not Path(python).is_file():
            raise FileNotFoundError(
                f"mediapipe interpreter {python} not found; create the throwaway environment with: python3 -m venv "
                "/tmp/mpenv && /tmp/mpenv/bin/pip install mediapipe==0.10.14 'numpy<2' opencv-python-headless"
            )
        with tempfile.TemporaryDirectory() as tmp:
            request = {"context": REFERENCE_CONTEXT, "crop_size": REFERENCE_CROP, "images": [
                {"path": str(Path(p).resolve()), "boxes": [[float(v) for v in b] for b in todo]} for p, todo, _ in missing
            ]}
            (Path(tmp) / "request.json").write_text(json.dumps(request))
            done = subprocess.run([str(python), str(MEDIAPIPE_SCRIPT), f"{tmp}/request.json", f"{tmp}/answer.json"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"mediapipe reference failed: {done.stderr.strip().splitlines()[-1:]}")
            answer = json.loads((Path(tmp) / "answer.json").read_text())
        for (_, _, todo_keys), item in zip(missing, answer["images"]):
            store.update(zip(todo_keys, item["points"]))
        if cache is not None:
            text = json.dumps(store)
            atomic_write(cache, lambda tmp: Path(tmp).write_text(text))
    return [[None if store[k] is None else np.asarray(store[k], dtype=np.float64) for k in image_keys] for image_keys in keys]


@dataclass
class FaceAccuracy:
    """One face of the benchmark (``None`` fields: not measurable, e.g. no pose)."""

    image: str
    box: list[float]
    size: float
    nme_template: float
    nme_mesh: float
    pose: tuple[float, float, float] | None
    reference_pose: tuple[float, float, float]
    pose_angle_error: float | None
    pose_mean_abs_error: float | None
    nme_jaw: float | None = None
    nme_lips: float | None = None
    mesh_pose_angle_error: float | None = None
    """geodesic angle (degrees) between our mesh's rotation and the reference's, both measured the same way
    (:func:`reference_rotation` of the vertices): the pose the mesh itself shows, not the landmarks' PnP pose"""
    nme_oracle: float | None = None
    """the prior's mean face placed by the best 3-D similarity onto the reference itself (:func:`oracle_placement`):
    what no placement of the mean shape can beat"""
    nme_oracle_jaw: float | None = None


def oracle_placement(shape: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``shape`` ``ndarray[468, 3]`` (model frame: x right, y up, z towards the camera) placed by the least-squares
    3-D similarity onto ``reference`` ``ndarray[468, 3]`` (x, y image pixels, z depth away from the camera, as
    :func:`mediapipe_references` gives): ``ndarray[468, 3]`` in the reference's frame. Placement by the answer
    itself, for analysis: the error left is the shape's, not the placement's."""
    flip = np.array([1.0, -1.0, -1.0])
    scale, rotation, shift = similarity_procrustes(np.asarray(shape, np.float64), np.asarray(reference, np.float64) * flip)
    return (scale * np.asarray(shape, np.float64) @ rotation.T + shift) * flip


def template_vertices_in_boxes(boxes: np.ndarray) -> np.ndarray:
    """The baseline: the template placed in each box by the mesh path's camera with zero coefficients (what
    every face got before fitting), ``ndarray[N, 468, 3]`` (x, y pixels; depth). Built on an untrained
    branch, whose decoder maps zero coefficients to exactly the template whatever the released decoder is."""
    import torch

    from ..mesh.coefficients import NUM_MESH_COEFFICIENTS

    with torch.inference_mode():
        zeros = torch.zeros(len(boxes), NUM_MESH_COEFFICIENTS)
        placed, _ = _template_branch().image_vertices(zeros, torch.as_tensor(np.asarray(boxes), dtype=torch.float32))
    return placed.numpy()


@lru_cache(maxsize=1)
def _template_branch():
    from ..mesh.branch import MeshBranch

    return MeshBranch().eval()


def evaluate_photos(
    detector, paths: Sequence[Path], *, python: str | os.PathLike, cache: Path | None = None, min_size: float = 60.0,
    central_only: bool = False,
) -> tuple[list[FaceAccuracy], dict[str, float]]:
    """Run ``detector`` (a ``Detector(mesh=True)``) on each photo and score every face whose box's longer side
    is at least ``min_size`` px and for which mediapipe gives a reference (with ``central_only``, only the one
    whose box holds the image's centre, nearest to it). Returns the per-face rows and counts (``detected``,
    ``large``, ``no_reference``) and ``detector_seconds`` (the detector's calls alone)."""
    import time

    from ..faces.pose import head_model_vertices
    from ..media.images import read_image

    template = head_model_vertices()  # the reference pose is measured in the same head frame as ours
    groups = vertex_groups()
    rows: list[FaceAccuracy] = []
    counts: dict = {"detected": 0, "large": 0, "no_reference": 0, "detector_seconds": 0.0}
    per_image = []
    for path in paths:
        image = read_image(path)
        start = time.perf_counter()
        faces = detector(image)
        counts["detector_seconds"] += time.perf_counter() - start
        counts["detected"] += len(faces)
        large = [f for f in faces if max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
        if central_only:  # windows around one face (write_reposed_photos): its neighbours are not scored
            from .pose_truth import best_face

            central = best_face(large, np.array([image.shape[1] / 2.0, image.shape[0] / 2.0]))
            large = [] if central is None else [central]
        counts["large"] += len(large)
        per_image.append((Path(path), large))
    references = mediapipe_references([(p, np.array([f.box for f in fs]).reshape(-1, 4)) for p, fs in per_image],
                                      python=python, cache=cache)
    for (path, faces), refs in zip(per_image, references):
        if not faces:
            continue
        baseline = template_vertices_in_boxes(np.stack([f.box for f in faces]))
        for face, ref, base in zip(faces, refs, baseline):
            if ref is None:
                counts["no_reference"] += 1
                continue
            if face.mesh_vertices is None:
                raise ValueError("the detector must decode meshes (Detector(mesh=True))")
            ref_rotation = reference_rotation(ref, template)
            ref_angles = tuple(float(a) for a in euler_from_rotation(ref_rotation))
            error = None if face.pose is None else pose_error(face.pose, ref, template)
            mesh_angle = float(rotation_error_degrees(reference_rotation(face.mesh_vertices, template), ref_rotation))
            oracle = oracle_placement(template, ref)
            rows.append(FaceAccuracy(
                image=path.name, box=[round(float(v), 1) for v in face.box],
                size=float(max(face.box[2] - face.box[0], face.box[3] - face.box[1])),
                nme_template=nme(base, ref, face.box), nme_mesh=nme(face.mesh_vertices, ref, face.box),
                pose=None if face.pose is None else (face.pose.yaw, face.pose.pitch, face.pose.roll),
                reference_pose=ref_angles,
                pose_angle_error=None if error is None else error.angle,
                pose_mean_abs_error=None if error is None else error.mean_abs,
                nme_jaw=nme(face.mesh_vertices[groups["jaw"]], ref[groups["jaw"]], face.box),
                nme_lips=nme(face.mesh_vertices[groups["lips"]], ref[groups["lips"]], face.box),
                mesh_pose_angle_error=mesh_angle,
                nme_oracle=nme(oracle, ref, face.box), nme_oracle_jaw=nme(oracle[groups["jaw"]], ref[groups["jaw"]], face.box),
            ))
    return rows, counts


def summarize(rows: Sequence[FaceAccuracy]) -> dict[str, float | int | None]:
    """Medians and the share of faces whose mesh beats their template baseline."""
    def median(values):
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    return {
        "faces": len(rows),
        "median_nme_template": median(r.nme_template for r in rows),
        "median_nme_mesh": median(r.nme_mesh for r in rows),
        "better_than_template": float(np.mean([r.nme_mesh < r.nme_template for r in rows])) if rows else None,
        "faces_with_pose": sum(r.pose is not None for r in rows),
        "median_pose_angle_error": median(r.pose_angle_error for r in rows),
        "median_pose_mean_abs_error": median(r.pose_mean_abs_error for r in rows),
        "median_nme_jaw": median(r.nme_jaw for r in rows),
        "median_nme_lips": median(r.nme_lips for r in rows),
        "median_mesh_pose_angle_error": median(r.mesh_pose_angle_error for r in rows),
        "median_nme_oracle": median(r.nme_oracle for r in rows),
        "median_nme_oracle_jaw": median(r.nme_oracle_jaw for r in rows),
    }


@dataclass
class ShrunkFace:
    """A face of at least the benchmark's size scored again on a copy of its photo shrunk by ``factor``, against
    the judge's answer at full resolution (scaled): a small face whose reference is as good as a large one's.
    ``size``: the shrunk box's longer side (px); ``nme_mesh``: our mesh on the copy; ``nme_full``: our mesh on the
    full photo; ``nme_judge``: the judge's own answer on the copy against its full-resolution one (``None`` when
    not asked for or not found): how far the judge itself moves when the face gets small."""

    image: str
    factor: float
    size: float
    nme_mesh: float
    nme_full: float
    nme_judge: float | None


def evaluate_shrunk(
    detector, paths: Sequence[Path], factors: Sequence[float], folder: Path, *, python: str | os.PathLike,
    cache: Path | None = None, min_size: float = 60.0, judge_small: bool = True,
) -> list[ShrunkFace]:
    """Score faces of at least ``min_size`` px of each photo again on copies shrunk by each of ``factors``
    (``cv2.INTER_AREA``, written losslessly into ``folder``): each face's mesh on the copy (matched to the full
    photo's face by box IoU >= 0.5) against the judge's full-resolution points scaled by the factor, NME
    normalised by the shrunk box. ``judge_small`` also asks the judge about the copies."""
    import cv2
    import torch
    from torchvision.ops import box_iou

    from ..media.images import read_image

    folder.mkdir(parents=True, exist_ok=True)
    photos = []  # (path, image, its large faces)
    for path in paths:
        image = read_image(path)
        large = [f for f in detector(image) if max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
        if large:
            photos.append((Path(path), image, large))
    # one judge run for all full-size faces and one for all copies: each run starts mediapipe afresh
    full_refs = mediapipe_references([(path, np.stack([f.box for f in large])) for path, _, large in photos], python=python, cache=cache)
    copies = []  # (path, factor, the copy's path, its faces, pairs (full face, copy face)) with a full-size reference
    for (path, image, large), refs in zip(photos, full_refs):
        for factor in factors:
            small_path = folder / f"{path.stem}_shrunk{factor:g}.png"
            small_image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(small_path), small_image)
            small = detector(small_image)
            if not small:
                continue
            overlap = box_iou(torch.tensor(np.stack([f.box for f in large]) * factor),
                              torch.tensor(np.stack([f.box for f in small]))).numpy()
            pairs = [(i, int(row.argmax())) for i, row in enumerate(overlap) if row.max() >= 0.5 and refs[i] is not None]
            if pairs:
                copies.append((path, factor, small_path, small, pairs))
    small_refs = [[None] * len(pairs) for *_, pairs in copies]
    if judge_small and copies:
        small_refs = mediapipe_references([(small_path, np.stack([small[j].box for _, j in pairs]))
                                           for _, _, small_path, small, pairs in copies], python=python, cache=cache)
    references = {path: refs for (path, _, _), refs in zip(photos, full_refs)}
    large_faces = {path: large for path, _, large in photos}
    rows: list[ShrunkFace] = []
    for (path, factor, _, small, pairs), judged in zip(copies, small_refs):
        for (i, j), small_ref in zip(pairs, judged):
            full_face, full_ref, box = large_faces[path][i], references[path][i], small[j].box
            reference = full_ref * factor
            rows.append(ShrunkFace(
                image=path.name, factor=float(factor), size=float(max(box[2] - box[0], box[3] - box[1])),
                nme_mesh=nme(small[j].mesh_vertices, reference, box),
                nme_full=nme(full_face.mesh_vertices, full_ref, full_face.box),
                nme_judge=None if small_ref is None else nme(small_ref, reference, box),
            ))
    return rows


def evaluate_rendered(
    detector, poses: Sequence[tuple[float, float, float]], *, identities: Sequence[int | None] = (None,),
    face_px: float = 160.0, image_size: int = 448,
) -> list[FaceAccuracy]:
    """Faces with exact truth instead of the judge: prior faces rendered at known ``poses`` ``(yaw, pitch,
    roll)`` (:mod:`retinaface.evaluation.pose_truth`; ``identities`` as there), scored like photo faces, the
    reference points being the rendered vertices' true pixel positions and the reference pose the angles the
    face was turned by. For turned heads where no photo we may use shows one (yaw beyond 30 degrees)."""
    from ..faces.pose import head_model_vertices
    from .pose_truth import central_face, prior_face, render_face, turn

    template = head_model_vertices()
    groups = vertex_groups()
    rows: list[FaceAccuracy] = []
    for identity in identities:
        vertices = prior_face(identity)
        for index, (yaw, pitch, roll) in enumerate(poses):
            rendered = render_face(vertices, yaw, pitch, roll, size=image_size, face_px=face_px, noise=2.0, seed=index)
            face = central_face(detector, rendered.image)
            if face is None or face.mesh_vertices is None:
                continue
            truth = rendered.pixels
            base = template_vertices_in_boxes(np.asarray(face.box)[None])[0]
            pose = face.pose
            angle = mean_abs = None
            true_rotation = _FLIP @ turn(yaw, pitch, roll) @ _FLIP
            mesh_angle = float(rotation_error_degrees(reference_rotation(face.mesh_vertices, template), true_rotation))
            if pose is not None:
                angle = float(rotation_error_degrees(pose.relative_rotation, true_rotation))
                mean_abs = float(np.abs(np.subtract((pose.yaw, pose.pitch, pose.roll), (yaw, pitch, roll))).mean())
            rows.append(FaceAccuracy(
                image=f"rendered {'mean' if identity is None else f'id{identity}'}", box=[round(float(v), 1) for v in face.box],
                size=float(max(face.box[2] - face.box[0], face.box[3] - face.box[1])),
                nme_template=nme(base, truth, face.box), nme_mesh=nme(face.mesh_vertices, truth, face.box),
                pose=None if pose is None else (pose.yaw, pose.pitch, pose.roll), reference_pose=(yaw, pitch, roll),
                pose_angle_error=angle, pose_mean_abs_error=mean_abs,
                nme_jaw=nme(face.mesh_vertices[groups["jaw"]], truth[groups["jaw"]], face.box),
                nme_lips=nme(face.mesh_vertices[groups["lips"]], truth[groups["lips"]], face.box),
                mesh_pose_angle_error=mesh_angle,
            ))
    return rows
