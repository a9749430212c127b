import json

import cv2
import numpy as np
import pytest

import errno
import os

from retinaface.outputs.atomic import AtomicJsonLines, atomic_write, check_writable, publish_together, write_image
from retinaface.outputs.video import AtomicVideoWriter
from retinaface.media.images import ImageRangeWarning, read_image
from retinaface.errors import InputError, OutputError
from retinaface.media.video import count_video_frames


def test_read_image_converts_formats(tmp_path):
    gray16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 2] = 255
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    g = read_image(tmp_path / "g16.png")
    assert g.shape == (48, 64, 3) and g.dtype == np.uint8
    assert g[-1, -1, 0] == round(int(gray16[-1, -1]) / 257)
    r = read_image(tmp_path / "rgba.png")
    assert r.shape == (30, 40, 3) and (r[..., 2] == 255).all()


@pytest.mark.parametrize(
    "content, message",
    [(None, "input not found"), (b"", "empty \\(0-byte\\)"), (b"hello, I am text", "cannot decode")],
)
def test_read_image_errors(tmp_path, content, message):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_image(path)


def test_atomic_writers_publish_on_close_and_vanish_on_discard(tmp_path):
    records = AtomicJsonLines(tmp_path / "a.jsonl")
    records.write({"frame": 0})
    assert not (tmp_path / "a.jsonl").exists()  # nothing under the final name while writing
    records.close()
    assert json.loads((tmp_path / "a.jsonl").read_text()) == {"frame": 0}

    doomed = AtomicJsonLines(tmp_path / "b.jsonl")
    doomed.write({"frame": 0})
    doomed.discard()
    video = AtomicVideoWriter(tmp_path / "v.mp4", fps=10, size=(32, 24))
    video.write(np.zeros((24, 32, 3), np.uint8))
    video.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]


def test_check_writable_refuses_path_under_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write output"):
        check_writable(blocker / "out.jpg")


def test_write_image_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "o.png", image)
    assert np.array_equal(cv2.imread(str(tmp_path / "o.png")), image)


def test_float_image_holding_0_255_values_is_read_as_such(tmp_path):
    """A float32 TIFF written from 8-bit data must not be clipped to white."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "f.tif"), pixels)
    with pytest.warns(ImageRangeWarning, match="values up to 255 read as 0-255"):
        image = read_image(tmp_path / "f.tif")
    assert np.array_equal(image, pixels.astype(np.uint8))
    unit = pixels / 255.0  # the 0-1 convention still holds, silently
    cv2.imwrite(str(tmp_path / "u.tif"), unit.astype(np.float32))
    assert np.abs(read_image(tmp_path / "u.tif").astype(int) - pixels.astype(int)).max() <= 1


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _left(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", _no_space)  # NFS and quotas report a full disk at fsync/close
    with pytest.raises(OutputError, match="No space left on device; the previous file, if any, is unchanged"):
        atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "old" and _left(tmp_path) == ["a.json"]


def test_json_lines_on_a_full_disk_keep_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.jsonl"
    target.write_text("old\n")
    records = AtomicJsonLines(target)
    records.write({"frame": 0})
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OutputError, match="No space left"):
        records.close()
    assert target.read_text() == "old\n" and _left(tmp_path) == ["a.jsonl"]
    monkeypatch.undo()
    records = AtomicJsonLines(target)
    monkeypatch.setattr(records._handle, "write", _no_space)  # fails while streaming
    with pytest.raises(OutputError, match="No space left"):
        records.write({"frame": 0})
    assert target.read_text() == "old\n" and _left(tmp_path) == ["a.jsonl"]


def test_incomplete_video_is_detected_and_nothing_is_published(tmp_path):
    """cv2.VideoWriter reports no errors: a full disk leaves a file without its index (simulated by
    truncating the encoder's output as it finishes); the writer must notice and keep the old video."""
    target, records_path = tmp_path / "v.mp4", tmp_path / "v.jsonl"
    target.write_bytes(b"old video")
    records_path.write_text("old\n")
    video = AtomicVideoWriter(target, fps=10, size=(64, 48))
    for i in range(10):
        video.write(np.full((48, 64, 3), i * 20, np.uint8))
    release = video._writer.release

    class Truncating:
        def release(self) -> None:
            release()
            with open(video._tmp, "r+b") as handle:
                handle.truncate(os.path.getsize(video._tmp) // 2)

        def write(self, frame) -> None:
            pass

    video._writer = Truncating()
    records = AtomicJsonLines(records_path)
    records.write({"frame": 0})
    with pytest.raises(OutputError, match="stored 0 of 10 frames"):
        publish_together(video, records)
    assert target.read_bytes() == b"old video" and records_path.read_text() == "old\n"
    assert _left(tmp_path) == ["v.jsonl", "v.mp4"]


def test_video_frames_of_another_size_are_scaled_not_dropped(tmp_path):
    video = AtomicVideoWriter(tmp_path / "v.avi", fps=10, size=(64, 48))
    for i in range(4):
        video.write(np.zeros((48, 64, 3), np.uint8))
    for i in range(3):  # the stream changed size mid-way
        video.write(np.zeros((96, 128, 3), np.uint8))
    video.close()
    assert video.resized == 3 and count_video_frames(tmp_path / "v.avi") == 7


def test_unreadable_image_is_one_sentence(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(InputError, match="not a file"):
        read_image(tmp_path / "d.jpg")
