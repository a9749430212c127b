"""What every command shares: option types checked at parse time, one-line warnings, SIGTERM as Ctrl+C."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from typing import Callable, Iterator

from ..errors import OutputError, RetinaFaceError
from ..utils.signals import Interruption, interrupt_on_termination


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``prog: error: ...``, exit 2), no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def device(text: str) -> str:
    """argparse type: ``auto`` or a device present on this machine."""
    if text == "auto":
        return text
    from ..errors import InputError
    from ..inference.detector import resolve_device

    try:
        resolve_device(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def int_at_least(minimum: int, maximum: int | None = None):
    """argparse type: an integer in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        value = _number(int, text)
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range; expected {minimum}..{maximum}" if maximum is not None else f"{value} is below the minimum {minimum}"
            )
        return value

    return parse


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False):
    """argparse type: a finite number in ``[low, high]`` (the bound left out with ``low_open`` / ``high_open``)."""

    def parse(text: str) -> float:
        value = _number(float, text)
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            raise argparse.ArgumentTypeError(f"{value:g} is outside {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
        return value

    return parse


def os_error(exc: OSError) -> str:
    """``OSError`` as one sentence: ``cannot access PATH: reason``."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot access{where}: {exc.strerror or exc}"


REPORTED_ERRORS = (RetinaFaceError, OSError, MemoryError)
"""What every command reports as one ``error:`` line (:func:`report_error`) instead of a traceback."""


def report_error(exc: BaseException, describe: Callable[[BaseException], str] = str) -> int:
    """Print one of :data:`REPORTED_ERRORS` as ``error: ...`` on stderr and return the exit code: 2 for what
    the user gave (input, options, weights, annotations), 1 for what failed while working (outputs, the
    file system, memory)."""
    if isinstance(exc, MemoryError):
        print("error: out of memory; try smaller inputs or batches", file=sys.stderr)
        return 1
    if isinstance(exc, OSError):  # a file system problem outside the atomic writers (logs, folders)
        print(f"error: {os_error(exc)}", file=sys.stderr)
        return 1
    print(f"error: {describe(exc)}", file=sys.stderr)
    return 1 if isinstance(exc, OutputError) else 2


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


@contextlib.contextmanager
def command_session() -> Iterator[Interruption]:
    """Warnings as one ``warning: ...`` line; SIGTERM/SIGHUP raise a ``KeyboardInterrupt`` like Ctrl+C
    (``.exit_code`` of the yielded object is then 143/129 instead of 130)."""
    saved = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        with interrupt_on_termination() as interruption:
            yield interruption
    except BrokenPipeError:  # stdout closed early (`| head`): the outputs are written, stay quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
    finally:
        warnings.formatwarning = saved
        with contextlib.suppress(Exception):
            sys.stdout.flush()
