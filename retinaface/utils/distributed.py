"""Work split over ``torchrun`` processes, and JSON Lines that survive interruption and merge deterministically.

Under ``torchrun --nproc_per_node=N`` every process runs the same command. :func:`current_shard` tells a
process which inputs are its own (``inputs[rank::world_size]``, a fixed split of the sorted inputs), each
process appends its records to its own part file, and rank 0 merges the parts in input order once all
processes are done, so the merged JSON Lines equal a single-process run's record for record. Part files
are flushed record by record: a rerun of an interrupted command skips the inputs whose records exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch

from ..errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def select(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every ``world_size``-th item from position ``rank``."""
        return list(items[self.rank :: self.world_size])


def current_shard() -> Shard:
    """The shard described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process otherwise."""
    try:
        rank = int(os.environ.get("RANK", 0))
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise InputError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"RANK={rank} is not within WORLD_SIZE={world_size}")
    return Shard(rank=rank, world_size=world_size, local_rank=local_rank)


def shard_device(shard: Shard, device: str) -> str:
    """The device this process uses: with ``device="auto"`` or ``"cuda"`` under torchrun, ``cuda:<local_rank>``
    (one GPU per process) when CUDA is present; otherwise ``device`` unchanged."""
    if shard.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{shard.local_rank % torch.cuda.device_count()}"
    return device


def start_process_group(shard: Shard, device: str, *, timeout_minutes: float = 120.0) -> None:
    """Join torchrun's process group (NCCL for CUDA devices, gloo on CPUs); nothing to do for one process.

    The generous timeout covers the slowest shard: processes wait for each other only at the end.
    """
    if not shard.distributed or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":  # NCCL collectives (barrier, gathers) run on the current device: this process's own
        torch.cuda.set_device(torch.device(device))
    torch.distributed.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))


def gather_to_main(shard: Shard, value: T) -> list[T] | None:
    """Every process's ``value`` (picklable), in rank order, on rank 0; ``None`` on the others. Also a
    barrier. One process: ``[value]``."""
    if not (shard.distributed and torch.distributed.is_initialized()):
        return [value]
    values: list[Any] = [None] * shard.world_size
    torch.distributed.all_gather_object(values, value)
    return values if shard.is_main else None


def wait_for_all(shard: Shard) -> None:
    """Barrier over all processes (no-op for one process)."""
    if shard.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def end_process_group(shard: Shard) -> None:
    if shard.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


