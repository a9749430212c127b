"""Protecting users' files: outputs never replace inputs, and one output has one writer at a time.

Both checks run before any work, so a refused command has changed nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected from each other
    fcntl = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def refuse_overwriting_inputs(outputs: Iterable[tuple[str, Path | None]], inputs: Iterable[Path | None]) -> None:
    """``InputError`` if an output is the same file as an input or as another output.

    ``outputs`` are ``(option name, path)`` pairs (``None`` paths are ignored); "same file" covers the
    same path spelled differently, symbolic links and hard links (same device and inode).
    """
    known: dict[tuple[int, int], Path] = {}
    for path in inputs:
        if path is not None and (identity := _identity(Path(path))) is not None:
            known.setdefault(identity, Path(path))
    seen: dict[Path, str] = {}
    for option, path in outputs:
        if path is None:
            continue
        path = Path(path)
        identity = _identity(path)
        if identity is not None and identity in known:
            raise InputError(f"{option} {path} is the input {known[identity]}; refusing to overwrite it, choose another path")
        resolved = path.resolve()
        if resolved in seen:
            raise InputError(f"{option} {path} is the same file as {seen[resolved]}; give them different paths")
        seen[resolved] = f"{option} {path}"


def refuse_same_folder(option: str, output: Path, folder: Path) -> None:
    """``InputError`` if the output folder is the input folder (its files would be replaced)."""
    if output.exists() and _identity(output) == _identity(folder):
        raise InputError(f"{option} {output} is the input folder {folder}; refusing to write into it, choose another folder")


def lock_path(target: Path) -> Path:
    """The lock file guarding ``target`` (a file or a folder): ``.<name>.lock`` beside it."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


class OutputLock:
    """An exclusive ``flock`` on ``.<name>.lock`` beside an output, held while a run writes it.

    A second run asking for the same output gets :class:`InputError` naming the process that holds it.
    The kernel drops the lock when its process dies (even by SIGKILL), so a lock file left by a dead run
    is stale and simply taken over. The file is removed on :meth:`release`.
    """

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        if fcntl is None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot write output {self.target}: {exc.strerror or exc}") from None
        for _ in range(10):  # retried only if another process removed the lock file meanwhile
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise InputError(f"cannot write output {self.target}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InputError(
                    f"{self.target} is being written by another run (process {holder}); wait for it to finish or choose another output"
                ) from None
            if self._same(fd):
                with contextlib.suppress(OSError):  # the pid is informative only (a full disk may refuse it)
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise InputError(f"cannot lock {self.path}: it keeps being replaced")

    def _same(self, fd: int) -> bool:
        info = os.fstat(fd)
        return _identity(self.path) == (info.st_dev, info.st_ino)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked_outputs(*targets: Path | None) -> Iterator[None]:
    """Hold an :class:`OutputLock` on every target (duplicates and ``None`` ignored) for the block."""
    with contextlib.ExitStack() as stack:
        seen = set()
        for target in targets:
            if target is None:
                continue
            key = lock_path(Path(target))
            if key in seen:
                continue
            seen.add(key)
            stack.enter_context(OutputLock(target))
        yield
