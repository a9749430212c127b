"""Folders at the network's speed: images decoded ahead in threads, batched with images of similar size."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import InputError

T = TypeVar("T")


def prefetch_images(
    paths: Iterable[Path], read: Callable[[Path], np.ndarray], *, workers: int = 2, ahead: int = 8
) -> Iterator[tuple[Path, np.ndarray | InputError]]:
    """Yield ``(path, image)`` in the order of ``paths`` while up to ``ahead`` later images are decoded by
    ``workers`` threads (OpenCV and Pillow decode without holding the GIL). An unreadable image yields its
    :class:`InputError` in place of the image; any other error is raised. Memory stays bounded by ``ahead``.
    """
    iterator = iter(paths)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: deque[tuple[Path, Future]] = deque((path, pool.submit(read, path)) for path in islice(iterator, max(1, ahead)))
    try:
        while pending:
            path, future = pending.popleft()
            following = next(iterator, None)
            if following is not None:
                pending.append((following, pool.submit(read, following)))
            try:
                yield path, future.result()
            except InputError as exc:
                yield path, exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def in_size_groups(images: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices of ``images`` grouped into batches of at most ``batch_size`` images of similar size
    (sorted by height, then width), so that padding to the batch's largest image wastes little work."""
    order = sorted(range(len(images)), key=lambda i: (images[i].shape[0], images[i].shape[1]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def detect_in_size_groups(detect_batch: Callable[[list[np.ndarray]], list[T]], images: Sequence[np.ndarray], batch_size: int) -> list[T]:
    """``detect_batch`` over ``images`` in batches of similar sizes; results come back in the images' order."""
    results: list[T | None] = [None] * len(images)
    for group in in_size_groups(images, batch_size):
        for index, result in zip(group, detect_batch([images[i] for i in group])):
            results[index] = result
    return results  # type: ignore[return-value]
