"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], *, runs: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` untimed calls (robust on noisy machines)."""
    return interleaved_median_seconds({"fn": fn}, runs=runs, rounds=1, warmup=warmup)["fn"]


def interleaved_median_seconds(
    fns: dict[str, Callable[[], object]], *, runs: int, rounds: int = 5, warmup: int = 3
) -> dict[str, float]:
    """Median wall time per ``fns`` entry over ``runs`` calls, timed in ``rounds`` alternating blocks.

    On a shared machine the background load drifts over seconds; alternating short blocks gives every
    path the same mix of quiet and busy periods, so their ratios are fairer than back-to-back medians.
    Each block starts with ``warmup`` untimed calls (thread pools of the previous path wind down).
    """
    per_block = max(1, -(-runs // rounds))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(per_block):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: float(np.median(times)) for name, times in samples.items()}
