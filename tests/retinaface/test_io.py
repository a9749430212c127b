import json

import cv2
import numpy as np
import pytest

from retinaface.io import AtomicJsonLines, AtomicVideoWriter, InputError, check_writable, read_image, write_image


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
