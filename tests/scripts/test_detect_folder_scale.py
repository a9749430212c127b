"""Folders: decoding ahead, several processes under torchrun, and resuming an interrupted run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "detect.py"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five images of three sizes made from the shipped photo (one face each), plus one unreadable file."""
    from retinaface.media.samples import ASTRONAUT

    root = tmp_path_factory.mktemp("album")
    photo = cv2.imread(str(ASTRONAUT))
    for index, size in enumerate([(512, 512), (640, 480), (300, 300), (640, 480), (512, 512)]):
        cv2.imwrite(str(root / f"img{index}.jpg"), cv2.resize(photo, size))
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def detect(*args: str, module: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, *(module or []), str(SCRIPT), *args, "--no-progress", "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_torchrun_two_processes_equal_one_process_record_for_record(folder: Path, tmp_path: Path) -> None:
    single = detect(str(folder), "--no-draw", "--json", str(tmp_path / "one.jsonl"), "--decode-workers", "0")
    assert single.returncode == 0, single.stderr
    torchrun = [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
    ]
    multi = detect(str(folder), "-o", str(tmp_path / "annotated"), "--json", str(tmp_path / "two.jsonl"), module=torchrun)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = (tmp_path / "one.jsonl").read_bytes()
    assert one.count(b"\n") == 5 and one == (tmp_path / "two.jsonl").read_bytes()
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir() if not p.name.startswith(".")) == [f"img{i}.jpg" for i in range(5)]
    assert not (tmp_path / "two.jsonl.parts").exists()


def test_resume_detects_only_the_missing_images(folder: Path, tmp_path: Path) -> None:
    full = tmp_path / "full.jsonl"
    assert detect(str(folder), "--no-draw", "--json", str(full)).returncode == 0
    lines = full.read_text().splitlines(keepends=True)
    # what an interrupted run leaves: the part file of process 0 with two records, the last one cut short
    resumed = tmp_path / "resumed.jsonl"
    parts = tmp_path / "resumed.jsonl.parts"
    parts.mkdir()
    (parts / "rank0.jsonl").write_text(lines[0] + lines[1] + lines[2][:20])
    result = detect(str(folder), "--no-draw", "--json", str(resumed), "--resume")
    assert result.returncode == 0, result.stderr
    assert " in 3 images" in result.stdout  # img2 (cut short), img3, img4: the done ones are skipped
    assert resumed.read_text() == full.read_text()
    assert not parts.exists()
