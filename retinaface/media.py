"""Media the way phones and browsers store it: EXIF orientation, HEIC/HEIF, animated GIF/WebP, and
H.264 MP4 output that keeps the input's audio (PyAV, whose wheels ship FFmpeg with libx264).

OpenCV stays the fast path for plain images and for decoding videos (its FFmpeg backend already turns
frames upright by the stream's display matrix, ``CAP_PROP_ORIENTATION_AUTO``); Pillow, with the
``pillow-heif`` plug-in, reads what OpenCV cannot.
"""

from __future__ import annotations

import os
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .io import OutputError, TempFileOutput, _drop_temp, _sync, _temp_path_for, _write_failed

EXIF_ORIENTATION_TAG = 0x0112
PILLOW_EXTENSIONS = {".gif", ".heic", ".heif", ".avif"}
"""Still-image formats decoded through Pillow (OpenCV's wheels lack HEIF and read one GIF frame)."""
ANIMATED_EXTENSIONS = {".gif", ".webp"}
H264_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv"}
"""Outputs written as H.264 (the containers browsers and players accept it in)."""
MP4_AUDIO_COPY = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}
"""Audio codecs copied as they are into MP4/MOV/MKV; anything else is re-encoded to AAC."""


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:  # HEIC stays unsupported; read_image_frames says so in one sentence
        return
    pillow_heif.register_heif_opener()


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation tag (1-8) of an image file, 1 when absent or unreadable.

    Reads only the file's header (Pillow opens lazily), so it costs little next to decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Only the header is read, so Pillow's decompression-bomb warning about the pixel count is moot.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1  # beyond 179 megapixels Pillow refuses even the header: such images are read as stored
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_exif_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image as stored (``ndarray[H, W, ...]``) into the upright frame its EXIF ``orientation`` asks
    for: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
    counter-clockwise (the TIFF/EXIF 2.3 definitions); 1 or unknown values return ``image`` unchanged."""
    if orientation == 2:
        return np.ascontiguousarray(image[:, ::-1])
    if orientation == 3:
        return np.ascontiguousarray(image[::-1, ::-1])
    if orientation == 4:
        return np.ascontiguousarray(image[::-1])
    if orientation == 5:
        return np.ascontiguousarray(np.swapaxes(image, 0, 1))
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return np.ascontiguousarray(np.swapaxes(image, 0, 1)[::-1, ::-1])
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def _pil_to_array(frame) -> np.ndarray:
    """Pillow image -> ``ndarray`` in OpenCV channel order (BGR/BGRA, or gray), before ``as_bgr_uint8``."""
    if frame.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(frame.convert("I;16"), dtype=np.uint16)
    if frame.mode == "L":
        return np.asarray(frame)
    has_alpha = frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info)
    array = np.asarray(frame.convert("RGBA" if has_alpha else "RGB"))
    return cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA if has_alpha else cv2.COLOR_RGB2BGR)


def read_image_frames(path: str | os.PathLike, *, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode an image file with Pillow into its frames, upright, each ``ndarray[H, W, C]`` (BGR/BGRA or gray,
    uint8/uint16): one frame for stills (HEIC/HEIF included), every frame of an animated GIF/WebP.

    Raises ``ValueError`` with one sentence when the file cannot be decoded.
    """
    from PIL import Image, ImageSequence, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() in (".heic", ".heif", ".avif"):
        _register_heif()
    try:
        with Image.open(path) as image:
            orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            frames = []
            for frame in ImageSequence.Iterator(image):
                frames.append(apply_exif_orientation(_pil_to_array(frame), orientation))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except UnidentifiedImageError:
        hint = " (install pillow-heif for HEIC/HEIF)" if path.suffix.lower() in (".heic", ".heif") else ""
        raise ValueError(f"cannot decode {path} as an image (corrupt or not an image file){hint}") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{path} has more pixels than Pillow decodes safely (Image.MAX_IMAGE_PIXELS)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(f"cannot decode {path} as an image ({str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    return frames


def is_animated(path: str | os.PathLike) -> bool:
    """Whether an image file holds more than one frame (animated GIF/WebP)."""
    if Path(path).suffix.lower() not in ANIMATED_EXTENSIONS:
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:  # undecodable: the regular reader reports it
        return False


def write_animation(path: str | os.PathLike, frames: list[np.ndarray], *, duration_ms: int = 100) -> None:
    """Write BGR frames as an animated GIF/WebP (by ``path``'s extension), atomically."""
    from PIL import Image

    from .io import atomic_write

    pictures = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
    fmt = "GIF" if Path(path).suffix.lower() == ".gif" else "WEBP"

    def write(tmp: Path) -> None:
        pictures[0].save(tmp, format=fmt, save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)

    atomic_write(path, write)


def frame_durations_ms(path: str | os.PathLike) -> int:
    """Display time of an animation's first frame, milliseconds (100 when not recorded)."""
    from PIL import Image

    with Image.open(path) as image:
        return int(image.info.get("duration") or 100)


def h264_available() -> bool:
    """Whether PyAV with an H.264 encoder (libx264) is installed."""
    try:
        import av
        av.codec.Codec("libx264", "w")
    except Exception:  # ImportError, or a PyAV build without the encoder
        return False
    return True


class H264VideoWriter(TempFileOutput):
    """Write BGR frames as H.264 (``yuv420p``, browser-playable) and copy the audio of ``audio_from``.

    The file appears under its final name only on :meth:`close`. Audio packets are muxed as video
    advances, so the file is interleaved; on close the audio is cut at the video's end (an interrupted
    run keeps the audio of the frames it wrote). Odd frame sizes are padded by one edge pixel, as
    4:2:0 chroma needs even sizes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float,
        size: tuple[int, int],
        audio_from: str | os.PathLike | None = None,
        crf: int = 20,
        preset: str = "superfast",
    ) -> None:
        import av

        self.path = Path(path)
        self._tmp = _temp_path_for(self.path)
        self.frames = 0
        self.resized = 0
        self._finished = False
        self._size = size
        self._rate = Fraction(fps).limit_denominator(1001)
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        self._out = av.open(str(self._tmp), "w", options=options)
        try:
            stream = self._out.add_stream("libx264", rate=self._rate)
            stream.width, stream.height = size[0] + size[0] % 2, size[1] + size[1] % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            self._video = stream
            self._audio_in = self._audio_out = self._audio_packets = self._pending = None
            if audio_from is not None:
                self._open_audio(Path(audio_from))
        except BaseException:
            self.discard()
            raise

    def _open_audio(self, source: Path) -> None:
        import av

        try:
            container = av.open(str(source))
        except av.FFmpegError:
            return
        if not container.streams.audio:
            container.close()
            return
        audio = container.streams.audio[0]
        self._audio_in = container
        video_start = container.streams.video[0].start_time if container.streams.video else None
        video_tb = container.streams.video[0].time_base if container.streams.video else None
        self._offset = float(video_start * video_tb) if video_start is not None and video_tb else 0.0
        if audio.codec_context.name in MP4_AUDIO_COPY:
            self._audio_out = self._out.add_stream_from_template(audio)
            self._audio_packets = self._copied_packets(container, audio)
        else:
            self._audio_out = self._out.add_stream("aac", rate=audio.codec_context.sample_rate or 48000)
            self._audio_packets = self._encoded_packets(container, audio)

    def _copied_packets(self, container, audio) -> Iterator[tuple[float, object]]:
        for packet in container.demux(audio):
            if packet.pts is None or packet.size == 0:
                continue
            seconds = float(packet.pts * packet.time_base) - self._offset
            if seconds < 0:
                continue
            shift = round(self._offset / packet.time_base)
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self._audio_out
            yield seconds, packet

    def _encoded_packets(self, container, audio) -> Iterator[tuple[float, object]]:
        seconds = 0.0
        for frame in container.decode(audio):
            if frame.pts is None:
                continue
            seconds = float(frame.pts * frame.time_base) - self._offset
            if seconds < 0:
                continue
            frame.pts = None  # the encoder numbers samples itself
            for packet in self._audio_out.encode(frame):
                yield seconds, packet
        for packet in self._audio_out.encode(None):
            yield seconds, packet

    def _mux_audio_until(self, seconds: float) -> None:
        if self._audio_packets is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_packets = None
                    return
            start, packet = self._pending
            if start >= seconds:
                return
            self._out.mux(packet)
            self._pending = None

    def write(self, frame: np.ndarray) -> None:
        """Append one ``ndarray[H, W, 3]`` uint8 BGR frame; a frame of another size (a stream whose size
        changed) is scaled to the first frame's size, counted in :attr:`resized`."""
        import av

        if (frame.shape[1], frame.shape[0]) != tuple(self._size):
            frame = cv2.resize(frame, tuple(self._size), interpolation=cv2.INTER_AREA)
            self.resized += 1
        if frame.shape[1] != self._video.width or frame.shape[0] != self._video.height:
            frame = cv2.copyMakeBorder(
                frame, 0, self._video.height - frame.shape[0], 0, self._video.width - frame.shape[1], cv2.BORDER_REPLICATE
            )
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        picture.pts = self.frames
        picture.time_base = 1 / self._rate
        try:
            self._mux_audio_until(float(self.frames / self._rate))
            self._out.mux(self._video.encode(picture))
        except OSError as exc:  # PyAV's FFmpeg errors are OSErrors: a full disk shows up here
            self.discard()
            raise _write_failed(self.path, exc) from None
        self.frames += 1

    def finish(self) -> None:
        """Flush the encoder, add the audio up to the video's end and flush the file to the disk
        (:class:`OutputError`, temp file removed, if any of that fails)."""
        if self._finished:
            return
        try:
            if self.frames == 0:
                raise OutputError(f"no frames to write to {self.path}; the previous file, if any, is unchanged")
            self._out.mux(self._video.encode(None))
            self._mux_audio_until(float(self.frames / self._rate))
            self._out.close()
            self._finished = True
            _sync(self._tmp)
        except OSError as exc:
            self.discard()
            raise _write_failed(self.path, exc) from None
        except BaseException:
            self.discard()
            raise
        finally:
            if self._audio_in is not None:
                self._audio_in.close()
                self._audio_in = None

    def discard(self) -> None:
        for container in (getattr(self, "_out", None), getattr(self, "_audio_in", None)):
            try:
                if container is not None:
                    container.close()
            except Exception:  # already failing; the temp file goes regardless
                pass
        self._finished = True
        _drop_temp(self._tmp)


def open_video_writer(path: str | os.PathLike, *, fps: float, size: tuple[int, int], audio_from: str | os.PathLike | None = None):
    """The writer for an annotated video: H.264 with the input's audio for MP4/MOV/MKV/M4V when PyAV has
    libx264, else OpenCV's ``mp4v``/MJPG writer (no audio), said so on stderr."""
    from .io import AtomicVideoWriter

    if Path(path).suffix.lower() in H264_EXTENSIONS:
        if h264_available():
            return H264VideoWriter(path, fps=fps, size=size, audio_from=audio_from)
        print(
            "note: PyAV with libx264 is not installed, writing MPEG-4 Part 2 (mp4v) without audio; "
            "web browsers may not play it (pip install av)",
            file=sys.stderr,
        )
    return AtomicVideoWriter(path, fps=fps, size=size)
