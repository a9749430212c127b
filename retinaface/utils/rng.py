"""Random-number helpers: library code draws from explicit generators or a forked global state."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with PyTorch's global CPU generator seeded to ``seed`` and restore the caller's state after.

    For code that can only draw from the global generator (module initialisers, torchvision's random
    transforms): its draws are fixed by ``seed`` and the caller's random stream is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
