"""The wheel as users get it: built from the repository, installed outside the checkout, run from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow

from retinaface.samples import ASTRONAUT_FACE_BOX  # hand-annotated (x1 y1 x2 y2)

from .conftest import CROWD  # the shared photo, through RETINAFACE_SHARED_DATA like every other test

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """``pip install --no-deps --target`` of a freshly built wheel; returns the target folder."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (root / "dist").glob("*.whl")
    target = root / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return target


def run_outside_checkout(target: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run with only the installed copy importable: the wheel's folder first, cwd outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RETINAFACE_WEIGHTS_DIR")}
    env["PYTHONPATH"] = str(target)
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env)


def test_wheel_adds_only_the_retinaface_import_name(installed_wheel: Path) -> None:
    top_level = {p.name for p in installed_wheel.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin"}
    assert top_level == {"retinaface"}
    shipped = {p.relative_to(installed_wheel).as_posix() for p in installed_wheel.rglob("*") if p.is_file()}
    for data in ("retinaface/pretrained/retinaface_mobilenet0.25.safetensors", "retinaface/pretrained/NOTICE",
                 "retinaface/mesh/assets/face_template.npz", "retinaface/mesh/assets/hierarchy.npz",
                 "retinaface/datasets/samples/astronaut.jpg"):
        assert data in shipped, data


def test_installed_package_does_not_claim_datasets_or_mesh(installed_wheel: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, retinaface, retinaface.datasets, retinaface.mesh\n"
        "specs = {name: importlib.util.find_spec(name) for name in ('datasets', 'mesh')}\n"
        "print(json.dumps({'retinaface': retinaface.__file__, 'datasets_pkg': retinaface.datasets.__file__,\n"
        "  **{name: (spec.origin if spec else None) for name, spec in specs.items()}}))\n"
    )
    result = run_outside_checkout(installed_wheel, [sys.executable, "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["retinaface"]).is_relative_to(installed_wheel)
    assert Path(found["datasets_pkg"]).is_relative_to(installed_wheel)
    for name in ("datasets", "mesh"):  # absent, or someone else's package: never our folders
        assert found[name] is None or not Path(found[name]).is_relative_to(installed_wheel), found[name]
        assert found[name] is None or not Path(found[name]).is_relative_to(REPO), found[name]


@pytest.fixture(scope="module")
def console_detections(installed_wheel: Path, tmp_path_factory, request) -> dict[str, list[list[float]]]:
    """One ``retinaface detect`` run of the installed command on a folder with the shipped astronaut photo and,
    when the shared data has it, the crowd photo: face boxes per file name."""
    import shutil

    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(installed_wheel / "retinaface/datasets/samples/astronaut.jpg", folder / "astronaut.jpg")
    if CROWD.is_file():
        shutil.copy(CROWD, folder / "crowd.jpg")
    cwd = tmp_path_factory.mktemp("cwd")
    result = run_outside_checkout(
        installed_wheel, [str(installed_wheel / "bin" / "retinaface"), "detect", str(folder), "--no-draw", "--json", "faces.jsonl", "--no-progress"], cwd
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (cwd / "faces.jsonl").read_text().splitlines()]
    assert sorted(Path(r["source"]).name for r in records) == sorted(p.name for p in folder.iterdir())
    return {Path(r["source"]).name: [face["box"] for face in r["faces"]] for r in records}


def test_console_command_detects_with_the_shipped_weights(console_detections) -> None:
    import torch
    from torchvision.ops import box_iou

    boxes = console_detections["astronaut.jpg"]
    assert len(boxes) == 1
    assert box_iou(torch.tensor(boxes), torch.tensor([ASTRONAUT_FACE_BOX])).item() > 0.6


def test_console_command_finds_the_crowd(console_detections, crowd_path: Path) -> None:
    """The shared crowd photo, found through the same setting as the other tests (conftest: skipped with its
    path when the shared data is absent, failed when RETINAFACE_SHARED_DATA names a folder without it)."""
    assert crowd_path == CROWD
    assert 24 <= len(console_detections["crowd.jpg"]) <= 32  # about 27 faces by the published weights (shared data README)


def test_console_command_lists_its_subcommands(installed_wheel: Path, tmp_path: Path) -> None:
    result = run_outside_checkout(installed_wheel, [str(installed_wheel / "bin" / "retinaface"), "--help"], tmp_path)
    assert result.returncode == 0
    for command in ("detect", "train", "benchmark", "export"):
        assert command in result.stdout
    unknown = run_outside_checkout(installed_wheel, [str(installed_wheel / "bin" / "retinaface"), "detcet"], tmp_path)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr and "Traceback" not in unknown.stderr


def test_wheel_metadata_declares_the_console_command(installed_wheel: Path) -> None:
    (dist_info,) = installed_wheel.glob("retinaface_mesh-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "retinaface = retinaface.cli:main" in entry_points
