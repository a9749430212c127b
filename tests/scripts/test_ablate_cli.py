"""scripts/ablate_pixel_term.py (Table 3 in miniature) end to end on a tiny synthetic set, two seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ablate_pixel_term.py"
TINY = ["--epochs=1", "--max_steps=2", "--image_size=128", "--batch_size=2", "--workers=0", "--val_every=1", "--checkpoint_every=0"]


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from retinaface.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=4, num_val=2, seed=5, height=120, width=160, progress=False)
    return root


def test_both_arms_for_each_seed_then_a_rerun_reads_the_finished_runs(tiny_set, tmp_path):
    output = tmp_path / "table3"
    first = run(tiny_set, "--seeds", 0, 1, "--output", output, "--threads", 1, *TINY)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((output / "table3.json").read_text())
    assert set(summary["arms"]) == {"with", "without"}
    for arm in ("with", "without"):
        assert set(summary["runs"][arm]) == {"0", "1"}
        for record in summary["runs"][arm].values():
            assert all(0.0 <= record[level] <= 1.0 for level in ("easy", "medium", "hard"))
    # the arms differ in the objective only: the pixel term is logged by one and not the other
    with_terms = json.loads((output / "with-seed0" / "metrics.jsonl").read_text().splitlines()[-1])
    without_terms = json.loads((output / "without-seed0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "loss_pixel" in with_terms and "loss_pixel" not in without_terms
    paired = summary["paired_with_minus_without"]["easy"]
    assert paired == pytest.approx([summary["runs"]["with"][s]["easy"] - summary["runs"]["without"][s]["easy"] for s in ("0", "1")])

    again = run(tiny_set, "--seeds", 0, 1, "--output", output, "--threads", 1, *TINY)
    assert again.returncode == 0 and "training" not in again.stdout
    assert json.loads((output / "table3.json").read_text())["runs"] == summary["runs"]


def test_missing_data_and_unknown_keys_are_one_error_line(tiny_set, tmp_path):
    for args in ((tmp_path / "nothing",), (tiny_set, "--output", tmp_path / "t", "--no_such_key=1")):
        result = run(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
