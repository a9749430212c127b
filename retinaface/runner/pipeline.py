"""Running a detector over an image, a folder, a video or a camera: the outputs checked and locked, then the one loop.

:func:`run_detect` opens the input as a source (:mod:`.sources`), refuses outputs that would replace an input
or that another run is writing, opens the sinks (:mod:`.sinks`) and runs the loop (:class:`.loop.DetectLoop`).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import InputError
from ..faces.workflow import FaceWorkflow
from ..inference.detector import FaceDetector
from ..outputs.atomic import check_writable, encodable_path
from ..outputs.guards import locked_outputs, refuse_overwriting_inputs
from ..utils.distributed import Shard
from .loop import DetectLoop, DetectSummary, frame_record
from .sinks import ANNOTATED, AtomicJsonLinesSink, JsonLinesSink, PartFilesSink
from .sources import FolderSource, Source, classify_source, open_source

__all__ = ["VIDEO_MAX_SIZE", "DetectOptions", "DetectSummary", "classify_source", "detect", "frame_record", "run_detect"]

VIDEO_MAX_SIZE = 640
"""Default detection size (long side, pixels) for videos and cameras in ``detect.py``: real-time on CPUs."""


def default_output(source: str, kind: str) -> Path:
    """Annotated output written to the current folder: ``<name>_faces<ext>`` (``.mp4`` for cameras)."""
    if kind == "camera":
        return Path(f"camera{source}_faces.mp4")
    path = Path(source)
    if kind == "folder":
        return Path(f"{path.resolve().name}_faces")
    return encodable_path(f"{path.stem}_faces{path.suffix}")


def default_json(output: Path, kind: str) -> Path:
    """JSON Lines path belonging to an annotated output."""
    return output / "detections.jsonl" if kind == "folder" else output.with_suffix(".jsonl")


@dataclass(frozen=True)
class DetectOptions:
    """Everything :func:`run_detect` takes besides the detector and the input (same names and defaults), plus
    ``settings``: what made the records (weights, thresholds, views, ...; JSON-able), recorded with resumable
    part files so that a resume continues only from records made the same way."""

    output: str | Path | None = None
    json_path: str | Path | None = None
    draw: bool = True
    batch_size: int = 1
    include_mesh: bool = False
    progress: bool = True
    protected: Iterable[str | Path] = ()
    workflow: FaceWorkflow | None = None
    decode_workers: int = 2
    resume: bool = False
    shard: Shard | None = None
    overlap_stages: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)


def run_detect(
    detector: FaceDetector,
    source: str,
    *,
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    draw: bool = True,
    batch_size: int = 1,
    include_mesh: bool = False,
    progress: bool = True,
    protected: Iterable[str | Path] = (),
    workflow: FaceWorkflow | None = None,
    decode_workers: int = 2,
    resume: bool = False,
    shard: Shard | None = None,
    overlap_stages: bool = True,
) -> DetectSummary:
    """Detect faces in ``source`` and write the annotated copy (unless ``draw`` is false) and JSON Lines.

    With ``include_mesh`` the JSON carries each face's mesh coefficients (and decoded vertices when the
    detector decodes meshes), and the annotated copy shows the rendered meshes.

    ``workflow`` adds track ids, smoothing, aligned crops or anonymisation (the written picture is then the
    anonymised frame). Still images are read upright (EXIF orientation); animated GIF/WebP give one record
    per frame and an animated output. Videos are written as H.264 with the input's audio when PyAV is
    installed.

    Outputs appear under their final names only when complete. Ctrl+C stops early but still closes the
    outputs with the frames done so far (``summary.interrupted``).

    Folders: ``decode_workers`` threads decode images ahead of the network (0: one after the other) and
    batches hold images of similar sizes. ``resume`` keeps the records of an earlier, interrupted run of the
    same folder (``<json>.parts/``) and detects only the images still missing. ``shard`` (from
    :func:`retinaface.utils.distributed.current_shard` under ``torchrun``) makes this process detect its share
    of the images; rank 0 then merges every process's records in folder order, so the JSON Lines equal a
    single-process run's. ``overlap_stages`` runs the tracking and mesh fits of frame t in a thread of their own
    while the network and the refiner look at frame t+1, with half the PyTorch threads each when meshes are
    fitted (the same records either way; off: one after the other, for comparisons). Part files record the settings that made them: here an empty description, so the
    caller vouches that a resumed run uses the same detector (``detect`` with :class:`DetectOptions`
    ``settings`` checks it, as the command does).

    Before any work: ``InputError`` if an output is an input (or one of the ``protected`` files, e.g. the
    weights) or another run holds a lock on an output. A failed write raises :class:`OutputError` and
    keeps the previous files.
    """
    options = DetectOptions(
        output=output, json_path=json_path, draw=draw, batch_size=batch_size, include_mesh=include_mesh, progress=progress,
        protected=protected, workflow=workflow, decode_workers=decode_workers, resume=resume, shard=shard,
        overlap_stages=overlap_stages,
    )
    return detect(detector, source, options)


def detect(detector: FaceDetector, source: str, options: DetectOptions) -> DetectSummary:
    """:func:`run_detect` with its arguments in ``options`` (and the settings that made the records)."""
    if options.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {options.batch_size}")
    shard = options.shard or Shard()
    kind = classify_source(source)
    if shard.distributed and kind != "folder":
        raise InputError("several processes (torchrun) split a folder of images; give a folder as the input")
    out_path = Path(options.output) if options.output is not None else default_output(source, kind)
    json_out = Path(options.json_path) if options.json_path is not None else default_json(out_path, kind)
    # The input is read (or opened) before anything is created, so a bad input leaves no empty outputs behind.
    opened = open_source(source, kind, shard=shard, decode_workers=options.decode_workers, ahead=max(8, 2 * options.batch_size))
    annotated = ANNOTATED[opened.kind] if options.draw else None
    summary = DetectSummary(kind=opened.kind, output=out_path if annotated else None, json_path=json_out)
    with ExitStack() as cleanup:
        cleanup.callback(opened.close)
        targets = annotated.targets(out_path, opened) if annotated else []
        refuse_overwriting_inputs([*(("--output", t) for t in targets), ("--json", json_out)], [*opened.inputs, *map(Path, options.protected)])
        if annotated:
            annotated.check(out_path)
        check_writable(json_out)
        if shard.is_main:  # one lock per run: the other processes of a torchrun run write only their own files
            cleanup.enter_context(locked_outputs(out_path if annotated else None, json_out))

        start = time.perf_counter()
        records = _records_sink(opened, json_out, shard, options)
        try:
            media = annotated(out_path, opened) if annotated else None
        except BaseException:
            records.discard()
            raise
        DetectLoop(
            detector, opened, records, media, summary, batch_size=options.batch_size, include_mesh=options.include_mesh,
            workflow=options.workflow, progress=options.progress, overlap_stages=options.overlap_stages,
        ).run()
        summary.seconds = time.perf_counter() - start
    return summary


def _records_sink(source: Source, path: Path, shard: Shard, options: DetectOptions) -> JsonLinesSink:
    """Part files for a folder that is resumed or split over processes (its finished images left out of the
    source); one atomic JSON Lines file otherwise."""
    if not (isinstance(source, FolderSource) and (options.resume or shard.distributed)):
        return AtomicJsonLinesSink(path, source.nothing_read())
    parts = PartFilesSink(path, shard, [str(p) for p in source.paths], source.nothing_read(), settings=options.settings, resume=options.resume)
    source.leave_out(parts.done)
    return parts

