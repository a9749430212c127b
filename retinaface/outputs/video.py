"""Video and animation writers: H.264 with the input's audio (PyAV), OpenCV as the fallback, animated GIF/WebP."""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..media.video import count_video_frames
from .atomic import TempFileOutput, drop_temp, sync_to_disk, temp_path_for, write_failed


class AtomicVideoWriter(TempFileOutput):
    """Video writer that only shows the file under its final name once closed.

    ``.avi`` is written as Motion-JPEG, everything else as MPEG-4 Part 2 (``mp4v``) - the encoders
    the OpenCV wheels ship with.
    """

    def __init__(self, path: str | os.PathLike, *, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self._tmp = temp_path_for(self.path)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, float(fps), size)
        if not self._writer.isOpened():
            drop_temp(self._tmp)
            raise InputError(f"cannot write video {self.path} (no encoder for {self.path.suffix!r})")
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        self.resized = 0
        """Frames of another size (a stream whose size changed), scaled to :attr:`size` before encoding."""
        self._finished = False

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            # OpenCV silently drops frames of the wrong size; scale them so none go missing
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
            self.resized += 1
        self._writer.write(frame)
        self.frames += 1

    def finish(self) -> None:
        """Finish encoding and check the file: ``cv2.VideoWriter`` reports no write errors, so a full disk
        shows up only as a file whose index is missing or counts fewer frames. On failure the temp file is
        removed and :class:`OutputError` raised."""
        if self._finished:
            return
        self._writer.release()
        self._finished = True
        if self.frames == 0:
            drop_temp(self._tmp)
            raise OutputError(f"no frames to write to {self.path}; the previous file, if any, is unchanged")
        try:
            sync_to_disk(self._tmp)
        except OSError as exc:
            drop_temp(self._tmp)
            raise write_failed(self.path, exc) from None
        found = count_video_frames(self._tmp)
        if found != self.frames:
            drop_temp(self._tmp)
            raise OutputError(
                f"cannot write video {self.path}: the encoder stored {found} of {self.frames} frames (disk full?); "
                "the previous file, if any, is unchanged"
            )

    def discard(self) -> None:
        if not self._finished:
            self._writer.release()
            self._finished = True
        drop_temp(self._tmp)


H264_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv"}
"""Outputs written as H.264 (the containers browsers and players accept it in)."""


MP4_AUDIO_COPY = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}
"""Audio codecs copied as they are into MP4/MOV/MKV; anything else is re-encoded to AAC."""


def write_animation(path: str | os.PathLike, frames: list[np.ndarray], *, duration_ms: int = 100) -> None:
    """Write BGR frames as an animated GIF/WebP (by ``path``'s extension), atomically."""
    from PIL import Image

    from .atomic import atomic_write

    pictures = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
    fmt = "GIF" if Path(path).suffix.lower() == ".gif" else "WEBP"

    def write(tmp: Path) -> None:
        pictures[0].save(tmp, format=fmt, save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)

    atomic_write(path, write)


YUV420P_CHROMA = np.array([[0.439, -0.291, -0.148, 128.0], [-0.071, -0.368, 0.439, 128.0], [0.0, 0.0, 0.0, 0.0]])
"""Rows U, V (and an unused third) of BT.601 limited-range YUV from B, G, R and 1: the matrix of OpenCV's
I420 luma and of FFmpeg's BGR to ``yuv420p`` conversion."""


def bgr_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """``ndarray[H, W, 3]`` uint8 BGR (even H and W) as the ``yuv420p`` planes ``ndarray[H * 3 / 2, W]`` uint8: Y,
    then U and V at half the width and height, BT.601 limited range.

    OpenCV's I420 conversion gives the luma; its chroma is one pixel's of each 2x2 block, which frays the
    colour edges of drawn meshes, boxes and text, so the chroma is computed from the blocks' means instead.
    About half the CPU time of FFmpeg's conversion inside the encoding call, with decoded frames at least as
    close to the picture."""
    height, width = frame.shape[:2]
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    chroma = cv2.transform(cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA), YUV420P_CHROMA)
    flat, luma, each = planes.reshape(-1), height * width, height * width // 4
    flat[luma : luma + each] = chroma[..., 0].reshape(-1)
    flat[luma + each :] = chroma[..., 1].reshape(-1)
    return planes


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
        self._tmp = temp_path_for(self.path)
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
        picture = av.VideoFrame.from_ndarray(bgr_to_yuv420p(frame), format="yuv420p")
        picture.pts = self.frames
        picture.time_base = 1 / self._rate
        try:
            self._mux_audio_until(float(self.frames / self._rate))
            self._out.mux(self._video.encode(picture))
        except OSError as exc:  # PyAV's FFmpeg errors are OSErrors: a full disk shows up here
            self.discard()
            raise write_failed(self.path, exc) from None
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
            sync_to_disk(self._tmp)
        except OSError as exc:
            self.discard()
            raise write_failed(self.path, exc) from None
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
        drop_temp(self._tmp)


def open_video_writer(path: str | os.PathLike, *, fps: float, size: tuple[int, int], audio_from: str | os.PathLike | None = None):
    """The writer for an annotated video: H.264 with the input's audio for MP4/MOV/MKV/M4V when PyAV has
    libx264, else OpenCV's ``mp4v``/MJPG writer (no audio), said so on stderr."""
    from .video import AtomicVideoWriter

    if Path(path).suffix.lower() in H264_EXTENSIONS:
        if h264_available():
            return H264VideoWriter(path, fps=fps, size=size, audio_from=audio_from)
        print(
            "note: PyAV with libx264 is not installed, writing MPEG-4 Part 2 (mp4v) without audio; "
            "web browsers may not play it (pip install av)",
            file=sys.stderr,
        )
    return AtomicVideoWriter(path, fps=fps, size=size)
