"""scripts/eval_mesh_head.py end to end on a small synthetic split with known render parameters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "eval_mesh_head.py"


def run(*args):
    """``python scripts/eval_mesh_head.py ARGS`` as a process: the script as users start it."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


def run_in_process(*args):
    """The same through ``retinaface.cli.eval_mesh.main(argv)`` in this process (tests/cli_runner.py)."""
    from retinaface.cli.eval_mesh import main

    return run_cli(main, *args)


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    from retinaface.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=0, num_val=3, seed=3, height=240, width=320, progress=False)
    return root / "val"


def _true_rotation_degrees(synthetic_val) -> list[float]:
    """Each rendered face's head rotation in degrees, from its coefficients as the split records them: the
    layout is 128 latent, then the camera (location xyz, pose xyz, focal), the pose an axis-angle vector
    (pi / 2) tanh(r) whose length is the angle; what a zero (template, frontal) prediction gets wrong."""
    params = json.loads((synthetic_val / "render_params.json").read_text())
    pose = [np.array(face["coefficients"][131:134]) for faces in params.values() for face in faces]
    return [float(np.degrees(Rotation.from_rotvec(np.pi / 2 * np.tanh(r)).magnitude())) for r in pose]


def test_released_weights_detect_the_faces_and_score_their_head_against_the_rendered_poses(synthetic_val, tmp_path):
    truth = _true_rotation_degrees(synthetic_val)
    faces = len(truth)
    assert faces >= 3 and np.median(truth) > 5
    result = run("mobilenet0.25", synthetic_val, "--json", tmp_path / "mesh.json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "mesh.json").read_text())
    assert summary["mesh_faces"] == faces and 0 < summary["mesh_matched"] <= faces
    assert min(truth) - 1e-3 <= summary["mesh_rotation_deg_zero"] <= max(truth) + 1e-3
    assert "rotation" in result.stdout
    # at the true boxes every face is scored: the zero baseline (frontal) is wrong by each face's whole
    # rotation, so its median is the median of the rendered rotations; the released head reads the pose
    at_boxes = run_in_process("mobilenet0.25", synthetic_val, "--at-true-boxes", "--json", tmp_path / "boxes.json")
    assert at_boxes.returncode == 0, at_boxes.stderr[-2000:]
    scored = json.loads((tmp_path / "boxes.json").read_text())
    assert scored["mesh_matched"] == faces
    assert scored["mesh_rotation_deg_zero"] == pytest.approx(np.median(truth), abs=1e-3)
    assert scored["mesh_rotation_deg"] < 0.6 * scored["mesh_rotation_deg_zero"]
    # --test-offset 0.05 reads the head four times per face around the box: the same faces, other coefficients
    four = run_in_process("mobilenet0.25", synthetic_val, "--at-true-boxes", "--test-offset", "0.05", "--json", tmp_path / "four.json")
    assert four.returncode == 0, four.stderr[-2000:]
    averaged = json.loads((tmp_path / "four.json").read_text())
    assert averaged["mesh_matched"] == faces and averaged["mesh_rotation_deg_zero"] == scored["mesh_rotation_deg_zero"]
    assert averaged["mesh_rotation_deg"] != scored["mesh_rotation_deg"] and averaged["mesh_rotation_deg"] < 0.6 * averaged["mesh_rotation_deg_zero"]


def test_folder_without_render_parameters_is_one_error_line(tmp_path):
    result = run_in_process("mobilenet0.25", tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    offset = run_in_process("mobilenet0.25", tmp_path, "--test-offset", "0.7")
    assert offset.returncode == 2 and "error: argument --test-offset: 0.7 is outside [0, 0.5)" in offset.stderr and len(offset.stderr.strip().splitlines()) == 1
    half = run_in_process("mobilenet0.25", tmp_path, "--test-offset", "0.5")  # the upper bound is left out
    assert half.returncode == 2 and "0.5 is outside [0, 0.5)" in half.stderr
    assert run_in_process("mobilenet0.25", tmp_path, "--test-offset", "0").stderr.count("render_params.json") == 1  # 0 is allowed
