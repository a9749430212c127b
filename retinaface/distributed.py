"""Work split over ``torchrun`` processes, and JSON Lines that survive interruption and merge deterministically.

Under ``torchrun --nproc_per_node=N`` every process runs the same command. :func:`current_shard` tells a
process which inputs are its own (``inputs[rank::world_size]``, a fixed split of the sorted inputs), each
process appends its records to its own part file, and rank 0 merges the parts in input order once all
processes are done, so the merged JSON Lines equal a single-process run's record for record. Part files
are flushed record by record: a rerun of an interrupted command skips the inputs whose records exist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import torch

from .io import InputError, atomic_write

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


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Complete records of a JSON Lines file; a last line cut short by an interruption is dropped."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # written up to a crash: its input is redone
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{path} is not a JSON Lines file of this program; move it away or pick another --json") from None
    return records


class ResumableJsonLines:
    """Per-process part files beside the final JSON Lines file, merged in input order by :meth:`merge`.

    ``<json>.parts/rank<r>.jsonl`` holds the records process ``r`` wrote, one flushed line per input. Records
    are keyed by their ``key`` field (the input's path). A record already in the final file or in any part
    file counts as done, so a rerun, with any number of processes, redoes only what is missing.
    ``resume=False`` (a fresh run) ignores the records of an earlier final file.
    """

    def __init__(self, path: str | os.PathLike, shard: Shard, *, key: str = "source", resume: bool = True) -> None:
        self.path = Path(path)
        self.resume = resume
        self.shard = shard
        self.key = key
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self._handle = None

    def _earlier_records(self) -> list[dict[str, Any]]:
        earlier_final = [self.path] if self.resume and self.path.is_file() else []  # a fresh run replaces it
        files = earlier_final + sorted(self.parts_dir.glob("rank*.jsonl"))
        return [record for file in files for record in _read_records(file)]

    def done(self) -> set[str]:
        """Keys of the inputs whose records were written by this or an earlier run."""
        return {str(record[self.key]) for record in self._earlier_records() if self.key in record}

    def clear_parts(self) -> None:
        """Remove the part files of an earlier run (a fresh, not resumed, run starts from nothing)."""
        for part in self.parts_dir.glob("rank*.jsonl"):
            part.unlink()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record to this process's part file, flushed so that an interruption keeps it."""
        if self._handle is None:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            part = self.parts_dir / f"rank{self.shard.rank}.jsonl"
            if part.is_file():  # drop a last line cut short by an interruption before appending after it
                data = part.read_bytes()
                with open(part, "r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
            self._handle = open(part, "a", encoding="utf-8")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close_part(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def merge(self, order: Iterable[str]) -> int:
        """Write the final file (atomically) with one record per key, in the order of ``order``, and remove
        the part files. Call on one process after all have closed their parts. Returns the record count."""
        self.close_part()
        by_key: dict[str, dict[str, Any]] = {}
        for record in self._earlier_records():
            by_key.setdefault(str(record.get(self.key)), record)  # the first copy wins: reruns never duplicate
        position = {str(key): index for index, key in enumerate(order)}
        records = sorted((r for k, r in by_key.items() if k in position), key=lambda r: position[str(r[self.key])])
        text = "".join(json.dumps(record) + "\n" for record in records)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        for part in self.parts_dir.glob("rank*.jsonl"):
            part.unlink()
        try:
            self.parts_dir.rmdir()
        except OSError:
            pass  # something else was put there: leave it
        return len(records)
