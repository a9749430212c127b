"""Following faces across video frames by box overlap (IoU), with a per-track state slot.

Deliberately simple and general: it sees only boxes, so anything that needs faces followed over time
(warm-starting mesh fits, smoothing, anonymisation) can share it and keep its own data per track in
:attr:`IouTracker.state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``ndarray[N, M]`` of boxes ``a`` ``ndarray[N, 4]`` and ``b`` ``ndarray[M, 4]`` (x1 y1 x2 y2, pixels).
    Non-finite or empty boxes overlap nothing."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


@dataclass
class Track:
    """One followed face: ``box`` ``ndarray[4]`` last seen, ``age`` frames since it was created, ``missed``
    consecutive frames without a match."""

    id: int
    box: np.ndarray
    age: int = 0
    missed: int = 0


class IouTracker:
    """Assigns track ids to each frame's boxes by optimal one-to-one matching (Hungarian, on IoU) with the
    tracks of the previous frames.

    - A box matches a track when their IoU is at least ``iou_threshold``; unmatched boxes start new tracks
      (ids count up from 0 and are never reused).
    - A track survives ``max_missed`` frames without a match (a missed detection or a brief occlusion), then
      ends; its entry in :attr:`state` is dropped with it.
    - :attr:`state` maps a live track id to whatever a caller keeps for it (e.g. the previous mesh fit).

    >>> tracker = IouTracker()
    >>> tracker.update(np.array([[10, 10, 50, 50]]))
    array([0])
    >>> tracker.update(np.array([[200, 10, 240, 50], [12, 11, 52, 51]]))
    array([1, 0])
    """

    def __init__(self, *, iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.state: dict[int, Any] = {}
        self._next_id = 0

    def update(self, boxes: np.ndarray) -> np.ndarray:
        """Track ids ``ndarray[N]`` (int64) for this frame's ``boxes`` ``ndarray[N, 4]`` (x1 y1 x2 y2)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        matched_tracks: set[int] = set()
        if self.tracks and len(boxes):
            from scipy.optimize import linear_sum_assignment  # imported on first use: scipy.optimize is slow to import

            iou = box_iou(np.stack([t.box for t in self.tracks]), boxes)
            rows, cols = linear_sum_assignment(iou, maximize=True)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_threshold:
                    track = self.tracks[r]
                    track.box, track.missed = boxes[c].copy(), 0
                    ids[c] = track.id
                    matched_tracks.add(r)
        survivors = []
        for index, track in enumerate(self.tracks):
            track.age += 1
            if index not in matched_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    self.state.pop(track.id, None)
                    continue
            survivors.append(track)
        self.tracks = survivors
        for c in np.flatnonzero(ids < 0):
            self.tracks.append(Track(self._next_id, boxes[c].copy()))
            ids[c] = self._next_id
            self._next_id += 1
        return ids

    @property
    def active_ids(self) -> list[int]:
        """Ids of the live tracks (matched now or missed for at most ``max_missed`` frames)."""
        return [t.id for t in self.tracks]

    def reset(self) -> None:
        """Forget all tracks and their state (e.g. at a scene cut); ids keep counting up."""
        self.tracks.clear()
        self.state.clear()
