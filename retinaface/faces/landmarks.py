"""The five facial landmarks: their order and how a horizontal flip permutes them."""

from __future__ import annotations

LANDMARK_NAMES = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")
"""Order of the five points (left/right as seen in the image), as in WIDER's RetinaFace annotations."""

FLIPPED_LANDMARK_ORDER = [1, 0, 2, 4, 3]
"""Index order of the points after a horizontal flip: eyes swap, nose stays, mouth corners swap."""
