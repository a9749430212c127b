"""Running a detector over an image, a folder, a video or a camera, writing annotated media and JSON Lines."""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from contextlib import ExitStack
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from ..inference.detector import Detector
from ..faces.face import Face
from ..faces.drawing import draw_faces
from ..outputs.guards import locked_outputs, refuse_overwriting_inputs, refuse_same_folder
from ..media.images import IMAGE_EXTENSIONS, list_images, read_image
from ..media.video import VIDEO_EXTENSIONS, VideoSource
from ..outputs.atomic import AtomicJsonLines, check_writable, encodable_path, publish_together, write_image
from ..errors import InputError, OutputError
from ..outputs.records import ResumableJsonLines
from ..utils.distributed import Shard, wait_for_all
from ..media.images import is_animated
from ..outputs.video import open_video_writer
from ..media.prefetch import in_size_groups, prefetch_images
from ..faces.workflow import FaceWorkflow
from ..faces.tracking import IouTracker

T = TypeVar("T")
VIDEO_MAX_SIZE = 640
"""Default detection size (long side, pixels) for videos and cameras in ``detect.py``: real-time on CPUs."""
MAX_CAMERA_INDEX = 9999


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


def classify_source(source: str) -> str:
    """``"camera"`` (an integer index), ``"folder"``, ``"video"`` or ``"image"``; ``InputError`` if missing."""
    if not source.strip():
        raise InputError("the input is an empty string; give an image, folder, video or camera index")
    path = Path(source)
    if source.isdigit() and not path.exists():
        if int(source) > MAX_CAMERA_INDEX:
            raise InputError(f"camera index {source} is out of range (0..{MAX_CAMERA_INDEX}), and no file has that name")
        return "camera"
    if not path.exists():
        raise InputError(f"input not found: {source}")
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    raise InputError(
        f"cannot tell what {source} is from its extension {suffix or '(none)'}; "
        f"use an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a video ({', '.join(sorted(VIDEO_EXTENSIONS))})"
    )


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


def _annotate(detector: Detector, image: np.ndarray, faces: Sequence[Face], include_mesh: bool) -> np.ndarray:
    if include_mesh and getattr(detector.model, "mesh_branch", None) is not None:
        from ..faces.mesh_overlay import draw_meshes

        image = draw_meshes(image, faces, detector.model.mesh_branch)
    return draw_faces(image, faces)


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


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


def _finish_frame(detector, workflow, source, frame, image, faces, include_mesh, draw) -> tuple[np.ndarray | None, dict]:
    """The picture to write (``None`` without ``draw``) and the JSON record of one detected frame."""
    extras = None
    picture = None
    if workflow is not None:
        result = workflow.process(source, frame, image, faces)
        faces, extras, picture = result.faces, result.extras, result.image
    if draw and picture is None:
        picture = _annotate(detector, image, faces, include_mesh)
    return (picture if draw else None), frame_record(source, frame, image, faces, include_mesh=include_mesh, extras=extras)


def run_detect(
    detector: Detector,
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
) -> DetectSummary:
    """Detect faces in ``source`` and write the annotated copy (unless ``draw`` is false) and JSON Lines.

    With ``include_mesh`` the JSON carries each face's mesh coefficients (and decoded vertices when the
    detector decodes meshes), and the annotated copy shows the rendered meshes.

    ``workflow`` adds track ids, smoothing, aligned crops or anonymisation (the written picture is then the
    anonymised frame). Still images are read upright (EXIF orientation); animated GIF/WebP give one record
    per frame and an animated output. Videos are written as H.264 with the input's audio when PyAV is
    installed.

    Outputs appear under their final names only when complete. Ctrl+C on a video or folder stops
    early but still closes both outputs with the frames done so far (``summary.interrupted``).

    Folders: ``decode_workers`` threads decode images ahead of the network (0: one after the other) and
    batches hold images of similar sizes. ``resume`` keeps the records of an earlier, interrupted run of the
    same folder and command (``<json>.parts/``) and detects only the images still missing. ``shard`` (from
    :func:`retinaface.distributed.current_shard` under ``torchrun``) makes this process detect its share
    of the images; rank 0 then merges every process's records in folder order, so the JSON Lines equal a
    single-process run's.

    Before any work: ``InputError`` if an output is an input (or one of the ``protected`` files, e.g. the
    weights) or another run holds a lock on an output. A failed write raises :class:`OutputError` and
    keeps the previous files.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    shard = shard or Shard()
    kind = classify_source(source)
    if shard.distributed and kind != "folder":
        raise InputError("several processes (torchrun) split a folder of images; give a folder as the input")
    out_path = Path(output) if output is not None else default_output(source, kind)
    json_out = Path(json_path) if json_path is not None else default_json(out_path, kind)
    summary = DetectSummary(kind=kind, output=out_path if draw else None, json_path=json_out)

    # Validate the input before creating anything, so a bad input leaves no empty outputs behind.
    if kind == "image" and is_animated(source):
        kind = summary.kind = "animation"
        inputs: object = _read_animation(source)
    elif kind == "image":
        inputs = read_image(source)
    elif kind == "folder":
        inputs = list_images(source)
    else:
        inputs = VideoSource(int(source) if kind == "camera" else source)
    with ExitStack() as cleanup:
        if isinstance(inputs, VideoSource):
            cleanup.callback(inputs.close)
        _refuse_overwriting(kind, source, inputs, out_path if draw else None, json_out, protected)
        _check_outputs(kind, out_path if draw else None, json_out)
        if shard.is_main:  # one lock per run: the other processes of a torchrun run write only their own files
            cleanup.enter_context(locked_outputs(out_path if draw else None, json_out))

        start = time.perf_counter()
        if kind == "image":
            faces = detector(inputs)
            if workflow is not None:
                workflow.begin(sequence=False)
            picture, record = _finish_frame(detector, workflow, source, 0, inputs, faces, include_mesh, draw)
            records = AtomicJsonLines(json_out)
            try:
                records.write(record)
                records.finish()
                if draw:
                    write_image(out_path, picture)
            except BaseException:
                records.discard()
                raise
            records.publish()
            summary.frames, summary.faces = 1, len(faces)
        elif kind == "animation":
            _run_animation(detector, workflow, source, inputs, out_path, json_out, draw, batch_size, include_mesh, summary)
        elif kind == "folder":
            folder_run = FolderRun(decode_workers=decode_workers, resume=resume, shard=shard)
            _run_folder(detector, inputs, Path(source), out_path, json_out, draw, batch_size, include_mesh, progress, summary, workflow, folder_run)
        else:
            audio = None if kind == "camera" else source
            _run_video(detector, inputs, out_path, json_out, draw, batch_size, include_mesh, progress, summary, workflow, audio)
        summary.seconds = time.perf_counter() - start
    return summary


def _refuse_overwriting(kind: str, source: str, inputs, output: Path | None, json_out: Path, protected) -> None:
    """``InputError`` if an output would replace the input, one of the folder's images or a protected file."""
    protected = [Path(p) for p in protected]
    if kind == "folder":
        folder = Path(source)
        outputs = [("--json", json_out)]
        if output is not None:
            refuse_same_folder("--output", output, folder)
            outputs += [("--output", output / encodable_path(path.name)) for path in inputs]
        refuse_overwriting_inputs(outputs, [*inputs, *protected])
    else:
        sources = [Path(source)] if kind != "camera" else []
        refuse_overwriting_inputs([("--output", output), ("--json", json_out)], [*sources, *protected])


def _check_outputs(kind: str, output: Path | None, json_out: Path) -> None:
    """``InputError`` unless the outputs can be created (folders are created as needed)."""
    if output is not None and kind == "folder":
        if output.exists() and not output.is_dir():
            raise InputError(f"cannot write output folder {output}: a file with that name exists")
        check_writable(output / ".probe")
    elif output is not None:
        check_writable(output)
        if kind == "animation" and output.suffix.lower() not in (".gif", ".webp"):
            raise InputError(f"animated output {output} needs the extension .gif or .webp")
        if kind in ("video", "camera") and output.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"video output {output} needs a video extension such as .mp4 or .avi")
        if kind == "image" and output.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"image output {output} needs an image extension such as .jpg or .png")
        if kind == "image" and encodable_path(output) != output:
            raise InputError(f"image output {output}: {output.suffix} cannot hold a colour image; use .png or .jpg")
    check_writable(json_out)


def _read_animation(source: str) -> list[np.ndarray]:
    from ..media.images import as_bgr_uint8
    from ..media.images import read_image_frames

    try:
        return [as_bgr_uint8(frame) for frame in read_image_frames(source)]
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _run_animation(detector, workflow, source, frames, out_path, json_out, draw, batch_size, include_mesh, summary) -> None:
    """Every frame of an animated GIF/WebP: one record each, tracked like a video, written as an animation."""
    from ..media.images import frame_durations_ms
    from ..outputs.video import write_animation

    duration = frame_durations_ms(source)
    # one tracker per animation, as for videos: track ids, smoothing and mesh warm starts follow the same faces
    fps = 1000.0 / duration
    tracker = workflow.new_tracker(fps) if workflow is not None else IouTracker(fps=fps)
    if workflow is not None:
        workflow.begin(sequence=True, tracker=tracker)
    pictures, records = [], AtomicJsonLines(json_out)
    try:
        faces_per_frame = (faces for batch in _batches(frames, batch_size) for faces in detector.detect_batch(batch, tracker=tracker))
        for index, faces in enumerate(faces_per_frame):
            picture, record = _finish_frame(detector, workflow, source, index, frames[index], faces, include_mesh, draw)
            pictures.append(picture)
            records.write(record)
            summary.frames += 1
            summary.faces += len(faces)
        records.finish()
        if draw:
            write_animation(out_path, pictures, duration_ms=duration)
    except BaseException:
        records.discard()
        raise
    records.publish()


@dataclass(frozen=True)
class FolderRun:
    """How a folder is worked through: decoding threads, resuming, and this process's share (torchrun)."""

    decode_workers: int = 2
    resume: bool = False
    shard: Shard = field(default_factory=Shard)


def _read_or_error(path: Path) -> np.ndarray | InputError:
    try:
        return read_image(path)
    except InputError as exc:
        return exc


def _run_folder(detector, paths, folder, out_dir, json_out, draw, batch_size, include_mesh, progress, summary, workflow=None,
                run: FolderRun = FolderRun()) -> None:
    """Unreadable files are skipped and counted; an image whose annotated copy cannot be encoded keeps its
    JSON record. A failed write (disk full) stops the run and keeps the previous JSON."""
    parts = run.resume or run.shard.distributed
    records: AtomicJsonLines | ResumableJsonLines
    if parts:
        records = ResumableJsonLines(json_out, run.shard, resume=run.resume)
        if not run.resume and run.shard.is_main:
            records.clear_parts()
        wait_for_all(run.shard)
        done = records.done() if run.resume else set()
        todo = [path for path in run.shard.select(paths) if str(path) not in done]
    else:
        records = AtomicJsonLines(json_out)
        todo = list(paths)
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not run.shard.is_main, desc="detect", file=sys.stderr)
    if run.decode_workers > 0:
        stream = prefetch_images(todo, read_image, workers=run.decode_workers, ahead=max(8, 2 * batch_size))
    else:
        stream = ((path, _read_or_error(path)) for path in todo)
    # Batches are formed inside windows of a few batches, from images of similar sizes (less padding).
    window_size = batch_size * 4 if batch_size > 1 else 1
    try:
        for window in _batches(stream, window_size):
            loaded = []
            for path, image in window:
                if isinstance(image, InputError):
                    summary.skipped.append(str(image))
                    tqdm.write(f"warning: skipped {image}", file=sys.stderr)
                else:
                    loaded.append((path, image))
            found: dict[Path, list[Face]] = {}
            for group in in_size_groups([image for _, image in loaded], batch_size):
                kept, faces_per_image = _detect_each(detector, [loaded[i] for i in group], summary)
                found.update((path, faces) for (path, _), faces in zip(kept, faces_per_image))
            for path, image in loaded:
                if path not in found:
                    continue
                faces = found[path]
                if workflow is not None:
                    workflow.begin(sequence=False)
                picture, record = _finish_frame(detector, workflow, str(path), 0, image, faces, include_mesh, draw)
                if draw:
                    try:
                        write_image(out_dir / encodable_path(path.name), picture)
                    except OutputError:
                        raise
                    except InputError as exc:  # a format OpenCV reads but cannot write
                        summary.warnings.append(f"no annotated copy of {path}: {exc}")
                        tqdm.write(f"warning: no annotated copy of {path}: {exc}", file=sys.stderr)
                records.write(record)
                summary.frames += 1
                summary.faces += len(faces)
            bar.update(len(window))
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        if not parts:
            records.discard()  # part files are kept on purpose: a rerun with resume continues from them
        raise
    finally:
        bar.close()
    if parts:
        _finish_parts(records, paths, folder, run, summary)
        return
    if summary.frames == 0 and not summary.interrupted:
        records.discard()
        raise InputError(f"none of the {len(paths)} images in {folder} could be read")
    if summary.frames == 0:
        records.discard()
        summary.json_path = summary.output = None
        return
    records.close()


def _finish_parts(records: ResumableJsonLines, paths, folder, run: FolderRun, summary: DetectSummary) -> None:
    """Interrupted: keep the part files for a resume. Otherwise rank 0 merges every process's part files in
    folder order once all processes are done; the others report what they did."""
    records.close_part()
    if summary.interrupted:
        summary.json_path = None
        summary.warnings.append(f"records kept in {records.parts_dir}; rerun the same command with --resume to continue")
        return
    wait_for_all(run.shard)
    if not run.shard.is_main:
        summary.json_path = None
        return
    merged = records.merge(str(path) for path in paths)
    if merged == 0:
        summary.json_path = None
        raise InputError(f"none of the {len(paths)} images in {folder} could be read")


def _detect_each(detector, loaded: list, summary: DetectSummary) -> tuple[list, list]:
    """Detect on a batch of ``(path, image)``; if the batch fails (e.g. out of memory on one huge image),
    retry image by image and skip, count and report the ones that still fail."""
    if not loaded:
        return [], []
    try:
        return loaded, detector.detect_batch([image for _, image in loaded])
    except (RuntimeError, MemoryError) as exc:
        if len(loaded) == 1:
            message = f"detection failed on {loaded[0][0]}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            summary.skipped.append(message)
            tqdm.write(f"warning: skipped {message}", file=sys.stderr)
            return [], []
    kept, faces = [], []
    for item in loaded:
        one, found = _detect_each(detector, [item], summary)
        kept += one
        faces += found
    return kept, faces


_QUEUE_BATCHES = 3  # batches in flight between threads: bounds memory on long videos


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


def _run_video(detector, video, out_path, json_out, draw, batch_size, include_mesh, progress, summary, workflow=None, audio=None) -> None:
    """Decode (reader thread), detect (this thread) and draw + encode + record (writer thread) overlapped."""
    try:
        writer = open_video_writer(out_path, fps=video.fps, size=(video.width, video.height), audio_from=audio) if draw else None
    except BaseException:
        video.close()
        raise
    # One tracker per video: track ids in the JSON, per-track warm starts for the mesh fits, and the
    # detector's smoothing and the workflow's anonymisation all follow the same faces.
    tracker = workflow.new_tracker(video.fps) if workflow is not None else IouTracker(fps=video.fps)
    if workflow is not None:
        workflow.begin(sequence=True, tracker=tracker)
    records = AtomicJsonLines(json_out)
    bar = tqdm(total=video.frame_count, unit="frame", disable=not progress, desc="detect", file=sys.stderr)
    decoded: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
    detected: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
    stop = threading.Event()
    end = object()

    def read() -> None:
        try:
            for frames in _batches(video, batch_size):
                if not _put(decoded, frames, stop):
                    return
        finally:
            _put(decoded, end, stop)

    def write() -> None:
        while (item := detected.get()) is not end:
            frames, faces_per_frame = item
            for frame, faces in zip(frames, faces_per_frame):
                picture, record = _finish_frame(detector, workflow, video.name, summary.frames, frame, faces, include_mesh, draw)
                if writer is not None:
                    writer.write(picture)
                records.write(record)
                summary.frames += 1
                summary.faces += len(faces)
            bar.update(len(frames))

    reader, output = _Worker(read, "video-reader"), _Worker(write, "video-writer")
    reader.start()
    output.start()
    failure: BaseException | None = None
    try:
        while (frames := decoded.get()) is not end:
            if not _put(detected, (frames, detector.detect_batch(frames, tracker=tracker)), consumer=output):
                break  # the writer failed; its error is raised below
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException as exc:
        failure = exc
    finally:
        stop.set()
        _put(detected, end, consumer=output)  # the writer finishes what was detected so far
        output.join()
        reader.join()
        bar.close()
        video.close()
    failure = failure or output.error or reader.error
    if failure is None and summary.frames == 0:  # interrupted before the first frame: nothing to keep
        summary.output = summary.json_path = None
    if failure is not None or summary.frames == 0:
        if writer is not None:
            writer.discard()
        records.discard()
        if failure is not None:
            raise failure
        return
    if video.frame_count and not summary.interrupted and summary.frames < video.frame_count - 1:
        summary.warnings.append(
            f"{video.name} announces {video.frame_count} frames but only {summary.frames} could be decoded (damaged or truncated file?)"
        )
    if writer is not None and writer.resized:
        summary.warnings.append(
            f"{writer.resized} frames differ in size from the first ({video.width}x{video.height}); they were scaled to it in "
            f"{out_path} (the JSON gives each frame's own size and coordinates)"
        )
    publish_together(writer, records)
