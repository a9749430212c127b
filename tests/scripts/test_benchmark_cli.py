"""scripts/benchmark.py end to end on a tiny WIDER-format val set with known faces (in-process through
``main(argv)``, tests/cli_runner.py; as processes: the one-process reference of the torchrun test, and torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from retinaface.cli.benchmark import main as benchmark_main
from retinaface.samples import demo_frames
from retinaface.evaluation.wider_eval import SETTINGS, WiderGroundTruth, save_ground_truth

from ..cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmark.py"


def run(*args, cwd=None, env=None):
    """``benchmark ARGS --no-progress`` in-process (tests/cli_runner.py)."""
    return run_cli(benchmark_main, *args, "--no-progress", cwd=cwd, env=env)


def run_script(*args, env=None):
    """``python scripts/benchmark.py ARGS --no-progress`` as a process: the script as users start it."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--no-progress"], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def tiny_wider(tmp_path_factory):
    """Two events, six images of three pasted faces each: four readable, one corrupt, one missing."""
    root = tmp_path_factory.mktemp("wider")
    frames = list(demo_frames(num_frames=6))
    gt = WiderGroundTruth(events=["0--Parade", "1--Handshaking"], files=[[], []], boxes=[[], []])
    for s in SETTINGS:
        gt.keep[s] = [[], []]
    for index, (frame, face_boxes) in enumerate(frames):
        event = index % 2
        name = f"{index}_frame"
        folder = root / "WIDER_val" / "images" / gt.events[event]
        folder.mkdir(parents=True, exist_ok=True)
        if index == 4:
            (folder / f"{name}.jpg").write_text("corrupt")
        elif index != 5:  # image 5 is missing on disk
            cv2.imwrite(str(folder / f"{name}.jpg"), frame)
        boxes = np.round([[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in face_boxes])  # WIDER: x y w h
        gt.files[event].append(name)
        gt.boxes[event].append(boxes)
        large = np.nonzero(boxes[:, 2] >= 30)[0] + 1
        gt.keep["easy"][event].append(large)
        gt.keep["medium"][event].append(np.arange(1, len(boxes) + 1))
        gt.keep["hard"][event].append(np.arange(1, len(boxes) + 1))
    save_ground_truth(gt, root / "gt")
    return root, gt


@pytest.fixture(scope="module")
def plain_run(tiny_wider, tmp_path_factory):
    """The benchmark on ``tiny_wider`` without options: (prediction folder, report path, plot path, result)."""
    root, _ = tiny_wider
    folder = tmp_path_factory.mktemp("plain")
    pred, report, plot = folder / "pred", folder / "ap.json", folder / "pr.png"
    result = run("--wider-root", root / "WIDER_val", "--gt-dir", root / "gt", "--predictions", pred, "--json", report, "--plot", plot)
    assert result.returncode == 0, result.stderr
    return pred, report, plot, result


def _predictions(folder: Path) -> dict[str, np.ndarray]:
    """Prediction files as ``{event/name: rows [x y w h score]}``, read by hand from the WIDER text format."""
    found = {}
    for path in sorted(folder.rglob("*.txt")):
        lines = path.read_text().splitlines()
        count = int(lines[1])
        assert len(lines) == 2 + count, path
        found[f"{path.parent.name}/{path.stem}"] = np.array([[float(v) for v in line.split()] for line in lines[2:]]).reshape(-1, 5)
    return found


def test_detector_run_scores_saves_and_resumes(tmp_path, tiny_wider, plain_run):
    root, gt = tiny_wider
    pred, report, plot, result = plain_run
    assert "4 written, 0 reused, 1 images missing, 1 unreadable" in result.stdout
    assert "ms/image median" in result.stdout
    data = json.loads(report.read_text())
    # 18 faces, 6 of them on the corrupt and the missing image: recall at most 12/18
    assert data["faces"]["medium"] == 18
    assert 0.6 <= data["medium"] <= 12 / 18 + 1e-9
    assert data["easy"] >= data["medium"] - 1e-9  # easy keeps only the larger faces, which are found
    assert data["speed"]["images_timed"] == 4 and data["prediction_run"]["unreadable"] == 1 and data["images"] == 6
    assert sorted(p.name for p in (pred / "0--Parade").iterdir()) == ["0_frame.txt", "2_frame.txt"]
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[1] > 800

    again = run("--wider-root", root / "WIDER_val", "--gt-dir", root / "gt", "--predictions", pred, "--json", report)
    assert "0 written, 4 reused" in again.stdout
    assert json.loads(report.read_text())["medium"] == data["medium"]

    scored = run("--predictions", pred, "--gt-dir", root / "gt", "--json", tmp_path / "only.json")
    assert scored.returncode == 0, scored.stderr
    assert "2 of 6 images have no prediction file" in scored.stderr
    only = json.loads((tmp_path / "only.json").read_text())
    assert {s: only[s] for s in SETTINGS} == {s: data[s] for s in SETTINGS}


def test_flip_changes_the_predictions(tmp_path, tiny_wider, plain_run):
    """--flip detects in the mirrored image too and merges: other boxes and scores than the plain run, the same
    faces still found (each pasted face has a detection with IoU >= 0.5), not a plain run under another name."""
    root, gt = tiny_wider
    result = run("--wider-root", root / "WIDER_val", "--gt-dir", root / "gt", "--predictions", tmp_path / "p", "--flip", "--json", tmp_path / "a.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["speed"]["flip"] is True and json.loads(plain_run[1].read_text())["speed"]["flip"] is False
    plain, flipped = _predictions(plain_run[0]), _predictions(tmp_path / "p")
    assert sorted(plain) == sorted(flipped) and len(plain) == 4
    changed = 0
    for key in plain:
        a, b = plain[key], flipped[key]
        event, name = key.split("/")
        truth = gt.boxes[gt.events.index(event)][gt.files[gt.events.index(event)].index(name)]
        corners = lambda xywh: torch.tensor(np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], dtype=torch.float64).reshape(-1, 4)  # noqa: E731
        for rows in (a, b):
            iou = box_iou(corners(truth), corners(rows[rows[:, 4] >= 0.5]))
            assert iou.shape[1] > 0 and (iou.max(dim=1).values >= 0.5).all(), key
        same_shape = a.shape == b.shape
        changed += (not same_shape) or not np.allclose(a, b, atol=0.05)
    assert changed == len(plain)  # every image's predictions moved
    assert sum(len(rows) for rows in flipped.values()) > sum(len(rows) for rows in plain.values())  # the union of two views
    assert abs(report["medium"] - json.loads(plain_run[1].read_text())["medium"]) < 0.1


def test_bad_arguments_are_one_line_errors(tmp_path, tiny_wider):
    root, _ = tiny_wider
    result = run("--predictions", tmp_path, "--gt-dir", tmp_path / "nowhere")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "wider_face_val.mat" in result.stderr
    result = run("--predictions", tmp_path / "missing", "--gt-dir", root / "gt")
    assert result.returncode == 2 and "prediction folder" in result.stderr
    result = run("--gt-dir", root / "gt")
    assert result.returncode == 2 and "--predictions" in result.stderr
    bad = tmp_path / "bad" / "0--Parade"
    bad.mkdir(parents=True)
    (bad / "0_frame.txt").write_text("0_frame\n1\n1 2 three 4 0.5\n")
    result = run("--predictions", tmp_path / "bad", "--gt-dir", root / "gt")
    assert result.returncode == 2 and "0_frame.txt:3" in result.stderr and "Traceback" not in result.stderr


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.txt"))}


def test_torchrun_two_processes_equal_one_process_and_resume(tmp_path, tiny_wider):
    """Two CPU processes (gloo) split the images: the same prediction files and APs as one process, and a
    rerun after losing some files redoes only those."""
    root, _ = tiny_wider
    common = ["--wider-root", root / "WIDER_val", "--gt-dir", root / "gt", "--device", "cpu"]
    # torchrun gives each worker OMP_NUM_THREADS=1; the reference runs with the same thread count, since float
    # sums split over another number of threads round differently in the last printed digit
    single = run_script(*common, "--predictions", tmp_path / "one", "--json", tmp_path / "one.json", "--plot", tmp_path / "one.png",
                        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT)]

    def distributed(*args):
        return subprocess.run([*torchrun, *map(str, args), "--no-progress"], capture_output=True, text=True, timeout=600)

    two = distributed(*common, "--predictions", tmp_path / "two", "--json", tmp_path / "two.json", "--plot", tmp_path / "two.png")
    assert two.returncode == 0, two.stderr[-3000:]
    # rank 0 reports the whole run; rank 1 its share (3 of the 6 images, rank-strided)
    assert "4 written, 0 reused, 1 images missing, 1 unreadable" in two.stdout
    assert "rank 1: predictions: 2 written, 0 reused" in two.stdout
    assert _folder_bytes(tmp_path / "two") == _folder_bytes(tmp_path / "one") and len(_folder_bytes(tmp_path / "one")) == 4
    one_report, two_report = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for report in (one_report, two_report):
        report.pop("speed")
    assert two_report == one_report

    lost = [tmp_path / "two" / "0--Parade" / "0_frame.txt", tmp_path / "two" / "1--Handshaking" / "3_frame.txt"]
    for path in lost:
        path.unlink()
    again = distributed(*common, "--predictions", tmp_path / "two", "--json", tmp_path / "two.json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 written, 2 reused" in again.stdout
    assert _folder_bytes(tmp_path / "two") == _folder_bytes(tmp_path / "one")
