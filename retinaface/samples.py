"""Sample media built from the public-domain image shipped in ``datasets/samples``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from .outputs.video import AtomicVideoWriter
from .utils.resources import package_path
from .media.images import read_image

SAMPLES_DIR = package_path("retinaface.datasets", "samples")
ASTRONAUT = SAMPLES_DIR / "astronaut.jpg"  # NASA photo of Eileen Collins, public domain (via scikit-image)
# Face box in the 512x512 photo (x1, y1, x2, y2), annotated by hand in the WIDER style (forehead to chin).
ASTRONAUT_FACE_BOX = (176.0, 58.0, 272.0, 176.0)


def _background(height: int, width: int, t: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(xs / 97.0 + t) * np.cos(ys / 71.0 - t / 2)
    base = np.stack([60 + 80 * wave, 70 + 40 * wave, 90 + 60 * (1 - wave)], axis=-1)
    return base.astype(np.uint8)


def demo_frames(*, num_frames: int = 90, width: int = 1280, height: int = 720):
    """Yield ``(frame, face_boxes)``: frames with three moving, scaling, non-overlapping copies of the sample
    photo (the middle one mirrored).

    ``face_boxes`` lists, per copy, the hand-annotated :data:`ASTRONAUT_FACE_BOX` mapped into the frame
    (x1, y1, x2, y2 pixels), so tests know where the faces are without running a detector.
    """
    source = read_image(ASTRONAUT)
    scale = min(width / 1280, height / 720)  # copies never overlap, whatever the frame size
    for index in range(num_frames):
        t = index / max(num_frames - 1, 1)
        frame = _background(height, width, 6.0 * t)
        face_boxes = []
        copies = (
            (0.20 + 0.15 * t, 0.30, 260 + 60 * math.sin(math.pi * t), False),
            (0.55, 0.55 - 0.1 * t, 180, True),
            (0.85 - 0.1 * t, 0.35, 110 + 30 * t, False),
        )
        for cx, cy, side, mirror in copies:
            side = int(side * scale)
            patch = cv2.resize(source, (side, side), interpolation=cv2.INTER_AREA)
            if mirror:
                patch = patch[:, ::-1]
            x1 = int(cx * width - side / 2)
            y1 = int(cy * height - side / 2)
            x1, y1 = max(0, min(width - side, x1)), max(0, min(height - side, y1))
            frame[y1 : y1 + side, x1 : x1 + side] = patch
            fx1, fy1, fx2, fy2 = (v * side / 512.0 for v in ASTRONAUT_FACE_BOX)
            if mirror:
                fx1, fx2 = side - fx2, side - fx1
            face_boxes.append((x1 + fx1, y1 + fy1, x1 + fx2, y1 + fy2))
        yield frame, face_boxes


def write_demo_video(path: str | os.PathLike, *, num_frames: int = 90, fps: float = 30.0, width: int = 1280, height: int = 720) -> Path:
    """Write the demo clip (default 3 s of 1280x720 at 30 fps) and return its path."""
    writer = AtomicVideoWriter(path, fps=fps, size=(width, height))
    try:
        for frame, _ in demo_frames(num_frames=num_frames, width=width, height=height):
            writer.write(frame)
    except BaseException:
        writer.discard()
        raise
    writer.close()
    return writer.path
