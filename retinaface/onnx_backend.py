"""ONNX export of the network and an onnxruntime backend sharing the PyTorch pre- and post-processing."""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .config import InferenceConfig, ModelConfig, config_from_dict, config_to_dict
from .heads import HeadOutputs, SparseMeshCoefficients
from .inference import DetectionModel, build_detection_stages
from .model import RetinaFace

DETECTION_OUTPUT = "class_box_landmarks"
DENSE_MESH_OUTPUT = "mesh_coefficients"
SPARSE_MESH_OUTPUTS = ("mesh_features", "mesh_weight", "mesh_bias")
INPUT_NAME = "images"
CONFIG_METADATA_KEY = "retinaface_model_config"
SPLIT_METADATA_KEY = "retinaface_detection_split"
ONNXRUNTIME_CHANNEL_BLOCK = 16  # widest NCHWc block onnxruntime uses on x86 (AVX-512); a multiple of the AVX2 width 8


class _NetworkOnly(nn.Module):
    def __init__(self, model: RetinaFace, dense_mesh: bool) -> None:
        super().__init__()
        self.model = model
        self.dense_mesh = dense_mesh

    def forward(self, batch: Tensor) -> tuple[Tensor, ...]:
        heads = self.model.heads
        features = self.model.context_features(batch)
        # One output for the three detection heads: slicing it inside the graph would cost a copy per call.
        merged = heads.merged_outputs(features)
        if self.dense_mesh:
            return merged, heads.mesh(features)
        mesh = heads.sparse_mesh(features)
        return merged, mesh.features, mesh.weight, mesh.bias


def export_onnx(
    model: RetinaFace, path: str | os.PathLike | None = None, *, opset: int = 17, dense_mesh: bool = False
) -> bytes:
    """Export backbone-to-heads as ONNX, with dynamic batch, height and width and the model config in the metadata.

    The graph is an inference copy of ``model`` (BatchNorm folded, score/box/landmark heads merged, MobileNet
    channels padded to onnxruntime's block width): same outputs up to float rounding.

    Input ``images``: ``float32[N, 3, H, W]``, BGR with the mean already subtracted. Outputs
    ``class_box_landmarks`` ``[N, A, 16]`` (per anchor 2 class logits, 4 box deltas, 10 landmark deltas; the
    split is also in the metadata) and the mesh branch: with
    ``dense_mesh`` ``mesh_coefficients`` ``[N, A, 144]``; otherwise (default, faster) ``mesh_features``
    ``[N, L, C]`` per location plus the mesh head's ``mesh_weight`` / ``mesh_bias``, from which
    :class:`OnnxRetinaFace` computes coefficients for the kept detections only.
    Writes ``path`` (atomically) when given; returns the bytes.
    """
    import onnx

    from .io import atomic_write

    # Export an inference copy: BatchNorm folded, heads merged and, for the MobileNet trunk, channels padded
    # to onnxruntime's 16-wide blocks. All three leave the outputs unchanged; the caller's model is untouched.
    model = copy.deepcopy(model).fuse_for_inference().to(memory_format=torch.contiguous_format)
    if hasattr(model.backbone, "pad_channels"):
        model.backbone.pad_channels(ONNXRUNTIME_CHANNEL_BLOCK)
    names = [DETECTION_OUTPUT, *((DENSE_MESH_OUTPUT,) if dense_mesh else SPARSE_MESH_OUTPUTS)]
    dynamic = {name: {0: "batch", 1: "anchors"} for name in (DETECTION_OUTPUT, DENSE_MESH_OUTPUT)}
    dynamic["mesh_features"] = {0: "batch", 1: "locations"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            _NetworkOnly(model, dense_mesh),
            torch.zeros(1, 3, 64, 64),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, **{k: v for k, v in dynamic.items() if k in names}},
        )
    proto = onnx.load_model_from_string(buffer.getvalue())
    for key, value in ((CONFIG_METADATA_KEY, config_to_dict(model.config)), (SPLIT_METADATA_KEY, model.heads.values_per_task)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    data = proto.SerializeToString()
    if path is not None:
        atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return data


def _session(onnx_model: bytes | str, threads: int | None, fixed_shape: tuple[int, int, int] | None = None):
    """onnxruntime CPU session; ``fixed_shape`` ``(batch, height, width)`` pins the dynamic input axes so that
    shapes are constant-folded and buffers planned once (a few percent faster per call)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if fixed_shape is not None:
        for name, size in zip(("batch", "height", "width"), fixed_shape):
            options.add_free_dimension_override_by_name(name, size)
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


class OnnxRetinaFace(DetectionModel):
    """Inference-only stand-in for :class:`RetinaFace` running the network in onnxruntime.

    The same pipeline (:class:`~retinaface.inference.DetectionModel`) with :meth:`run_network` in onnxruntime,
    so :class:`~retinaface.detector.Detector` drives either backend. ``threads``: onnxruntime's intra-op
    threads (default: its own choice).
    """

    # Measured on 2 busy cores, 640x480: preprocessing 50 ms with 2 PyTorch threads, 1 ms with one;
    # decode and NMS 45 ms vs 0.9 ms.
    pipeline_threads = 1

    def __init__(self, onnx_model: bytes, *, inference: InferenceConfig | None = None, threads: int | None = None) -> None:
        super().__init__()
        import onnx

        proto = onnx.load_model_from_string(onnx_model)
        metadata = {p.key: p.value for p in proto.metadata_props}
        if CONFIG_METADATA_KEY not in metadata or SPLIT_METADATA_KEY not in metadata:
            raise ValueError("this ONNX file was not exported by this version of scripts/export_onnx.py (no model metadata)")
        self.config = config_from_dict(ModelConfig, json.loads(metadata[CONFIG_METADATA_KEY]))
        self.detection_split = [int(n) for n in json.loads(metadata[SPLIT_METADATA_KEY])]
        self.preprocessor, self.anchor_generator, self.postprocessor = build_detection_stages(
            self.config, inference or InferenceConfig()
        )
        self.onnx_model, self.threads = onnx_model, threads
        self.session = _session(onnx_model, threads)
        outputs = {o.name for o in self.session.get_outputs()}
        self.dense_mesh = DENSE_MESH_OUTPUT in outputs
        self._mesh_head: tuple[Tensor, Tensor] | None = None  # constant outputs, fetched once
        self._shapes_seen: set[tuple[int, int, int]] = set()
        self._fixed_sessions: OrderedDict[tuple[int, int, int], object] = OrderedDict()

    MAX_FIXED_SESSIONS = 4

    def session_for(self, shape: tuple[int, int, int]):
        """The session to run a ``(batch, height, width)`` input with: a shape-specialised one once that shape
        has come twice (video frames, repeated sizes), else the dynamic one. Keeps the last few specialised."""
        if shape in self._fixed_sessions:
            self._fixed_sessions.move_to_end(shape)
            return self._fixed_sessions[shape]
        if shape not in self._shapes_seen:
            if len(self._shapes_seen) >= 1024:  # a folder of ever-new sizes must not grow memory
                self._shapes_seen.clear()
            self._shapes_seen.add(shape)
            return self.session
        self._fixed_sessions[shape] = _session(self.onnx_model, self.threads, fixed_shape=shape)
        if len(self._fixed_sessions) > self.MAX_FIXED_SESSIONS:
            self._fixed_sessions.popitem(last=False)
        return self._fixed_sessions[shape]

    def run_network(self, batch: Tensor) -> tuple[HeadOutputs, Tensor]:
        height, width = int(batch.shape[-2]), int(batch.shape[-1])
        feed = {INPUT_NAME: np.ascontiguousarray(batch.numpy(), dtype=np.float32)}
        names = [DETECTION_OUTPUT, DENSE_MESH_OUTPUT if self.dense_mesh else "mesh_features"]
        if not self.dense_mesh and self._mesh_head is None:
            names += ["mesh_weight", "mesh_bias"]
        session = self.session_for((int(batch.shape[0]), height, width))
        arrays = [torch.from_numpy(a) for a in session.run(names, feed)]
        if self.dense_mesh:
            mesh = arrays[1]
        else:
            if self._mesh_head is None:
                self._mesh_head = (arrays[2], arrays[3])
            locations = [h * w for h, w in self.anchor_generator.feature_shapes(height, width)]
            mesh = SparseMeshCoefficients(arrays[1], *self._mesh_head, locations)
        anchors = self.anchor_generator.for_image_size(height, width)
        class_logits, box_deltas, landmark_deltas = arrays[0].split(self.detection_split, dim=-1)
        return HeadOutputs(class_logits, box_deltas, landmark_deltas, mesh), anchors

    def forward(self, images: list[Tensor] | Tensor, targets=None) -> list[dict[str, Tensor]]:
        if targets is not None:
            raise RuntimeError("the onnxruntime backend is for inference only")
        return self.detect(images)


def verify_export(model: RetinaFace, onnx_model: bytes, image_bgr: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch raw outputs, per output, on a random
    batch of two odd-sized inputs and on ``image_bgr`` (``ndarray[H, W, 3]`` uint8)."""
    session = _session(onnx_model, None)
    names = [o.name for o in session.get_outputs()]
    generator = torch.Generator().manual_seed(seed)
    real = model.preprocessor([torch.from_numpy(image_bgr).permute(2, 0, 1)])[0]
    inputs = [torch.randn(2, 3, 97, 131, generator=generator) * 60, real]
    errors = {name: 0.0 for name in names}
    dense_mesh = DENSE_MESH_OUTPUT in names
    for batch in inputs:
        with torch.no_grad():
            # The reference is the model as given (usually unfused), not the exported inference copy.
            outputs, _ = model.eval().network(batch, dense_mesh=dense_mesh)
        merged = torch.cat([outputs.class_logits, outputs.box_deltas, outputs.landmark_deltas], dim=-1)
        mesh = outputs.mesh_coefficients
        expected = (merged, mesh) if dense_mesh else (merged, mesh.features, mesh.weight, mesh.bias)
        actual = session.run(names, {INPUT_NAME: np.ascontiguousarray(batch.numpy(), dtype=np.float32)})
        for name, want, got in zip(names, expected, actual):
            errors[name] = max(errors[name], float(np.abs(want.numpy() - got).max()))
    return errors
