"""Every kind of input as a source of frames: an image, an animation, a folder (or this process's share of it), a video, a camera."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError
from ..media.images import IMAGE_EXTENSIONS, as_bgr_uint8, frame_durations_ms, is_animated, list_images, read_image, read_image_frames
from ..media.prefetch import prefetch_images
from ..media.video import VIDEO_EXTENSIONS, VideoSource
from ..utils.distributed import Shard

MAX_CAMERA_INDEX = 9999


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


@dataclass
class Frame:
    """One picture to detect in: ``image`` (``ndarray[H, W, 3]`` uint8 BGR, upright), named in the JSON record
    by ``key`` (the file, or the video's name) and ``index`` (its place in a sequence; 0 for stills)."""

    key: str
    index: int
    image: np.ndarray


class Source:
    """Frames in the order their records are written; an input that cannot be read comes as its :class:`InputError`.

    ``fps`` is set for sequences (videos, cameras, animations): their frames are tracked, one tracker per
    source. ``skips_failures``: an unreadable file or a failed detection is skipped and counted instead of
    ending the run (folders). ``inputs`` are the files an output must never replace.
    """

    kind: str
    name: str
    fps: float | None = None
    total: int | None = None
    """Frames or images to come (the progress bar's end), ``None`` if unknown."""
    unit: str = "frame"
    shows_progress: bool = True
    skips_failures: bool = False
    inputs: list[Path]

    def frames(self) -> Iterator[Frame | InputError]:
        raise NotImplementedError

    def warnings(self, frames: int, interrupted: bool) -> list[str]:
        """Sentences about what was read differently from what the input announced, after ``frames`` frames."""
        return []

    def nothing_read(self) -> str:
        """The sentence for a run that found no readable frame."""
        return f"nothing could be read from {self.name}"

    def close(self) -> None:
        pass


class ImageSource(Source):
    """One still image (read upright at once, so that an unreadable file is refused before any output exists)."""

    kind, total, shows_progress = "image", 1, False

    def __init__(self, path: str) -> None:
        self.name, self.inputs = path, [Path(path)]
        self.image = read_image(path)

    def frames(self) -> Iterator[Frame | InputError]:
        yield Frame(self.name, 0, self.image)


class AnimationSource(Source):
    """Every frame of an animated GIF/WebP, a sequence at the rate of its frame duration."""

    kind = "animation"

    def __init__(self, path: str) -> None:
        self.name, self.inputs = path, [Path(path)]
        try:
            self.images = [as_bgr_uint8(frame) for frame in read_image_frames(path)]
        except ValueError as exc:
            raise InputError(str(exc)) from None
        self.duration_ms = frame_durations_ms(path)
        self.fps, self.total = 1000.0 / self.duration_ms, len(self.images)

    def frames(self) -> Iterator[Frame | InputError]:
        for index, image in enumerate(self.images):
            yield Frame(self.name, index, image)


class VideoFrames(Source):
    """A video file or a camera (``int`` index), decoded frame by frame; opened at once (refused if unreadable)."""

    def __init__(self, source: str | int) -> None:
        self.kind = "camera" if isinstance(source, int) else "video"
        self.video = VideoSource(source)
        self.name, self.inputs = self.video.name, [] if isinstance(source, int) else [Path(source)]
        self.audio_from = None if isinstance(source, int) else source
        self.fps, self.total = self.video.fps, self.video.frame_count

    def frames(self) -> Iterator[Frame | InputError]:
        for index, image in enumerate(self.video):
            yield Frame(self.name, index, image)

    def warnings(self, frames: int, interrupted: bool) -> list[str]:
        announced = self.video.frame_count
        if announced and not interrupted and frames < announced - 1:
            return [f"{self.name} announces {announced} frames but only {frames} could be decoded (damaged or truncated file?)"]
        return []

    def close(self) -> None:
        self.video.close()


class FolderSource(Source):
    """The images of a folder in name order, or under torchrun this process's share of them (``shard``);
    ``decode_workers`` threads decode ahead of the network (0: one after the other). Unreadable files are
    skipped."""

    kind, unit, skips_failures = "folder", "img", True

    def __init__(self, folder: str, shard: Shard, *, decode_workers: int = 2, ahead: int = 8) -> None:
        self.name, self.folder = folder, Path(folder)
        self.paths = list_images(folder)
        self.inputs = list(self.paths)
        self.todo = shard.select(self.paths)
        self.shows_progress = shard.is_main
        self.decode_workers, self.ahead = decode_workers, ahead
        self.total = len(self.todo)

    def leave_out(self, done: set[str]) -> None:
        """Skip the images whose records an earlier run wrote (``done``: their paths as strings)."""
        self.todo = [path for path in self.todo if str(path) not in done]
        self.total = len(self.todo)

    def frames(self) -> Iterator[Frame | InputError]:
        if self.decode_workers > 0:
            stream = prefetch_images(self.todo, read_image, workers=self.decode_workers, ahead=self.ahead)
        else:
            stream = ((path, _read_or_error(path)) for path in self.todo)
        try:
            for path, image in stream:
                yield image if isinstance(image, InputError) else Frame(str(path), 0, image)
        finally:
            stream.close()  # stops the decoding threads when the run ends early

    def nothing_read(self) -> str:
        return f"none of the {len(self.paths)} images in {self.folder} could be read"


def _read_or_error(path: Path) -> np.ndarray | InputError:
    try:
        return read_image(path)
    except InputError as exc:
        return exc


def open_source(source: str, kind: str, *, shard: Shard = Shard(), decode_workers: int = 2, ahead: int = 8) -> Source:
    """The source for ``source`` of ``kind`` (:func:`classify_source`), its input checked: ``InputError`` if
    it cannot be read. ``ahead``: images a folder decodes ahead of the network."""
    if kind == "folder":
        return FolderSource(source, shard, decode_workers=decode_workers, ahead=ahead)
    if kind in ("video", "camera"):
        return VideoFrames(int(source) if kind == "camera" else source)
    return AnimationSource(source) if is_animated(source) else ImageSource(source)
