"""Reading videos and cameras frame by frame, upright, with one-sentence errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import InputError
from ..utils.native import native_stderr_silenced
from .images import as_bgr_uint8

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}


class VideoSource:
    """Frames of a video file or camera, as ``ndarray[H, W, 3]`` uint8 BGR."""

    def __init__(self, source: str | os.PathLike | int) -> None:
        self.name = f"camera:{source}" if isinstance(source, int) else str(source)
        if not isinstance(source, int):
            path = Path(source)
            if not path.is_file():
                raise InputError(f"input not found: {path}")
            if path.stat().st_size == 0:
                raise InputError(f"input is an empty (0-byte) file: {path}")
        with native_stderr_silenced():
            capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
            opened = capture.isOpened()
            ok, first = capture.read() if opened else (False, None)
        if not opened:
            raise InputError(f"cannot open {self.name} as a video (corrupt, unsupported or not a video)")
        if not ok or first is None:
            capture.release()
            raise InputError(f"{self.name} contains no decodable video frames")
        self._capture = capture
        self._pending: np.ndarray | None = first
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and 0 < fps < 1000 else 30.0
        self.height, self.width = first.shape[:2]
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count: int | None = count if count > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            if self._pending is not None:
                frame, self._pending = self._pending, None
            else:
                ok, frame = self._capture.read()
                if not ok or frame is None:
                    return
            yield as_bgr_uint8(frame)

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_video_frames(path: str | os.PathLike) -> int:
    """Frames a video file's index announces (0 when it cannot be opened: no index, truncated, empty)."""
    with native_stderr_silenced():
        capture = cv2.VideoCapture(str(path))
        try:
            return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()
