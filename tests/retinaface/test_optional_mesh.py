"""Detection must not need the mesh branch's heavy dependencies (pytorch3d, torch-geometric)."""

from __future__ import annotations

import json
import subprocess
import sys

BLOCKED_RUN = r"""
import importlib.abc, json, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("pytorch3d", "torch_geometric"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Missing())
import cv2
from retinaface import Detector
from retinaface.samples import ASTRONAUT

image = cv2.imread(str(ASTRONAUT))
counts = {backend: len(Detector.from_pretrained(backend=backend, device="cpu")(image)) for backend in ("torch", "onnxruntime")}
try:
    Detector.from_pretrained(mesh=True, device="cpu")
    mesh_error = None
except Exception as exc:
    mesh_error = type(exc).__name__
print(json.dumps({"counts": counts, "mesh_error": mesh_error,
                  "loaded": sorted(m for m in sys.modules if m.startswith(("pytorch3d", "torch_geometric")))}))
"""


def test_detection_works_without_pytorch3d_and_torch_geometric() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED_RUN], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["counts"] == {"torch": 1, "onnxruntime": 1}
    assert report["loaded"] == []
    assert report["mesh_error"] == "ImportError"  # meshes without the packages: a clear error; detection still works
