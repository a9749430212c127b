"""JSON Lines that survive interruption, and the one rule for resuming a folder of earlier results.

Resumable outputs (``detect``'s part files, the WIDER benchmark's prediction folder) record the settings that
produced them in ``settings.json`` beside their results; :func:`claim_results_folder` lets a later run reuse
those results only when its own settings are the same. Part files are one per process, resumed and merged in
input order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InputError
from ..utils.distributed import Shard
from .atomic import atomic_write

SETTINGS_FILE = "settings.json"
"""The settings of the run whose results a resumable folder holds: one JSON object."""


def _as_json(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as they read back from JSON (tuples become lists, paths strings), for comparing."""
    return json.loads(json.dumps(dict(settings), default=str))


def _differences(stored: object, settings: dict[str, Any]) -> str:
    """What differs, for the error sentence: ``flip=False there, flip=True now; ...``."""
    if not isinstance(stored, dict):
        return "its settings cannot be read"
    keys = [key for key in sorted(set(stored) | set(settings)) if stored.get(key) != settings.get(key)]
    return "; ".join(f"{key}={json.dumps(stored.get(key))} there, {key}={json.dumps(settings.get(key))} now" for key in keys)


def claim_results_folder(
    folder: str | os.PathLike, settings: Mapping[str, Any], *, reuse: bool, holds_results: bool, name: str, what: str,
    otherwise: str, write: bool = True,
) -> None:
    """The folder-resume rule, for every resumable output: reuse earlier results only if made with ``settings``.

    ``folder`` holds earlier results (``holds_results``) and ``<folder>/settings.json``, the settings that made
    them. With ``reuse`` (a resumed run) the stored settings must equal ``settings`` (compared as JSON);
    otherwise, or if results exist without a settings file (unknown origin), :class:`InputError` says so in one
    sentence naming the folder (``name``, e.g. ``"--predictions pred"``), the results (``what``) and what to do
    instead (``otherwise``, e.g. ``"choose another folder, or --overwrite to redo them all"``). Without
    ``reuse`` the earlier results are the caller's to redo. Then ``settings`` is recorded, atomically, unless
    ``write`` is false (the other processes of a torchrun run, where rank 0 writes).
    """
    folder = Path(folder)
    path = folder / SETTINGS_FILE
    current = _as_json(settings)
    if reuse and path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            stored = None
        if stored != current:
            raise InputError(f"{name} holds {what} made with other settings ({path}: {_differences(stored, current)}); {otherwise}")
    elif reuse and holds_results:
        raise InputError(f"{name} holds {what} of unknown origin (no {SETTINGS_FILE}); {otherwise}")
    if write:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8"))


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

    ``<json>.parts/rank<r>.jsonl`` holds the records process ``r`` wrote, one flushed line per input, and
    ``<json>.parts/settings.json`` the settings that made them (:func:`claim_results_folder`). Records are keyed
    by their ``key`` field (the input's path). A record in any part file counts as done, so a rerun, with any
    number of processes, redoes only what is missing. The final file is an output, never read back: its
    settings are not recorded once the parts are merged and removed.
    """

    def __init__(self, path: str | os.PathLike, shard: Shard, *, key: str = "source") -> None:
        self.path = Path(path)
        self.shard = shard
        self.key = key
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self._handle = None

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("rank*.jsonl"))

    def _earlier_records(self) -> list[dict[str, Any]]:
        return [record for file in self._parts() for record in _read_records(file)]

    def holds_records(self) -> bool:
        """Whether any part file holds something (cheap: file sizes only)."""
        return any(part.stat().st_size > 0 for part in self._parts())

    def done(self) -> set[str]:
        """Keys of the inputs whose records were written by this or an earlier run."""
        return {str(record[self.key]) for record in self._earlier_records() if self.key in record}

    def clear_parts(self) -> None:
        """Remove the part files of an earlier run (a fresh, not resumed, run starts from nothing)."""
        for part in self._parts():
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
        the part files, their settings last (a merge cut short leaves parts that a resume still accepts). Call
        on one process after all have closed their parts. Returns the record count."""
        self.close_part()
        by_key: dict[str, dict[str, Any]] = {}
        for record in self._earlier_records():
            by_key.setdefault(str(record.get(self.key)), record)  # the first copy wins: reruns never duplicate
        position = {str(key): index for index, key in enumerate(order)}
        records = sorted((r for k, r in by_key.items() if k in position), key=lambda r: position[str(r[self.key])])
        text = "".join(json.dumps(record) + "\n" for record in records)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        for part in [*self._parts(), self.parts_dir / SETTINGS_FILE]:
            part.unlink(missing_ok=True)
        try:
            self.parts_dir.rmdir()
        except OSError:
            pass  # something else was put there: leave it
        return len(records)
