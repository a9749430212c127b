"""SIGTERM (and SIGHUP) handled like Ctrl+C, so `kill`, `timeout`, Docker and job schedulers stop a run cleanly.

Inside :func:`interrupt_on_termination` the first such signal raises :class:`Terminated` (a
``KeyboardInterrupt``) in the main thread: every place that finishes outputs on Ctrl+C does the same for
it, temp files are removed, and the command exits with ``128 + signal`` (143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """Raised by the handler for a termination signal; ``signum`` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


class Interruption:
    """What stopped the run: :attr:`signum` is the termination signal received, or ``None``."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def exit_code(self) -> int:
        """``128 + signal`` for a termination signal, 130 (SIGINT) otherwise: the shell's convention."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)


@contextlib.contextmanager
def interrupt_on_termination(signals: tuple[int, ...] = (signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM))) -> Iterator[Interruption]:
    """Turn the first termination signal into :class:`Terminated`; later ones are ignored, so the
    clean-up that follows (finishing a video, removing temp files) is not cut short."""
    state = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame) -> None:
        if state.signum is None:
            state.signum = signum
            raise Terminated(signum)

    previous = {}
    for number in dict.fromkeys(signals):
        try:
            previous[number] = signal.signal(number, handler)
        except (ValueError, OSError):  # not settable here
            pass
    try:
        yield state
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
