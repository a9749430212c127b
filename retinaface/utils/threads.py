"""How many threads the compute libraries use for a block of code: PyTorch's intra-op pool and OpenCV's
parallel loops, each set for the body and restored afterwards (both are process-wide settings); and whether
onnxruntime's idle worker threads spin between calls (per calling thread)."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import torch


@contextlib.contextmanager
def _threads(count: int | None, get: Callable[[], int], set_: Callable[[int], None]) -> Iterator[None]:
    previous = get() if count is not None else None
    if count is None or count == previous:
        yield
        return
    set_(count)
    try:
        yield
    finally:
        set_(previous)


def torch_threads(count: int | None) -> contextlib.AbstractContextManager[None]:
    """Run the body with ``count`` PyTorch intra-op threads (``None``: as they are), then restore the caller's."""
    return _threads(count, torch.get_num_threads, torch.set_num_threads)


def opencv_threads(count: int | None) -> contextlib.AbstractContextManager[None]:
    """Run the body with OpenCV's parallel loops on ``count`` threads (``None``: as they are), then restore
    the previous count."""
    if count is None:
        return contextlib.nullcontext()
    import cv2

    return _threads(count, cv2.getNumThreads, cv2.setNumThreads)


ONNXRUNTIME_SPINNING: contextvars.ContextVar[bool | None] = contextvars.ContextVar("onnxruntime_spinning", default=None)
"""Whether onnxruntime calls made in this thread use sessions whose idle worker threads spin (``None``: each
model's own setting); read by :class:`~retinaface.export.onnx.OnnxRetinaFace` at every call."""


@contextlib.contextmanager
def onnxruntime_spinning(enabled: bool | None) -> Iterator[None]:
    """Run the body with onnxruntime's idle worker threads spinning between calls (``True``, onnxruntime's
    default: the fastest calls back to back on otherwise idle cores) or sleeping (``False``: what pipelines
    with decoding, drawing or encoding threads beside the network want, as spinning threads hold the cores
    those threads need); ``None``: each model's own setting. Applies to the calling thread."""
    token = ONNXRUNTIME_SPINNING.set(enabled)
    try:
        yield
    finally:
        ONNXRUNTIME_SPINNING.reset(token)
