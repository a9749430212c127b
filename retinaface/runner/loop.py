"""The one detect loop: a source's frames in batches through the detector, each frame's faces into every sink.

Four threads overlap the work: a reader takes frames from the source (decoding); this thread runs the network
(:meth:`FaceDetector.find`) and the landmark refiner, which need nothing but the frame; a stager tracks the
faces and fits their meshes frame by frame in order, each fit starting from the same track's fit in the
previous frame (:meth:`~retinaface.inference.stages.FaceStages.track_and_fit`); and a writer runs the face
workflow, draws, builds the JSON record and hands both to the sinks (encoding). The network's pass over frame
t+1 thus overlaps the mesh fits of frame t, and the stages see the same faces in the same order as
:meth:`FaceDetector.detect_batch`, so the records are the same. At most a few batches wait between threads,
so memory stays bounded on long videos. Ctrl+C (or SIGTERM) stops the reader and detection; the stager and the
writer finish what was detected, and the sinks keep those frames.
"""

from __future__ import annotations

import queue
import sys
import threading
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import InputError
from ..outputs.atomic import publish_together
from ..faces.drawing import draw_faces
from ..faces.face import Face
from ..faces.tracking import IouTracker
from ..faces.workflow import FaceWorkflow
from ..inference.detector import FaceDetector
from ..media.prefetch import in_size_groups
from ..utils.threads import onnxruntime_spinning, opencv_threads, torch_threads
from .sinks import JsonLinesSink, Sink
from .sources import Frame, Source

QUEUE_BATCHES = 3
"""Batches in flight between the threads: bounds memory on long videos."""


@dataclass
class DetectSummary:
    """What a run did: counts, timing and the files it wrote."""

    kind: str
    frames: int = 0
    faces: int = 0
    skipped: list[str] = field(default_factory=list)
    """One sentence per input file that could not be read (the run went on without it)."""
    warnings: list[str] = field(default_factory=list)
    """Things done differently from what was asked (e.g. frames scaled after a size change)."""
    interrupted: bool = False
    seconds: float = 0.0
    output: Path | None = None
    json_path: Path | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def frame_record(
    source: str, frame: int, image: np.ndarray, faces: Sequence[Face], *, include_mesh: bool, extras: Sequence[dict] | None = None
) -> dict:
    """One JSON Lines record: ``{"source", "frame", "width", "height", "faces": [...]}`` (width and height of
    the upright frame the coordinates refer to); ``extras`` adds fields to each face (e.g. ``crop``)."""
    return {
        "source": source,
        "frame": frame,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "faces": [{**face.to_dict(include_mesh=include_mesh), **(extra or {})} for face, extra in zip(faces, extras or [{}] * len(faces))],
    }


@dataclass
class Batch:
    """Frames read together (one network batch, or for stills a window of a few batches of similar sizes),
    their faces once detected, and one sentence per input left out (unreadable, or its detection failed)."""

    frames: list[Frame]
    skipped: list[str] = field(default_factory=list)
    faces: list[list[Face]] = field(default_factory=list)


class DetectLoop:
    """The loop over one source: :meth:`run` detects in every frame and writes each into ``media`` (the
    annotated copy, if any) then ``records``, counting into ``summary``, then concludes the sinks.

    Sequences get one tracker (track ids, smoothing and mesh warm starts follow the same faces) and are
    detected in order, ``batch_size`` frames at a time. Stills are read in windows of ``4 * batch_size`` and
    batched by similar size; for sources that skip failures, a batch that fails (e.g. out of memory on one
    huge image) is retried image by image and the images that still fail are skipped and reported.
    """

    def __init__(
        self, detector: FaceDetector, source: Source, records: JsonLinesSink, media: Sink | None, summary: DetectSummary, *,
        batch_size: int = 1, include_mesh: bool = False, workflow: FaceWorkflow | None = None, progress: bool = True,
        overlap_stages: bool = True,
    ) -> None:
        self.detector, self.source, self.records, self.media, self.summary = detector, source, records, media, summary
        self.batch_size, self.include_mesh, self.workflow, self.progress = batch_size, include_mesh, workflow, progress
        self.overlap_stages = overlap_stages
        self.tracker = None
        if source.fps is not None:
            self.tracker = workflow.new_tracker(source.fps) if workflow is not None else IouTracker(fps=source.fps)
        if workflow is not None:
            workflow.begin(sequence=self.tracker is not None, tracker=self.tracker)
        self.window = batch_size if self.tracker is not None or batch_size == 1 else 4 * batch_size
        self.sinks = [sink for sink in (media, records) if sink is not None]  # the record last: it says the frame is done
        self.decoded: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.found: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.detected: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stop = threading.Event()
        self.end = object()

    def run(self) -> None:
        threads = self._threads_while_overlapping()
        # onnxruntime's idle threads sleep: spinning, they would hold the cores the other stages need
        with torch_threads(threads), opencv_threads(threads), onnxruntime_spinning(False):
            self._run()

    def _threads_while_overlapping(self) -> int | None:
        """PyTorch and OpenCV threads for the run (``None``: as they are). While mesh fits overlap detection,
        two threads compute at once: each gets half the threads, as two stages each asking for all the cores
        wait for each other's worker threads (on 2 cores: one thread each; OpenCV's too, for the refiner's
        crops and the drawing: 0.93x the CPU time per frame, docs/speed.md)."""
        if not self.overlap_stages or self.detector.stages.mesh_fitter is None:
            return None
        return max(1, torch.get_num_threads() // 2)

    def _run(self) -> None:
        source, summary = self.source, self.summary
        self.bar = tqdm(total=source.total, unit=source.unit, disable=not self.progress or not source.shows_progress, desc="detect", file=sys.stderr)
        reader, writer = _Worker(self._read, "detect-reader"), _Worker(self._write, "detect-writer")
        stager = _Worker(lambda: self._stage(writer), "detect-stages")
        for worker in (reader, writer, stager):
            worker.start()
        failure: BaseException | None = None
        try:
            while (batch := self.decoded.get()) is not self.end:
                self._detect(batch)
                if not self.overlap_stages:
                    self._run_stages(batch)
                if not _put(self.found, batch, consumer=stager):
                    break  # the stager (or the writer behind it) failed; its error is raised below
        except KeyboardInterrupt:
            summary.interrupted = True
        except BaseException as exc:
            failure = exc
        finally:
            self.stop.set()
            _put(self.found, self.end, consumer=stager)  # the stager and the writer finish what was detected so far
            stager.join()
            writer.join()
            reader.join()
            self.bar.close()
            source.close()
        conclude(source, self.records, self.media, summary, failure or stager.error or writer.error or reader.error)

    def _read(self) -> None:
        """Reader thread: the source's frames in batches of ``window``, inputs it could not read kept as sentences."""
        frames = self.source.frames()
        try:
            while items := list(islice(frames, self.window)):
                batch = Batch([item for item in items if isinstance(item, Frame)], [str(item) for item in items if isinstance(item, InputError)])
                if not _put(self.decoded, batch, self.stop):
                    return
        finally:
            frames.close()  # type: ignore[attr-defined]  # stops a folder's decoding threads
            _put(self.decoded, self.end, self.stop)

    def _find_and_refine(self, images: list[np.ndarray]) -> list[list[Face]]:
        """The network's faces of ``images`` (:meth:`FaceDetector.find`) with refined landmarks: the work on a
        frame that needs no other frame."""
        return self.detector.stages.refine(images, self.detector.find(images))

    def _detect(self, batch: Batch) -> None:
        """Fill ``batch.faces`` with the network's faces and their refined landmarks, before tracking and mesh
        fits: in groups of at most ``batch_size`` frames (a sequence's frames in order, stills by similar
        size); frames whose detection failed and was skipped leave the batch."""
        images = [frame.image for frame in batch.frames]
        groups = [list(range(len(images)))] if self.tracker is not None else in_size_groups(images, self.batch_size)
        found: list[list[Face] | None] = [None] * len(images)
        for group in groups:
            frames = [batch.frames[i] for i in group]
            if self.source.skips_failures:
                faces = _detect_each(self._find_and_refine, frames, batch.skipped)
            else:
                faces = self._find_and_refine([frame.image for frame in frames])
            for index, one in zip(group, faces):
                found[index] = one
        _keep(batch, found)

    def _stage(self, writer: threading.Thread) -> None:
        """Stager thread: tracking, smoothing and mesh fits on every batch's faces, frame by frame in order (a
        track's fit starts from its fit in the previous frame), then on to the writer."""
        try:
            while (batch := self.found.get()) is not self.end:
                if self.overlap_stages:
                    self._run_stages(batch)
                if not _put(self.detected, batch, consumer=writer):
                    return  # the writer failed; its error is raised by the main thread
        finally:
            _put(self.detected, self.end, consumer=writer)

    def _run_stages(self, batch: Batch) -> None:
        """Tracking, smoothing and mesh fits on ``batch.faces``, in place. For sources that skip failures, a
        frame whose fit fails (e.g. out of memory) is skipped and reported like a failed detection."""
        stages = self.detector.stages
        if not self.source.skips_failures:
            stages.track_and_fit([frame.image for frame in batch.frames], batch.faces, tracker=self.tracker)
            return
        staged: list[list[Face] | None] = []
        for frame, faces in zip(batch.frames, batch.faces):
            try:
                staged.append(stages.track_and_fit([frame.image], [faces], tracker=self.tracker)[0])
            except (RuntimeError, MemoryError) as exc:
                batch.skipped.append(f"detection failed on {frame.key}: {_first_line(exc)}")
                staged.append(None)
        _keep(batch, staged)

    def _write(self) -> None:
        """Writer thread: per frame the face workflow, the drawing and the record, into every sink, in order."""
        while (batch := self.detected.get()) is not self.end:
            for message in batch.skipped:
                self.summary.skipped.append(message)
                tqdm.write(f"warning: skipped {message}", file=sys.stderr)
            self.bar.update(len(batch.skipped))
            for frame, faces in zip(batch.frames, batch.faces):
                picture, record = self._finish_frame(frame, faces)
                for sink in self.sinks:
                    sink.write(frame, picture, record)
                self.summary.frames += 1
                self.summary.faces += len(faces)
                self.bar.update(1)

    def _finish_frame(self, frame: Frame, faces: list[Face]) -> tuple[np.ndarray | None, dict[str, Any]]:
        """The face workflow (track ids, crops, anonymisation), then the picture to write (``None`` when no
        sink shows pictures) and the JSON record of one detected frame."""
        extras, picture = None, None
        if self.workflow is not None:
            result = self.workflow.process(frame.key, frame.index, frame.image, faces)
            faces, extras, picture = result.faces, result.extras, result.image
        if self.media is None:
            picture = None
        elif picture is None:
            picture = self._annotate(frame.image, faces)
        return picture, frame_record(frame.key, frame.index, frame.image, faces, include_mesh=self.include_mesh, extras=extras)

    def _annotate(self, image: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        if self.include_mesh:
            from ..faces.mesh_overlay import draw_meshes

            # faces without fitted vertices are decoded from their coefficients where the network has a mesh branch
            image = draw_meshes(image, faces, getattr(self.detector.model, "mesh_branch", None))
        return draw_faces(image, faces)


def _keep(batch: Batch, faces: list[list[Face] | None]) -> None:
    """Keep in ``batch`` the frames whose ``faces`` are not ``None`` (the others were skipped)."""
    kept = [i for i, one in enumerate(faces) if one is not None]
    batch.frames, batch.faces = [batch.frames[i] for i in kept], [faces[i] for i in kept]  # type: ignore[misc]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _detect_each(detect: Callable, frames: list[Frame], skipped: list[str]) -> list[list[Face] | None]:
    """``detect`` (images -> faces per image) on ``frames``; if the batch fails (e.g. out of memory on one huge
    image), retry frame by frame: a frame that still fails gets ``None`` and a sentence in ``skipped``."""
    if not frames:
        return []
    try:
        return list(detect([frame.image for frame in frames]))
    except (RuntimeError, MemoryError) as exc:
        if len(frames) == 1:
            skipped.append(f"detection failed on {frames[0].key}: {_first_line(exc)}")
            return [None]
    return [faces for frame in frames for faces in _detect_each(detect, [frame], skipped)]


def conclude(source: Source, records: JsonLinesSink, media: Sink | None, summary: DetectSummary, failure: BaseException | None) -> None:
    """End the run's sinks together: after a failure (raised again) or an interruption before the first frame,
    discard them all (previous files kept); otherwise finish them all (after an interruption with the frames
    done so far), then publish them all, or none if any cannot be finished. The summary gets every warning."""
    sinks = [sink for sink in (records, media) if sink is not None]  # the records finish first: a full disk shows there
    nothing = failure is None and summary.frames == 0 and summary.interrupted
    if failure is not None or nothing:
        for sink in sinks:
            sink.discard()
        if failure is not None:
            raise failure
    else:
        if summary.interrupted:
            for sink in sinks:
                sink.stop_early()
        publish_together(*sinks)  # type: ignore[arg-type]  # sinks follow TempFileOutput's finish/publish/discard
        summary.warnings += source.warnings(summary.frames, summary.interrupted)
    summary.warnings += [warning for sink in sinks for warning in sink.warnings]
    if not records.published:
        summary.json_path = None
    if nothing:
        summary.output = None


class _Worker(threading.Thread):
    """A thread that keeps the exception that ended it, for the main thread to re-raise."""

    def __init__(self, target, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # re-raised in the main thread
            self.error = exc


def _put(q: queue.Queue, item, stop: threading.Event | None = None, consumer: threading.Thread | None = None) -> bool:
    """Put unless asked to stop or the consumer has died; returns False in those cases."""
    while not (stop is not None and stop.is_set()) and (consumer is None or consumer.is_alive()):
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
