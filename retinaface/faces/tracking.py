"""Face tracks across video frames: IoU association with the Hungarian algorithm, and One-Euro smoothing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou


@dataclass
class Track:
    """A face followed over frames: its id, last box (``[4]`` x1 y1 x2 y2), its change per frame and
    frames since last seen."""

    track_id: int
    box: np.ndarray
    missed: int = 0
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def predicted(self) -> np.ndarray:
        """Where the box is expected in the next frame (constant velocity)."""
        return self.box + self.velocity * (self.missed + 1)

    def observe(self, box: np.ndarray) -> None:
        step = (box - self.box) / (self.missed + 1)
        self.velocity = step if self.hits == 1 else 0.5 * step + 0.5 * self.velocity
        self.box, self.missed, self.hits = box.copy(), 0, self.hits + 1


@dataclass
class IouTracker:
    """Give each face box a ``track_id`` that stays the same while the face moves.

    Boxes of a new frame are matched to where the live tracks are expected (last box moved by their
    smoothed per-frame motion) by maximum total IoU (Hungarian assignment on ``1 - IoU``, pairs under
    ``iou_threshold`` refused); unmatched boxes start new tracks. A track not
    matched for more than ``max_missed`` consecutive frames ends; until then :meth:`missing` still reports
    its last box (anonymisation keeps covering a face the detector lost for a frame or two).

    :attr:`state` maps a live track id to whatever a caller keeps for it (e.g. the previous mesh fit, to
    warm-start the next); an entry is dropped when its track ends.
    """

    iou_threshold: float = 0.3
    max_missed: int = 2
    fps: float = 30.0
    """Frame rate of the sequence followed: the time base of smoothing its tracks."""
    tracks: list[Track] = field(default_factory=list)
    state: dict[int, Any] = field(default_factory=dict)
    _next_id: int = 0

    def update(self, boxes: np.ndarray) -> list[int]:
        """``boxes``: ``ndarray[N, 4]`` of this frame -> ``N`` track ids, in the same order."""
        from scipy.optimize import linear_sum_assignment  # imported on first use: `import retinaface` stays light

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes)
        matched_tracks: set[int] = set()
        if len(boxes) and self.tracks:
            expected = np.stack([t.predicted() for t in self.tracks])
            iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(expected)).numpy()
            rows, cols = linear_sum_assignment(1.0 - iou)
            for row, col in zip(rows, cols):
                if iou[row, col] >= self.iou_threshold:
                    track = self.tracks[col]
                    track.observe(boxes[row])
                    ids[row] = track.track_id
                    matched_tracks.add(col)
        for index, track in enumerate(self.tracks):
            if index not in matched_tracks:
                track.missed += 1
        for ended in (t for t in self.tracks if t.missed > self.max_missed):
            self.state.pop(ended.track_id, None)
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for row in range(len(boxes)):
            if ids[row] < 0:
                self.tracks.append(Track(self._next_id, boxes[row].copy()))
                ids[row] = self._next_id
                self._next_id += 1
        return ids

    def missing(self) -> list[Track]:
        """Live tracks not matched in the latest frame (their last box still stands for the face)."""
        return [t for t in self.tracks if t.missed > 0]


class OneEuroFilter:
    """Speed-adaptive low-pass filter for jittery signals (Casiez et al., CHI 2012), on arrays of any shape.

    Slow motion is smoothed strongly (cut-off ``min_cutoff`` Hz), fast motion passes with little lag (the
    cut-off rises by ``beta`` per unit of speed).
    """

    def __init__(self, *, frequency: float, min_cutoff: float = 1.0, beta: float = 0.05, derivative_cutoff: float = 1.0) -> None:
        self.frequency = frequency
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self.frequency)

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self._value is None:
            self._value, self._speed = value.copy(), np.zeros_like(value)
            return value.copy()
        speed = (value - self._value) * self.frequency
        a_d = self._alpha(self.derivative_cutoff)
        self._speed = a_d * speed + (1 - a_d) * self._speed
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self._speed))
        self._value = a * value + (1 - a) * self._value
        return self._value.copy()
