"""Reading images and videos, and writing outputs atomically, with one-sentence errors."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
import threading
import warnings
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


class OutputError(InputError):
    """An output could not be written completely (disk full, quota, I/O error); the old file is kept."""


class ImageRangeWarning(UserWarning):
    """A float image whose values are not in [0, 1] (read as 0-255 instead)."""


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Normalise an image array to ``ndarray[H, W, 3]`` uint8 BGR.

    Accepts grayscale (``H x W`` or ``H x W x 1``), BGR and BGRA; uint8, uint16 (scaled by 1/257)
    and float in [0, 1]. Float images whose largest finite value exceeds 1.5 hold 0-255 values (e.g.
    float32 TIFFs written from 8-bit data); they are read as such, with an :class:`ImageRangeWarning`.
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
        finite = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max())
        scale = 255.0
        if peak > 1.5:  # 0-255 data stored as floats; clipping to [0, 1] would turn it white
            warnings.warn(
                f"float image with values up to {peak:g} read as 0-255 (expected 0-1)", ImageRangeWarning, stacklevel=2
            )
            scale = 1.0
        image = ((finite * scale).clip(0.0, 255.0) + 0.5).astype(np.uint8)
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
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            with _native_stderr_silenced():
                # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores the EXIF orientation: applied below.
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is not None:
            image = apply_exif_orientation(image, exif_orientation(path))
    if image is None:  # formats OpenCV's wheels do not decode, or files it cannot read
        try:
            image = read_image_frames(path, max_frames=1)[0]
        except ValueError as exc:  # one sentence from the Pillow path
            raise InputError(str(exc)) from None
        except IndexError:
            raise InputError(f"cannot decode {path} as an image (no frames)") from None
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
    so a bad file produces our one-sentence error and nothing else.

    Only on the main thread: file descriptor 2 belongs to the whole process, so redirecting it from
    worker threads (images decoded ahead) would race with other threads and swallow our own messages.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
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
    if path.exists() and not path.is_file():  # a device, FIFO or socket would be replaced by the rename
        raise InputError(f"cannot write output {path}: it is not a regular file")
    return path


_LIVE_TEMP_FILES: set[Path] = set()
"""Temp files not yet published or removed; removed at interpreter exit (Ctrl+C, SIGTERM, errors)."""


@atexit.register
def _remove_live_temp_files() -> None:
    for tmp in list(_LIVE_TEMP_FILES):
        _drop_temp(tmp)


def _drop_temp(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
    _LIVE_TEMP_FILES.discard(tmp)


def _temp_path_for(path: Path) -> Path:
    # Keep the real extension last so encoders (OpenCV picks the container by suffix) see it.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write output {path}: {exc.strerror or exc}") from None
    os.close(fd)
    _LIVE_TEMP_FILES.add(Path(tmp))
    return Path(tmp)


def _write_failed(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write output {path}: {exc.strerror or exc}; the previous file, if any, is unchanged")


def _sync(tmp: Path) -> None:
    """Flush ``tmp`` to the disk: some file systems (NFS, quotas) report a full disk only here."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    _LIVE_TEMP_FILES.discard(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see a partial file.

    A failed write (``OSError``: disk full, quota, I/O error) removes the temp file, leaves ``path``
    as it was and raises :class:`OutputError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_failed(path, exc) from None
    tmp = _temp_path_for(path)
    try:
        write(tmp)
        _sync(tmp)
        _publish(tmp, path)
    except OSError as exc:
        _drop_temp(tmp)
        raise _write_failed(path, exc) from None
    except BaseException:
        _drop_temp(tmp)
        raise


def encodable_path(path: str | os.PathLike) -> Path:
    """``path``, or ``path`` + ``.png`` when its format cannot hold a colour image (``.pgm``, ``.pbm``)."""
    path = Path(path)
    return path.with_name(path.name + ".png") if path.suffix.lower() in (".pgm", ".pbm") else path


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the path's extension and write atomically."""
    path = Path(path)
    try:
        with _native_stderr_silenced():
            ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"cannot encode an image with extension {path.suffix!r}")
    atomic_write(path, encoded.tofile)


def count_video_frames(path: str | os.PathLike) -> int:
    """Frames a video file's index announces (0 when it cannot be opened: no index, truncated, empty)."""
    with _native_stderr_silenced():
        capture = cv2.VideoCapture(str(path))
        try:
            return int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        finally:
            capture.release()


class TempFileOutput:
    """An output that is written to a temp file beside ``path`` and moved into place only once complete.

    Subclasses implement ``finish`` (complete, check and flush the temp file; on failure remove it and raise
    :class:`OutputError`) and ``discard`` (remove the temp file, keeping any previous ``path``)."""

    path: Path
    _tmp: Path

    def finish(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def publish(self) -> None:
        """Finish the temp file and move it into place."""
        self.finish()
        _publish(self._tmp, self.path)

    def close(self) -> None:
        """Finish, check and move the file into place (:class:`OutputError` if it cannot be completed)."""
        self.publish()


class AtomicVideoWriter(TempFileOutput):
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
            _drop_temp(self._tmp)
            raise InputError(f"cannot write video {self.path} (no encoder for {self.path.suffix!r})")
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        self.resized = 0
        """Frames of another size (a stream whose size changed), scaled to :attr:`size` before encoding."""
        self._finished = False

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            # OpenCV silently drops frames of the wrong size; scale them so none go missing
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
            self.resized += 1
        self._writer.write(frame)
        self.frames += 1

    def finish(self) -> None:
        """Finish encoding and check the file: ``cv2.VideoWriter`` reports no write errors, so a full disk
        shows up only as a file whose index is missing or counts fewer frames. On failure the temp file is
        removed and :class:`OutputError` raised."""
        if self._finished:
            return
        self._writer.release()
        self._finished = True
        if self.frames == 0:
            _drop_temp(self._tmp)
            raise OutputError(f"no frames to write to {self.path}; the previous file, if any, is unchanged")
        try:
            _sync(self._tmp)
        except OSError as exc:
            _drop_temp(self._tmp)
            raise _write_failed(self.path, exc) from None
        found = count_video_frames(self._tmp)
        if found != self.frames:
            _drop_temp(self._tmp)
            raise OutputError(
                f"cannot write video {self.path}: the encoder stored {found} of {self.frames} frames (disk full?); "
                "the previous file, if any, is unchanged"
            )

    def discard(self) -> None:
        if not self._finished:
            self._writer.release()
            self._finished = True
        _drop_temp(self._tmp)


class AtomicJsonLines(TempFileOutput):
    """JSON Lines writer: records stream to a temp file that replaces ``path`` on :meth:`close`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = _temp_path_for(self.path)
        self._handle = open(self._tmp, "w", encoding="utf-8")
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            self.discard()
            raise _write_failed(self.path, exc) from None
        self.records += 1

    def finish(self) -> None:
        """Flush and close the temp file (:class:`OutputError`, temp file removed, if that fails)."""
        if self._handle.closed:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except OSError as exc:
            self.discard()
            raise _write_failed(self.path, exc) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # the unwritten buffer of a full disk fails again here
            self._handle.close()
        _drop_temp(self._tmp)


def publish_together(*writers: TempFileOutput | None) -> None:
    """Finish every writer, then publish them all - or, if any fails, none (each old file is kept)."""
    active = [w for w in writers if w is not None]
    try:
        for writer in active:
            writer.finish()
    except BaseException:
        for writer in active:
            writer.discard()
        raise
    for writer in active:
        writer.publish()
