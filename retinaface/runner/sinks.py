"""Every output of a run as a sink of frames: annotated image, folder, animation or video, and JSON Lines (atomic or part files).

A sink gets each frame's picture and record in order (:meth:`Sink.write`) and is then concluded once, like a
:class:`~retinaface.outputs.atomic.TempFileOutput`: either :meth:`Sink.finish` then :meth:`Sink.publish`
(complete outputs appear under their final names), or :meth:`Sink.discard` (previous files kept); a run that
stops early says so first (:meth:`Sink.stop_early`). Crops are written by the face workflow, frame by frame.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from ..errors import InputError, OutputError
from ..media.images import IMAGE_EXTENSIONS
from ..media.video import VIDEO_EXTENSIONS
from ..outputs.atomic import AtomicJsonLines, check_writable, encodable_path, write_image
from ..outputs.guards import refuse_same_folder
from ..outputs.records import ResumableJsonLines, claim_results_folder
from ..outputs.video import open_video_writer, write_animation
from ..utils.distributed import Shard, wait_for_all
from .sources import AnimationSource, Frame, Source, VideoFrames


class Sink:
    """One output: every frame's ``picture`` (annotated, ``ndarray[H, W, 3]`` BGR; ``None`` when not drawing)
    and ``record`` (the frame's JSON object), in order. ``warnings``: sentences for the run's summary."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def targets(path: Path, source: Source) -> list[Path]:
        """The files this output will write for ``source`` (checked against the inputs before any work)."""
        return [path]

    @staticmethod
    def check(path: Path) -> None:
        """``InputError`` unless the output can be created at ``path`` (folders are created as needed)."""

    def stop_early(self) -> None:
        """The run stopped before the input's end (Ctrl+C): the output is to hold the frames done so far."""

    def finish(self) -> None:
        """Complete the output; :class:`OutputError` (or :class:`InputError`: nothing to write) if it cannot be."""

    def publish(self) -> None:
        """Move the finished output under its final name."""

    def discard(self) -> None:
        """Drop what was written; the previous file, if any, stays."""


# --- annotated media ------------------------------------------------------------------------------------

class AnnotatedImage(Sink):
    """The annotated copy of one image, written (atomically) once the JSON is complete."""

    def __init__(self, path: Path, source: Source) -> None:
        super().__init__()
        self.path, self.picture = path, None

    @staticmethod
    def check(path: Path) -> None:
        """``InputError`` unless ``path`` can hold the annotated copy (its folder is created if needed)."""
        check_writable(path)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"image output {path} needs an image extension such as .jpg or .png")
        if encodable_path(path) != path:
            raise InputError(f"image output {path}: {path.suffix} cannot hold a colour image; use .png or .jpg")

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        self.picture = picture

    def finish(self) -> None:
        write_image(self.path, self.picture)


class AnnotatedAnimation(Sink):
    """An animated GIF/WebP of the annotated frames, at the input's frame duration, written once complete."""

    def __init__(self, path: Path, source: AnimationSource) -> None:
        super().__init__()
        self.path, self.duration_ms, self.pictures = path, source.duration_ms, []

    @staticmethod
    def check(path: Path) -> None:
        check_writable(path)
        if path.suffix.lower() not in (".gif", ".webp"):
            raise InputError(f"animated output {path} needs the extension .gif or .webp")

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        self.pictures.append(picture)

    def finish(self) -> None:
        write_animation(self.path, self.pictures, duration_ms=self.duration_ms)


class AnnotatedVideo(Sink):
    """The annotated video (H.264 with the input's audio when PyAV has libx264), encoded frame by frame into a
    temp file that replaces ``path`` when published."""

    def __init__(self, path: Path, source: VideoFrames) -> None:
        super().__init__()
        self.path, self.size = path, (source.video.width, source.video.height)
        self.writer = open_video_writer(path, fps=source.fps, size=self.size, audio_from=source.audio_from)

    @staticmethod
    def check(path: Path) -> None:
        check_writable(path)
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"video output {path} needs a video extension such as .mp4 or .avi")

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        self.writer.write(picture)

    def finish(self) -> None:
        self.writer.finish()
        if self.writer.resized:
            width, height = self.size
            self.warnings.append(
                f"{self.writer.resized} frames differ in size from the first ({width}x{height}); they were scaled to it in "
                f"{self.path} (the JSON gives each frame's own size and coordinates)"
            )

    def publish(self) -> None:
        self.writer.publish()

    def discard(self) -> None:
        self.writer.discard()


class AnnotatedFolder(Sink):
    """A folder of annotated copies, each written (atomically) as soon as its image is done, under the image's
    name (``.png`` added for formats that cannot hold colour). One that cannot be encoded is a warning."""

    def __init__(self, path: Path, source: Source) -> None:
        super().__init__()
        self.path = path

    @staticmethod
    def targets(path: Path, source: Source) -> list[Path]:
        refuse_same_folder("--output", path, Path(source.name))
        return [path / encodable_path(image.name) for image in source.inputs]

    @staticmethod
    def check(path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise InputError(f"cannot write output folder {path}: a file with that name exists")
        check_writable(path / ".probe")

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        target = self.path / encodable_path(Path(frame.key).name)
        try:
            write_image(target, picture)
        except OutputError:
            raise
        except InputError as exc:  # a format OpenCV reads but cannot write
            self.warnings.append(f"no annotated copy of {frame.key}: {exc}")
            tqdm.write(f"warning: no annotated copy of {frame.key}: {exc}", file=sys.stderr)


ANNOTATED: dict[str, type[Sink]] = {
    "image": AnnotatedImage, "animation": AnnotatedAnimation, "folder": AnnotatedFolder, "video": AnnotatedVideo, "camera": AnnotatedVideo,
}
"""The annotated output of each kind of source."""


# --- JSON Lines -----------------------------------------------------------------------------------------

class JsonLinesSink(Sink):
    """The run's records, one JSON object per line. ``published``: whether this process wrote the final file."""

    published = False


class AtomicJsonLinesSink(JsonLinesSink):
    """Records streamed to a temp file that replaces ``path`` when published (all or nothing); a run that
    wrote no record fails with ``InputError(empty)`` instead (every input unreadable)."""

    def __init__(self, path: Path, empty: str) -> None:
        super().__init__()
        self.records, self.empty = AtomicJsonLines(path), empty

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        self.records.write(record)

    def finish(self) -> None:
        self.records.finish()
        if self.records.records == 0:
            raise InputError(self.empty)

    def publish(self) -> None:
        self.records.publish()
        self.published = True

    def discard(self) -> None:
        self.records.discard()


RESUME_ADVICE = "rerun with the same options to continue, or without --resume to start over"


class PartFilesSink(JsonLinesSink):
    """Records appended to this process's part file (``<json>.parts/rank<r>.jsonl``), kept when the run stops
    early for a resume; once every process is done, rank 0 merges them into ``path`` in ``order``.

    Opening claims the part files (:func:`~retinaface.outputs.records.claim_results_folder`): a resumed run
    (``resume``) continues only from parts made with the same ``settings``; a fresh one clears them. Every
    process then waits for the others, so that no process appends to parts that are still being cleared.
    """

    def __init__(self, path: Path, shard: Shard, order: list[str], empty: str, *, settings: Mapping[str, Any], resume: bool) -> None:
        super().__init__()
        self.records, self.shard, self.order, self.empty = ResumableJsonLines(path, shard), shard, order, empty
        self.interrupted = False
        parts = self.records.parts_dir
        claim_results_folder(
            parts, settings, reuse=resume, holds_results=resume and self.records.holds_records(),
            name=f"{parts} (the part files of --json {path})", what="records", otherwise=RESUME_ADVICE, write=shard.is_main,
        )
        if not resume and shard.is_main:
            self.records.clear_parts()
        wait_for_all(shard)
        self.done = self.records.done() if resume else set()
        if resume and not self.done:
            self.warnings.append(f"nothing to resume in {parts} (no records yet): started from the first image")

    def write(self, frame: Frame, picture: np.ndarray | None, record: dict[str, Any]) -> None:
        self.records.write(record)

    def stop_early(self) -> None:
        self.interrupted = True

    def finish(self) -> None:
        """Stopped early: keep the parts for a resume. Otherwise rank 0 merges every process's parts once all
        are done (``InputError(empty)`` if they hold no record)."""
        self.records.close_part()
        if self.interrupted:
            self._kept()
            return
        wait_for_all(self.shard)
        if self.shard.is_main:
            self.published = True
            if self.records.merge(self.order) == 0:
                raise InputError(self.empty)

    def discard(self) -> None:
        self.records.close_part()  # the parts are kept on purpose: a rerun with resume continues from them
        self._kept()

    def _kept(self) -> None:
        if self.records.parts_dir.is_dir():
            self.warnings.append(f"records kept in {self.records.parts_dir}; rerun the same command with --resume to continue")
