"""Writing outputs atomically: temp file, flush, rename; failed writes keep the previous file."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..utils.native import native_stderr_silenced


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
        drop_temp(tmp)


def drop_temp(tmp: Path) -> None:
    """Remove an unpublished temp file (if it is still there) and forget it."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
    _LIVE_TEMP_FILES.discard(tmp)


def temp_path_for(path: Path) -> Path:
    """A new, registered temp file beside ``path`` (same folder, so the final rename is atomic)."""
    # Keep the real extension last so encoders (OpenCV picks the container by suffix) see it.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write output {path}: {exc.strerror or exc}") from None
    os.close(fd)
    _LIVE_TEMP_FILES.add(Path(tmp))
    return Path(tmp)


def write_failed(path: Path, exc: OSError) -> OutputError:
    """The one-sentence :class:`OutputError` for a write to ``path`` that failed with ``exc``."""
    return OutputError(f"cannot write output {path}: {exc.strerror or exc}; the previous file, if any, is unchanged")


def sync_to_disk(tmp: Path) -> None:
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
        raise write_failed(path, exc) from None
    tmp = temp_path_for(path)
    try:
        write(tmp)
        sync_to_disk(tmp)
        _publish(tmp, path)
    except OSError as exc:
        drop_temp(tmp)
        raise write_failed(path, exc) from None
    except BaseException:
        drop_temp(tmp)
        raise


def encodable_path(path: str | os.PathLike) -> Path:
    """``path``, or ``path`` + ``.png`` when its format cannot hold a colour image (``.pgm``, ``.pbm``)."""
    path = Path(path)
    return path.with_name(path.name + ".png") if path.suffix.lower() in (".pgm", ".pbm") else path


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode by the path's extension and write atomically."""
    path = Path(path)
    try:
        with native_stderr_silenced():
            ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"cannot encode an image with extension {path.suffix!r}")
    atomic_write(path, encoded.tofile)


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


class AtomicJsonLines(TempFileOutput):
    """JSON Lines writer: records stream to a temp file that replaces ``path`` on :meth:`close`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = temp_path_for(self.path)
        self._handle = open(self._tmp, "w", encoding="utf-8")
        self.records = 0

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            self.discard()
            raise write_failed(self.path, exc) from None
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
            raise write_failed(self.path, exc) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # the unwritten buffer of a full disk fails again here
            self._handle.close()
        drop_temp(self._tmp)


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
