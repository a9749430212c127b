"""Reading images and videos, and writing outputs atomically, with one-sentence errors."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm",
    ".gif", ".heic", ".heif", ".avif",
}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}


class InputError(ValueError):
    """Bad user input (missing, unreadable, unsupported or unwritable): the message is one sentence."""


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Normalise an image array to ``ndarray[H, W, 3]`` uint8 BGR.

    Accepts grayscale (``H x W`` or ``H x W x 1``), BGR and BGRA; uint8, uint16 (scaled by 1/257)
    and float in [0, 1].
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a NumPy image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"unsupported image shape {image.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image has zero size {image.shape}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        image = (np.nan_to_num(image, nan=0.0).clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"unsupported image dtype {image.dtype}; expected uint8, uint16 or float")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``ndarray[H, W, 3]`` uint8 BGR (grayscale, RGBA and 16-bit converted), upright:
    turned by its EXIF orientation as viewers show it. HEIC/HEIF/GIF go through Pillow (first frame)."""
    from .media import PILLOW_EXTENSIONS, apply_exif_orientation, exif_orientation, read_image_frames

    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if not path.is_file():
        raise InputError(f"input is not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"input is an empty (0-byte) file: {path}")
    image = None
    if path.suffix.lower() not in PILLOW_EXTENSIONS:
        # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores the EXIF orientation: applied below.
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is not None:
            image = apply_exif_orientation(image, exif_orientation(path))
    if image is None:  # formats OpenCV's wheels do not decode
        try:
            image = read_image_frames(path, max_frames=1)[0]
        except (ValueError, IndexError) as exc:
            raise InputError(str(exc) or f"cannot decode {path} as an image") from None
    return as_bgr_uint8(image)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (by extension), sorted by name."""
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in folder {folder}")
    return images


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what C libraries print on file descriptor 2 (FFmpeg's own 'moov atom not found' etc.),
    so a bad file produces our one-sentence error and nothing else."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
        with _native_stderr_silenced():
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


def check_writable(path: str | os.PathLike) -> Path:
    """Create ``path``'s folder if needed and check a file can be created there; ``InputError`` if not."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write output {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise InputError(f"cannot write output {path}: it is a folder")
    return path


def _temp_path_for(path: Path) -> Path:
    # Keep the real extension last so encoders (OpenCV picks the container by suffix) see it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path_for(path)
    try:
        write(tmp)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the path's extension and write atomically."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    if not ok:
        raise InputError(f"cannot encode an image with extension {path.suffix!r}")
    atomic_write(path, encoded.tofile)


class AtomicVideoWriter:
    """Video writer that only shows the file under its final name once closed.

    ``.avi`` is written as Motion-JPEG, everything else as MPEG-4 Part 2 (``mp4v``) - the encoders
    the OpenCV wheels ship with.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self._tmp = _temp_path_for(self.path)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(fps), size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write video {self.path} (no encoder for {self.path.suffix!r})")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place."""
        self._writer.release()
        _publish(self._tmp, self.path)

    def discard(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)


class AtomicJsonLines:
    """JSON Lines writer: records stream to a temp file that replaces ``path`` on :meth:`close`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = _temp_path_for(self.path)
        self._handle = open(self._tmp, "w", encoding="utf-8")
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self.records += 1

    def close(self) -> None:
        self._handle.close()
        _publish(self._tmp, self.path)

    def discard(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)
