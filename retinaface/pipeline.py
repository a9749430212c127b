"""Running a detector over an image, a folder, a video or a camera, writing annotated media and JSON Lines."""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from .detector import Detector, Face
from .drawing import draw_faces
from .io import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    AtomicJsonLines,
    InputError,
    VideoSource,
    check_writable,
    list_images,
    read_image,
    write_image,
)
from .media import is_animated, open_video_writer
from .workflow import FaceWorkflow

T = TypeVar("T")
VIDEO_MAX_SIZE = 640
"""Default detection size (long side, pixels) for videos and cameras in ``detect.py``: real-time on CPUs."""


@dataclass
class DetectSummary:
    """What a run did: counts, timing and the files it wrote."""

    kind: str
    frames: int = 0
    faces: int = 0
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    output: Path | None = None
    json_path: Path | None = None

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def classify_source(source: str) -> str:
    """``"camera"`` (an integer index), ``"folder"``, ``"video"`` or ``"image"``; ``InputError`` if missing."""
    path = Path(source)
    if source.isdigit() and not path.exists():
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
    return Path(f"{path.stem}_faces{path.suffix}")


def default_json(output: Path, kind: str) -> Path:
    """JSON Lines path belonging to an annotated output."""
    return output / "detections.jsonl" if kind == "folder" else output.with_suffix(".jsonl")


def _annotate(detector: Detector, image: np.ndarray, faces: Sequence[Face], include_mesh: bool) -> np.ndarray:
    if include_mesh and getattr(detector.model, "mesh_branch", None) is not None:
        from .mesh_overlay import draw_meshes

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
    workflow: FaceWorkflow | None = None,
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
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    kind = classify_source(source)
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
    try:
        _check_outputs(kind, out_path if draw else None, json_out)
    except InputError:
        if isinstance(inputs, VideoSource):
            inputs.close()
        raise

    start = time.perf_counter()
    if kind == "image":
        faces = detector(inputs)
        if workflow is not None:
            workflow.begin(sequence=False)
        picture, record = _finish_frame(detector, workflow, source, 0, inputs, faces, include_mesh, draw)
        if draw:
            write_image(out_path, picture)
        records = AtomicJsonLines(json_out)
        records.write(record)
        records.close()
        summary.frames, summary.faces = 1, len(faces)
    elif kind == "animation":
        _run_animation(detector, workflow, source, inputs, out_path, json_out, draw, batch_size, include_mesh, summary)
    elif kind == "folder":
        _run_folder(detector, inputs, Path(source), out_path, json_out, draw, batch_size, include_mesh, progress, summary, workflow)
    else:
        audio = None if kind == "camera" else source
        _run_video(detector, inputs, out_path, json_out, draw, batch_size, include_mesh, progress, summary, workflow, audio)
    summary.seconds = time.perf_counter() - start
    return summary


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
    check_writable(json_out)


def _read_animation(source: str) -> list[np.ndarray]:
    from .io import as_bgr_uint8
    from .media import read_image_frames

    try:
        return [as_bgr_uint8(frame) for frame in read_image_frames(source)]
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _run_animation(detector, workflow, source, frames, out_path, json_out, draw, batch_size, include_mesh, summary) -> None:
    """Every frame of an animated GIF/WebP: one record each, tracked like a video, written as an animation."""
    from .media import frame_durations_ms, write_animation

    duration = frame_durations_ms(source)
    if workflow is not None:
        workflow.begin(sequence=True, fps=1000.0 / duration)
    pictures, records = [], AtomicJsonLines(json_out)
    try:
        faces_per_frame = (faces for batch in _batches(frames, batch_size) for faces in detector.detect_batch(batch))
        for index, faces in enumerate(faces_per_frame):
            picture, record = _finish_frame(detector, workflow, source, index, frames[index], faces, include_mesh, draw)
            pictures.append(picture)
            records.write(record)
            summary.frames += 1
            summary.faces += len(faces)
        if draw:
            write_animation(out_path, pictures, duration_ms=duration)
    except BaseException:
        records.discard()
        raise
    records.close()


def _run_folder(detector, paths, folder, out_dir, json_out, draw, batch_size, include_mesh, progress, summary, workflow=None) -> None:
    records = AtomicJsonLines(json_out)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="detect", file=sys.stderr)
    try:
        for batch_paths in _batches(paths, batch_size):
            loaded = []
            for path in batch_paths:
                try:
                    loaded.append((path, read_image(path)))
                except InputError as exc:
                    summary.skipped.append(str(exc))
                    tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
            faces_per_image = detector.detect_batch([image for _, image in loaded]) if loaded else []
            for (path, image), faces in zip(loaded, faces_per_image):
                if workflow is not None:
                    workflow.begin(sequence=False)
                picture, record = _finish_frame(detector, workflow, str(path), 0, image, faces, include_mesh, draw)
                if draw:
                    write_image(out_dir / path.name, picture)
                records.write(record)
                summary.frames += 1
                summary.faces += len(faces)
            bar.update(len(batch_paths))
    except KeyboardInterrupt:
        summary.interrupted = True
    except BaseException:
        records.discard()
        raise
    finally:
        bar.close()
    records.close()
    if summary.frames == 0 and not summary.interrupted:
        json_out.unlink(missing_ok=True)
        raise InputError(f"none of the {len(paths)} images in {folder} could be read")


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
    if workflow is not None:
        workflow.begin(sequence=True, fps=video.fps)
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
            if not _put(detected, (frames, detector.detect_batch(frames)), consumer=output):
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
    if failure is not None:
        if writer is not None:
            writer.discard()
        records.discard()
        raise failure
    if writer is not None:
        writer.close()
    records.close()
