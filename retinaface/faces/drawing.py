"""Annotating images with detections."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .face import Face
from .pose import pose_axes

# BGR colours for left eye, right eye, nose, left and right mouth corner.
LANDMARK_COLOURS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))
BOX_COLOUR = (0, 220, 0)
# BGR colours of the head's axes: x (the face's right as seen in the image) red, y (up) green, z (out of the face) blue.
AXIS_COLOURS = ((0, 0, 255), (0, 200, 0), (255, 80, 0))


def draw_pose_axes(canvas: np.ndarray, face: Face, thickness: int) -> None:
    """Draw ``face``'s head axes in place, from its nose tip: x red, y green, z blue (the direction the face
    points), each about 40 % of the face's width long."""
    if face.pose is None:
        return
    points = pose_axes(face.pose)
    if not np.isfinite(points).all():
        return
    origin, *tips = (tuple(int(round(c)) for c in p) for p in points)
    # the z axis last, so the face's direction stays visible on top
    for tip, colour in zip(tips, AXIS_COLOURS):
        cv2.arrowedLine(canvas, origin, tip, colour, thickness, cv2.LINE_AA, tipLength=0.2)


def draw_faces(image: np.ndarray, faces: Sequence[Face], *, show_scores: bool = True, show_pose: bool = True) -> np.ndarray:
    """A copy of ``image`` (``ndarray[H, W, 3]`` BGR) with boxes, scores, landmarks and (``show_pose``) head
    pose axes drawn (:func:`draw_pose_axes`).

    Line widths scale with the image so annotations stay visible on 4K frames and thumbnails alike.
    """
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOUR, thickness, cv2.LINE_AA)
        face_size = max(x2 - x1, y2 - y1)
        radius = max(1, min(thickness + 1, face_size // 25))
        for (x, y), colour in zip(face.landmarks, LANDMARK_COLOURS):
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, colour, -1, cv2.LINE_AA)
        if show_pose:
            draw_pose_axes(canvas, face, max(1, thickness))
        if show_scores:
            label = f"{face.score:.2f}"
            # at most 60 % of the face's width (a label larger than its face hides it), readable down to 0.3
            width_at_1 = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0]
            scale = max(0.3, min(0.4 * thickness, 0.6 * face_size / width_at_1))
            (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(0, y1 - th - baseline - 2)
            cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + baseline + 2), BOX_COLOUR, -1)
            cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
