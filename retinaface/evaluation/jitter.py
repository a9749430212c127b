"""Frame-to-frame jitter of landmarks, meshes and head pose on a still face.

A still face filmed by a camera changes only by sensor noise from frame to frame, so any motion of its
landmarks or mesh is jitter. :func:`still_face_clip` makes such a clip from one photo; :func:`measure_jitter`
runs a detector over it with an :class:`~retinaface.tracking.IouTracker` (as ``detect.py`` does on videos)
and measures the motion of the face that is present in every frame.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..faces.tracking import IouTracker


def still_face_clip(image: np.ndarray, *, frames: int = 60, noise: float = 2.0, seed: int = 0) -> Iterator[np.ndarray]:
    """``frames`` copies of ``image`` (``ndarray[H, W, 3]`` uint8) with independent Gaussian noise of standard
    deviation ``noise`` (grey levels) each, as a camera's sensor would add."""
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        yield np.clip(image.astype(np.float32) + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)


def _motion(series: list[np.ndarray], scale: float) -> dict[str, float]:
    """Mean point displacement between consecutive frames (``ndarray[P, 2]`` each), median and 95th
    percentile over the frame pairs, in pixels and as a fraction of ``scale``."""
    steps = np.array([np.linalg.norm(b - a, axis=-1).mean() for a, b in zip(series, series[1:])])
    return {
        "median_px": float(np.median(steps)), "p95_px": float(np.percentile(steps, 95)),
        "median_rel": float(np.median(steps) / scale), "p95_rel": float(np.percentile(steps, 95) / scale),
    }


def measure_jitter(detector, frames) -> dict:
    """Jitter of the longest-lived track over ``frames`` (an iterable of BGR images), one frame at a time.

    Returns the number of frames and of frames where that track was seen, its median box size, and for
    landmarks (5 points), mesh vertices (468 points, x and y; when ``detector`` decodes meshes) and the
    template placed in the box (the mesh path with zero coefficients; when the detector fits meshes):
    median and 95th-percentile frame-to-frame mean point motion in pixels and relative to ``sqrt(box area)``;
    plus the standard deviation of yaw, pitch and roll (degrees).
    """
    tracker = IouTracker()
    seen: dict[int, list] = {}
    total = 0
    for frame in frames:
        total += 1
        (faces,) = detector.detect_batch([frame], tracker=tracker)
        for face in faces:
            seen.setdefault(face.track_id, []).append(face)
    if not seen:
        return {"frames": total, "tracked_frames": 0}
    track = max(seen.values(), key=len)
    boxes = np.stack([f.box for f in track])
    scale = float(np.median(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))))
    report: dict = {"frames": total, "tracked_frames": len(track), "face_size_px": scale,
                    "box": _motion([b.reshape(2, 2) for b in boxes], scale),
                    "landmarks": _motion([f.landmarks for f in track], scale)}
    if all(f.mesh_vertices is not None for f in track):
        report["mesh"] = _motion([f.mesh_vertices[:, :2] for f in track], scale)
    if getattr(detector, "decode_mesh", False):
        from .mesh_accuracy import template_vertices_in_boxes

        report["template_mesh"] = _motion([v[:, :2] for v in template_vertices_in_boxes(boxes)], scale)
    poses = np.array([[f.pose.yaw, f.pose.pitch, f.pose.roll] for f in track if f.pose is not None]).reshape(-1, 3)
    if len(poses) > 1:
        report["pose_std_deg"] = dict(zip(("yaw", "pitch", "roll"), (float(s) for s in poses.std(axis=0))))
    return report
