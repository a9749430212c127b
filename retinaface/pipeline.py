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
    AtomicVideoWriter,
    InputError,
    VideoSource,
    check_writable,
    list_images,
    read_image,
    write_image,
)
from .tracking import IouTracker

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


def frame_record(source: str, frame: int, image: np.ndarray, faces: Sequence[Face], *, include_mesh: bool) -> dict:
    """One JSON Lines record: ``{"source", "frame", "width", "height", "faces": [...]}``."""
    return {
        "source": source,
        "frame": frame,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "faces": [face.to_dict(include_mesh=include_mesh) for face in faces],
    }


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
) -> DetectSummary:
    """Detect faces in ``source`` and write the annotated copy (unless ``draw`` is false) and JSON Lines.

    With ``include_mesh`` the JSON carries each face's mesh coefficients (and decoded vertices when the
    detector decodes meshes), and the annotated copy shows the rendered meshes.

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
    if kind == "image":
        inputs: object = read_image(source)
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
        if draw:
            write_image(out_path, _annotate(detector, inputs, faces, include_mesh))
        records = AtomicJsonLines(json_out)
        records.write(frame_record(source, 0, inputs, faces, include_mesh=include_mesh))
        records.close()
        summary.frames, summary.faces = 1, len(faces)
    elif kind == "folder":
        _run_folder(detector, inputs, Path(source), out_path, json_out, draw, batch_size, include_mesh, progress, summary)
    else:
        _run_video(detector, inputs, out_path, json_out, draw, batch_size, include_mesh, progress, summary)
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
        if kind in ("video", "camera") and output.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"video output {output} needs a video extension such as .mp4 or .avi")
        if kind == "image" and output.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"image output {output} needs an image extension such as .jpg or .png")
    check_writable(json_out)


def _run_folder(detector, paths, folder, out_dir, json_out, draw, batch_size, include_mesh, progress, summary) -> None:
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
                if draw:
                    write_image(out_dir / path.name, _annotate(detector, image, faces, include_mesh))
                records.write(frame_record(str(path), 0, image, faces, include_mesh=include_mesh))
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


def _run_video(detector, video, out_path, json_out, draw, batch_size, include_mesh, progress, summary) -> None:
    """Decode (reader thread), detect (this thread) and draw + encode + record (writer thread) overlapped."""
    try:
        writer = AtomicVideoWriter(out_path, fps=video.fps, size=(video.width, video.height)) if draw else None
    except InputError:
        video.close()
        raise
    records = AtomicJsonLines(json_out)
    bar = tqdm(total=video.frame_count, unit="frame", disable=not progress, desc="detect", file=sys.stderr)
    decoded: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
    detected: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
    stop = threading.Event()
    end = object()
    tracker = IouTracker()  # track ids in the JSON; per-track warm starts for the mesh path

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
                if writer is not None:
                    writer.write(_annotate(detector, frame, faces, include_mesh))
                records.write(frame_record(video.name, summary.frames, frame, faces, include_mesh=include_mesh))
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
    if failure is not None:
        if writer is not None:
            writer.discard()
        records.discard()
        raise failure
    if writer is not None:
        writer.close()
    records.close()
