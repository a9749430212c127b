"""Silencing what C libraries (FFmpeg, libjpeg) print on stderr, so users see our one-sentence errors only."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
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
