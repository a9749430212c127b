"""Decoding ahead keeps order and errors; size groups keep results in the images' order."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from retinaface.errors import InputError
from retinaface.media.prefetch import detect_in_size_groups, in_size_groups, prefetch_images


def test_prefetch_keeps_order_reports_unreadable_and_bounds_lookahead():
    started: list[str] = []
    lock = threading.Lock()

    def read(path: Path) -> np.ndarray:
        with lock:
            started.append(path.name)
        if path.name == "bad":
            raise InputError("bad is not an image")
        return np.full((2, 2, 3), int(path.name), np.uint8)

    paths = [Path(str(i)) for i in range(6)] + [Path("bad"), Path("7")]
    stream = prefetch_images(paths, read, workers=2, ahead=3)
    first_path, first = next(stream)
    assert first_path == Path("0") and first[0, 0, 0] == 0
    assert len(started) <= 4  # the first image and at most 3 ahead
    rest = list(stream)
    assert [p.name for p, _ in rest] == ["1", "2", "3", "4", "5", "bad", "7"]
    assert isinstance(rest[5][1], InputError)
    assert rest[6][1][0, 0, 0] == 7


def test_size_groups_batch_similar_sizes_and_restore_order():
    sizes = [(480, 640), (1080, 1920), (480, 640), (1080, 1920), (720, 1280)]
    images = [np.zeros((h, w, 3), np.uint8) for h, w in sizes]
    groups = in_size_groups(images, 2)
    assert groups == [[0, 2], [4, 1], [3]]
    seen_batches = []

    def detect(batch):
        seen_batches.append([im.shape[:2] for im in batch])
        return [im.shape[:2] for im in batch]

    assert detect_in_size_groups(detect, images, 2) == sizes
    assert seen_batches[0] == [(480, 640), (480, 640)]
