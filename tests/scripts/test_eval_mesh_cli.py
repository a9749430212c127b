"""scripts/eval_mesh_head.py end to end on a small synthetic split with known render parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "eval_mesh_head.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    from retinaface.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=0, num_val=3, seed=3, height=240, width=320, progress=False)
    return root / "val"


def test_released_weights_detect_the_faces_and_their_zero_head_equals_the_baseline(synthetic_val, tmp_path):
    result = run("mobilenet0.25", synthetic_val, "--json", tmp_path / "mesh.json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "mesh.json").read_text())
    faces = sum(len(v) for v in json.loads((synthetic_val / "render_params.json").read_text()).values())
    assert summary["mesh_faces"] == faces and 0 < summary["mesh_matched"] <= faces
    # the released mesh head is zero: it predicts the template, exactly the baseline
    for key in ("mesh_rotation_deg", "mesh_light_deg", "mesh_pixel_l1"):
        assert summary[key] == pytest.approx(summary[f"{key}_zero"], abs=1e-5)
    assert summary["mesh_rotation_deg_zero"] > 1.0
    assert "rotation" in result.stdout
    at_boxes = run("mobilenet0.25", synthetic_val, "--at-true-boxes", "--json", tmp_path / "boxes.json")
    assert at_boxes.returncode == 0, at_boxes.stderr[-2000:]
    assert json.loads((tmp_path / "boxes.json").read_text())["mesh_matched"] == faces


def test_folder_without_render_parameters_is_one_error_line(tmp_path):
    result = run("mobilenet0.25", tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
