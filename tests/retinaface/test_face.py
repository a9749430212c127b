"""Face records: the array rounding gives the numbers, and so the JSON text, of Python's round per value."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retinaface.faces.face import Face, round_like_python


def _python_rounded(values: np.ndarray, decimals: int) -> list:
    return np.vectorize(lambda v: round(float(v), decimals), otypes=[object])(values).tolist() if values.ndim else round(float(values), decimals)


def _awkward_values(rng: np.random.Generator, decimals: int) -> np.ndarray:
    """Random floats of every sign and size, and values at or next to the decimal ties of ``decimals``."""
    step = 10.0**-decimals
    ties = (rng.integers(-10**6, 10**6, 4000) + 0.5) * step  # exact halves of the last digit, as close as floats get
    return np.concatenate([
        rng.normal(0, 500, 4000), rng.uniform(-1, 1, 4000), rng.normal(0, 1e-3, 1000), 10.0 ** rng.uniform(-8, 20, 1000),
        -(10.0 ** rng.uniform(-8, 20, 1000)), ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
        np.array([0.125, 0.375, 2.675, 1.005, -0.5, 0.5, 1.5, 2.5, -2.5, -0.0, 0.0, -0.001, 1e-320, 2.0**52 + 1, 2.0**53, 1e308,
                  -1e308, np.nan, np.inf, -np.inf]),
    ])


@pytest.mark.parametrize("decimals", [0, 1, 2, 5])
def test_rounding_is_pythons_to_the_last_bit(decimals):
    values = _awkward_values(np.random.default_rng(decimals), decimals)
    ours, theirs = round_like_python(values, decimals), _python_rounded(values, decimals)
    assert json.dumps(ours) == json.dumps(theirs)
    assert [math.copysign(1, v) for v in ours] == [math.copysign(1, v) for v in theirs]  # -0.0 stays -0.0
    assert all(type(v) is float for v in ours)


def test_rounding_keeps_the_shape_and_reads_float32():
    vertices = np.random.default_rng(3).normal(0, 300, (468, 3)).astype(np.float32)
    assert json.dumps(round_like_python(vertices, 1)) == json.dumps([[round(float(c), 1) for c in v] for v in vertices])
    assert round_like_python(np.float32(2.675), 2) == round(float(np.float32(2.675)), 2)
    assert round_like_python([1234.5678], -2) == [1200.0]  # outside 0-15 digits: Python's round itself


def test_face_record_is_the_per_value_rounding():
    rng = np.random.default_rng(7)
    face = Face(box=np.array([10.004, 20.005, 110.555, 130.125]), score=0.912345678, landmarks=rng.uniform(20, 120, (5, 2)),
                mesh_coefficients=rng.normal(0, 1, 144).astype(np.float32), mesh_vertices=rng.uniform(0, 1280, (468, 3)).astype(np.float32),
                mesh_residual={"pixel_l1": 0.1, "landmark_px": 0.3}, image_size=(1280, 720), track_id=4)
    record = face.to_dict(include_mesh=True)
    assert record["box"] == [round(float(v), 2) for v in face.box]
    assert record["landmarks"] == [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks]
    assert record["mesh_coefficients"] == [round(float(v), 5) for v in face.mesh_coefficients]
    assert record["mesh_vertices"] == [[round(float(c), 1) for c in v] for v in face.mesh_vertices]
    assert record["landmarks68"] == [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks68]
