"""Folders: decoding ahead, several processes under torchrun, and resuming an interrupted run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "detect.py"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five images of three sizes made from the shipped photo (one face each), plus one unreadable file."""
    from retinaface.samples import ASTRONAUT

    root = tmp_path_factory.mktemp("album")
    photo = cv2.imread(str(ASTRONAUT))
    for index, size in enumerate([(512, 512), (640, 480), (300, 300), (640, 480), (512, 512)]):
        cv2.imwrite(str(root / f"img{index}.jpg"), cv2.resize(photo, size))
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def detect(*args: str, module: list[str] | None = None) -> subprocess.CompletedProcess:
    """``detect ARGS --no-progress --device cpu``: in-process (tests/cli_runner.py), or as a process started
    by ``python MODULE... scripts/detect.py`` when ``module`` is given (torchrun)."""
    if module is None:
        from retinaface.cli.detect import main

        return run_cli(main, *args, "--no-progress", "--device", "cpu")
    command = [sys.executable, *module, str(SCRIPT), *args, "--no-progress", "--device", "cpu"]
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


def _stopped_run(folder: Path, tmp_path: Path, json_path: Path, capsys, *extra: str) -> Path:
    """What a resumable run that stops after two images leaves behind: the annotated copy of the third cannot
    be written (a folder holds its name), so the run ends there with an error, keeping its part file (the
    first two records) and the settings that made them. Returns the part folder."""
    from retinaface.cli import detect as detect_cli

    annotated = tmp_path / "annotated"
    (annotated / "img2.jpg").mkdir(parents=True)
    code = detect_cli.main([str(folder), "-o", str(annotated), "--json", str(json_path), "--resume", "--no-progress", "--device", "cpu", *extra])
    stderr = capsys.readouterr().err
    assert code == 1 and "cannot write output" in stderr, stderr
    parts = json_path.with_name(json_path.name + ".parts")
    assert sorted(p.name for p in parts.iterdir()) == ["rank0.jsonl", "settings.json"]
    return parts


def test_resume_detects_only_the_missing_images(folder: Path, tmp_path: Path, capsys) -> None:
    full = tmp_path / "full.jsonl"
    assert detect(str(folder), "--no-draw", "--json", str(full)).returncode == 0
    lines = full.read_text().splitlines(keepends=True)
    resumed = tmp_path / "resumed.jsonl"
    parts = _stopped_run(folder, tmp_path, resumed, capsys)
    assert (parts / "rank0.jsonl").read_text() == lines[0] + lines[1]
    with open(parts / "rank0.jsonl", "a") as part:  # and a last record cut short, as a kill leaves it
        part.write(lines[2][:20])
    result = detect(str(folder), "--no-draw", "--json", str(resumed), "--resume")  # other outputs: the same settings
    assert result.returncode == 0, result.stderr
    assert " in 3 images" in result.stdout  # img2 (cut short), img3, img4: the done ones are skipped
    assert resumed.read_text() == full.read_text()
    assert not parts.exists()


def test_resume_with_other_settings_or_unknown_parts_is_refused(folder: Path, tmp_path: Path, capsys) -> None:
    """Resuming with options that change the records would mix two runs' records: refused in one line (exit 2)
    naming the option that differs and what to do, the part files untouched; so are parts without settings."""
    from retinaface.cli import detect as detect_cli

    resumed = tmp_path / "resumed.jsonl"
    parts = _stopped_run(folder, tmp_path, resumed, capsys)
    before = {p.name: p.read_bytes() for p in parts.iterdir()}
    argv = [str(folder), "--no-draw", "--json", str(resumed), "--resume", "--no-progress", "--device", "cpu"]
    for extra, message in (
        (["--score-threshold", "0.6"], "made with other settings .*--score-threshold=0.5 there, --score-threshold=0.6 now"),
        (["--flip"], "made with other settings .*--flip=false there, --flip=true now"),
    ):
        code = detect_cli.main([*argv, *extra])
        lines = capsys.readouterr().err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert re.search(message, lines[0]) and lines[0].endswith("rerun with the same options to continue, or without --resume to start over")
        assert {p.name: p.read_bytes() for p in parts.iterdir()} == before and not resumed.exists()
    (parts / "settings.json").unlink()  # parts of unknown origin (an older version, or made by hand)
    code = detect_cli.main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "holds records of unknown origin (no settings.json)" in lines[0], lines
