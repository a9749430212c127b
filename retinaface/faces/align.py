"""Aligned face crops from the five landmarks, and pasting edited crops back (detect, crop, edit, paste).

A crop is described by a 2x3 affine matrix ``M`` mapping original-image pixels to crop pixels
(``crop = cv2.warpAffine(image, M, size)``); it is a similarity (rotation, uniform scale, shift), so it
can be recorded in JSON and inverted exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .landmarks import in_plane_angles

ARCFACE_112_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
"""Five-point template of the ArcFace/InsightFace 112x112 recognition crops (left eye, right eye, nose,
left and right mouth corner, as seen in the image), in crop pixels."""
CROP_STYLES = ("arcface112", "ffhq")


@dataclass
class AlignedCrop:
    """``image``: ``ndarray[S, S, 3]`` crop; ``transform``: ``ndarray[2, 3]`` original pixels -> crop pixels."""

    image: np.ndarray
    transform: np.ndarray

    def to_dict(self) -> dict:
        return {"size": [int(self.image.shape[1]), int(self.image.shape[0])],
                "transform": [[round(float(v), 6) for v in row] for row in self.transform]}


def similarity_to_template(landmarks: np.ndarray, template: np.ndarray = ARCFACE_112_TEMPLATE) -> np.ndarray:
    """Least-squares similarity ``ndarray[2, 3]`` taking ``landmarks`` ``[5, 2]`` onto ``template`` ``[5, 2]``.

    Five landmarks of one detection are all inliers: a huge RANSAC threshold keeps every point, and
    OpenCV's final Levenberg-Marquardt refinement then minimises the error over all five.
    """
    matrix, _ = cv2.estimateAffinePartial2D(
        np.asarray(landmarks, np.float64).reshape(-1, 1, 2), np.asarray(template, np.float64).reshape(-1, 1, 2),
        method=cv2.RANSAC, ransacReprojThreshold=1e9, refineIters=50,
    )
    if matrix is None:
        raise ValueError("cannot fit a similarity transform to these landmarks (degenerate points)")
    return matrix


def ffhq_transform(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """``ndarray[2, 3]`` for an FFHQ-style crop of ``size`` pixels: the square oriented by the eye line and the
    eye-to-mouth direction, centred a little below the eyes, its side about 4x the eye distance or 3.6x the
    eye-to-mouth distance, whichever is larger (the FFHQ dataset's alignment recipe)."""
    points = np.asarray(landmarks, np.float64)
    eye_left, eye_right = points[0], points[1]
    mouth = (points[3] + points[4]) / 2
    eyes = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth - eyes
    angle = in_plane_angles(points)  # the eye line blended with the perpendicular of eye-to-mouth
    x = np.array([np.cos(angle), np.sin(angle)])
    half = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    x *= half
    y = np.array([-x[1], x[0]])
    centre = eyes + eye_to_mouth * 0.1
    top_left, bottom_left, top_right = centre - x - y, centre - x + y, centre + x - y
    source = np.float32([top_left, top_right, bottom_left])
    target = np.float32([[0, 0], [size, 0], [0, size]])
    return cv2.getAffineTransform(source, target)


def align_face(image: np.ndarray, landmarks: np.ndarray, *, style: str = "arcface112", size: int | None = None) -> AlignedCrop:
    """Crop one face: ``arcface112`` maps the five ``landmarks`` (``[5, 2]`` image pixels) onto the ArcFace
    template (``size`` defaults to 112; other sizes scale the template); ``ffhq`` makes an FFHQ-style square
    (``size`` defaults to 512). Pixels outside the image are filled by reflection."""
    if style == "arcface112":
        size = size or 112
        matrix = similarity_to_template(landmarks, ARCFACE_112_TEMPLATE * (size / 112.0))
    elif style == "ffhq":
        size = size or 512
        matrix = ffhq_transform(landmarks, size)
    else:
        raise ValueError(f"unknown crop style {style!r}; choose one of {', '.join(CROP_STYLES)}")
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return AlignedCrop(crop, matrix)


def paste_back(image: np.ndarray, crop: np.ndarray, transform: np.ndarray, *, feather: float = 0.1) -> np.ndarray:
    """Put ``crop`` (e.g. an edited aligned face) back where ``transform`` (``[2, 3]``, image -> crop) took it
    from, returning a new image.

    ``feather`` is the width of the blended border as a fraction of the crop side: the crop's weight falls
    smoothly from 1 inside to 0 at its edge, so no seam shows; 0 pastes with a hard edge.
    """
    height, width = image.shape[:2]
    side = crop.shape[0]
    inverse = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    warped = cv2.warpAffine(crop, inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    weight = np.ones(crop.shape[:2], np.float32)
    border = int(round(feather * side))
    if border > 0:
        ramp = np.minimum(np.arange(side, dtype=np.float32) + 0.5, np.arange(side, dtype=np.float32)[::-1] + 0.5)
        ramp = np.clip(ramp / border, 0.0, 1.0)
        ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible edge where the ramp starts
        weight = np.minimum(ramp[:, None], ramp[None, :crop.shape[1]])
    mask = cv2.warpAffine(weight, inverse, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if image.ndim == 3:
        mask = mask[:, :, None]
    blended = image.astype(np.float32) * (1 - mask) + warped.astype(np.float32) * mask
    return np.clip(blended + 0.5, 0, 255).astype(image.dtype) if image.dtype == np.uint8 else blended.astype(image.dtype)
