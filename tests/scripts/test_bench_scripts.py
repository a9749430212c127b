"""The accuracy and jitter benchmark scripts as users run them: clean errors, a short real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "datasets" / "samples" / "astronaut.jpg"


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_accuracy_benchmark_without_mediapipe_or_photo_fails_with_one_line(tmp_path: Path) -> None:
    missing = run("bench_mesh_accuracy.py", tmp_path / "none.jpg", "--json", tmp_path / "a.json")
    assert missing.returncode == 2 and missing.stderr.startswith("error: photo not found") and "Traceback" not in missing.stderr
    no_judge = run("bench_mesh_accuracy.py", ASTRONAUT, "--mediapipe-python", tmp_path / "no-python",
                   "--cache", tmp_path / "cache.json", "--json", tmp_path / "a.json")
    assert no_judge.returncode == 2 and "mediapipe" in no_judge.stderr and "Traceback" not in no_judge.stderr
    assert not (tmp_path / "a.json").exists()


def test_jitter_benchmark_reports_a_still_face(tmp_path: Path) -> None:
    result = run("bench_jitter.py", "--frames", "3", "--no-mesh", "--json", tmp_path / "j.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "j.json").read_text())
    assert report["frames"] == 3 and report["tracked_frames"] == 3
    # sensor noise moves the landmarks by well under a pixel on a 100 px face
    assert 0 < report["landmarks"]["median_px"] < 1.0
