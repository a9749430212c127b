"""scripts/hallucinate.py end to end: the files it promises, values before and after, --mesh pictures,
and bad targets as one error line with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from retinaface.cli import COMMANDS
from retinaface.cli.hallucinate import main

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "hallucinate.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_outputs_are_pngs_sheets_and_a_json_of_values_before_and_after(tmp_path) -> None:
    result = run("--runs", 2, "--steps", 6, "--size", 64, "--target", "score", "--target", "backbone.1:3",
                 "--minimize", "--output", tmp_path, "--no-progress")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "hallucinations.json").read_text())
    assert [t["target"] for t in report["targets"]] == ["score", "backbone.1:3"]
    assert report["config"]["steps"] == 6 and report["config"]["minimize"] is True
    for record in report["targets"]:
        assert len(record["images"]) == 2 and [image["seed"] for image in record["images"]] == [0, 1]
        for image in record["images"]:
            assert image["after"] < image["before"]  # --minimize
            picture = cv2.imread(str(tmp_path / image["file"]))
            assert picture is not None and picture.shape == (64, 64, 3)
        sheet = cv2.imread(str(tmp_path / record["sheets"][0]))
        assert sheet is not None and sheet.shape[0] > 64 and sheet.shape[1] > 2 * 64
    assert report["targets"][0]["anchor_box"] == [40.0, 40.0, 64.0, 64.0]  # level 1's centre cell of 4x4
    overview = cv2.imread(str(tmp_path / "overview.png"))  # the two sheets, one below the other
    assert report["overviews"] == ["overview.png"]
    assert overview.shape[0] == sum(cv2.imread(str(tmp_path / t["sheets"][0])).shape[0] for t in report["targets"])
    assert "score (face probability, min)" in result.stdout and "backbone.1:3 (activation, min)" in result.stdout
    assert not list(tmp_path.rglob("*.partial*"))  # atomic writes leave no temp files


def test_mesh_draws_the_face_found_in_each_image(tmp_path) -> None:
    assert main(["--runs", "1", "--steps", "48", "--mesh", "--output", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    (record,) = json.loads((tmp_path / "hallucinations.json").read_text())["targets"]
    (image,) = record["images"]
    assert image["after"] >= 0.9 and image["faces"] >= 1 and image["best_face"]["score"] >= 0.9
    plain = cv2.imread(str(tmp_path / image["file"]))
    drawn = cv2.imread(str(tmp_path / image["file"].replace(".png", "-mesh.png")))
    x1, y1, x2, y2 = (int(round(v)) for v in image["best_face"]["box"])
    changed = np.any(plain != drawn, axis=-1)
    assert changed[y1:y2, x1:x2].mean() > 0.3  # the mesh covers much of the face box
    assert record["sheets"] == ["score-level1-anchor0-sheet.png", "score-level1-anchor0-mesh-sheet.png"]
    assert (tmp_path / record["sheets"][1]).is_file()


def test_unknown_layer_is_one_error_line_listing_the_layers(tmp_path) -> None:
    result = run_cli(main, "--target", "nonsense.layer:1", "--output", tmp_path, "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown layer 'nonsense.layer'") and "context.1 (64 ch)" in line
    assert not (tmp_path / "hallucinations.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "context.1:64"], "error: channel 64 is out of range for layer context.1 (64 channels: 0..63)"),
        (["--target", "fpn.0:-1"], "error: target 'fpn.0:-1' is neither 'score' nor LAYER:CHANNEL"),
        (["--level", "5"], "error: level 5 does not exist: the model has 3 pyramid levels (0..2)"),
        (["--anchor", "2"], "error: anchor 2 does not exist: each location has 2 anchors (0..1)"),
        # a valid target after a bad one: nothing is computed before every target is checked
        (["--target", "score", "--target", "backbone.stage9:0"], "error: unknown layer 'backbone.stage9'"),
    ],
)
def test_bad_targets_are_one_error_line_and_exit_2(tmp_path, capsys, argv, message) -> None:
    assert main([*argv, "--output", str(tmp_path), "--no-progress", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(message), line
    assert not list(tmp_path.iterdir())


def test_registered_as_a_retinaface_command() -> None:
    assert COMMANDS["hallucinate"][0] == "retinaface.cli.hallucinate"
    from retinaface.cli import main as retinaface_main

    with pytest.raises(SystemExit) as exit_info:
        retinaface_main(["hallucinate", "--help"])
    assert exit_info.value.code == 0
