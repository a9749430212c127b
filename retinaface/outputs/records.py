"""JSON Lines that survive interruption: one part file per process, resumed and merged in input order."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError
from ..utils.distributed import Shard
from .atomic import atomic_write


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
