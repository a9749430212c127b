"""Run a command's ``main(argv)`` inside the test process, answering like ``subprocess.run(..., text=True)``.

Starting ``python scripts/X.py`` costs seconds of importing torch and loading weights per call; most CLI tests
check what the command writes, prints and returns, which does not need a process of its own. :func:`run_cli`
gives them the same view a subprocess would:

- ``returncode``: what ``main`` returns, or the code of a ``SystemExit`` (argparse refusals, ``--help``),
  with ``SystemExit("message")`` printing its message and giving 1 as the interpreter does; any other
  exception propagates (an uncaught crash fails the test with its traceback, where a subprocess would give 1
  and a traceback on stderr);
- ``stdout`` and ``stderr``: what Python code prints (``print``, tqdm, warnings shown as in a fresh
  interpreter, i.e. with the interpreter's default warning filters, not pytest's), followed by whatever C
  libraries write to file descriptors 1 and 2 during the call;
- the working folder, ``os.environ``, torch's thread count, signal handlers and the global random number
  generators (``random``, numpy, torch) are restored afterwards, so one command cannot change the next test.

What needs a real process stays one in the tests: signals, resource limits, torchrun, the installed console
command, the import-blocking checks, and one ``python scripts/X.py`` run per script (its wrapper).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

# What a fresh interpreter starts with (no -W options, no PYTHONWARNINGS), in order.
_DEFAULT_WARNING_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)
_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None), getattr(signal, "SIGPIPE", None)) if s is not None)


@contextlib.contextmanager
def _fd_captured(fd: int) -> Iterator[Callable[[], str]]:
    """Point file descriptor ``fd`` at a temp file for the block; yields a function returning what was written."""
    sys.stdout.flush() if fd == 1 else sys.stderr.flush()
    saved = os.dup(fd)
    sink = tempfile.TemporaryFile()
    written: list[str] = []
    try:
        os.dup2(sink.fileno(), fd)
        yield lambda: "".join(written)
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        sink.seek(0)
        written.append(sink.read().decode(errors="replace"))
        sink.close()


@contextlib.contextmanager
def _restored_state(cwd: str | os.PathLike | None, env: dict[str, str] | None) -> Iterator[None]:
    import numpy as np
    import torch

    saved_cwd = os.getcwd()
    saved_env = dict(os.environ)
    saved_threads = torch.get_num_threads()
    saved_handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    saved_rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        if dict(os.environ) != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
        for number, handler in saved_handlers.items():
            if handler is not None:
                signal.signal(number, handler)
        random.setstate(saved_rng[0])
        np.random.set_state(saved_rng[1])
        torch.set_rng_state(saved_rng[2])


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of a fresh interpreter: the (possibly replaced) ``formatwarning`` on stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_cli(main: Callable[[list[str] | None], int | None], *args, cwd: str | os.PathLike | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``main([str(a) for a in args])`` in this process (see the module docstring); ``cwd`` and ``env`` as
    for ``subprocess.run``, restored afterwards."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_restored_state(cwd, env))
        native_out = stack.enter_context(_fd_captured(1))
        native_err = stack.enter_context(_fd_captured(2))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(warnings.catch_warnings())
        warnings.resetwarnings()
        for action, category, module in _DEFAULT_WARNING_FILTERS:
            warnings.filterwarnings(action, category=category, module=module, append=True)
        warnings.showwarning = _show_warning
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        code = 0 if code is None else code
    return subprocess.CompletedProcess([getattr(main, "__module__", "main"), *argv], code,
                                       out.getvalue() + native_out(), err.getvalue() + native_err())


REPO = Path(__file__).resolve().parent.parent


@functools.cache
def script_main(script: str) -> Callable[[list[str] | None], int | None]:
    """The ``main`` of ``scripts/<script>`` (a file, not a package), loaded once as module ``scripts_<stem>``."""
    path = REPO / "scripts" / script
    spec = importlib.util.spec_from_file_location(f"scripts_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_script(script: str, *args, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``python scripts/<script> ARGS`` as a real process: for what needs one (the wrapper itself, signals, ...)."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
