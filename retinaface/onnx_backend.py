"""ONNX export of the network and an onnxruntime backend sharing the PyTorch pre- and post-processing."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .config import InferenceConfig, ModelConfig, config_from_dict, config_to_dict
from .heads import HeadOutputs, SparseMeshCoefficients
from .model import RetinaFace
from .postprocess import DetectionPostProcessor
from .transform import ImagePreprocessor

DETECTION_OUTPUTS = ("class_logits", "box_deltas", "landmark_deltas")
DENSE_MESH_OUTPUT = "mesh_coefficients"
SPARSE_MESH_OUTPUTS = ("mesh_features", "mesh_weight", "mesh_bias")
INPUT_NAME = "images"
CONFIG_METADATA_KEY = "retinaface_model_config"


class _NetworkOnly(nn.Module):
    def __init__(self, model: RetinaFace, dense_mesh: bool) -> None:
        super().__init__()
        self.model = model
        self.dense_mesh = dense_mesh

    def forward(self, batch: Tensor) -> tuple[Tensor, ...]:
        outputs, _ = self.model.network(batch, dense_mesh=self.dense_mesh)
        detection = (outputs.class_logits, outputs.box_deltas, outputs.landmark_deltas)
        if self.dense_mesh:
            return (*detection, outputs.mesh_coefficients)
        mesh = outputs.mesh_coefficients
        return (*detection, mesh.features, mesh.weight, mesh.bias)


def export_onnx(
    model: RetinaFace, path: str | os.PathLike | None = None, *, opset: int = 17, dense_mesh: bool = False
) -> bytes:
    """Export backbone-to-heads as ONNX, with dynamic batch, height and width and the model config in the metadata.

    Input ``images``: ``float32[N, 3, H, W]``, BGR with the mean already subtracted. Outputs
    ``class_logits``, ``box_deltas``, ``landmark_deltas`` (``[N, A, k]``) and the mesh branch: with
    ``dense_mesh`` ``mesh_coefficients`` ``[N, A, 144]``; otherwise (default, faster) ``mesh_features``
    ``[N, L, C]`` per location plus the mesh head's ``mesh_weight`` / ``mesh_bias``, from which
    :class:`OnnxRetinaFace` computes coefficients for the kept detections only.
    Writes ``path`` (atomically) when given; returns the bytes.
    """
    import onnx

    from .io import atomic_write

    model = model.eval()
    names = [*DETECTION_OUTPUTS, *((DENSE_MESH_OUTPUT,) if dense_mesh else SPARSE_MESH_OUTPUTS)]
    dynamic = {name: {0: "batch", 1: "anchors"} for name in DETECTION_OUTPUTS + (DENSE_MESH_OUTPUT,)}
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
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_METADATA_KEY, json.dumps(config_to_dict(model.config))
    data = proto.SerializeToString()
    if path is not None:
        atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return data


def _session(onnx_model: bytes | str, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning worker threads would compete with PyTorch's pre/post-processing threads on small machines.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


class OnnxRetinaFace(nn.Module):
    """Inference-only stand-in for :class:`RetinaFace` running the network in onnxruntime.

    Same ``forward(images)`` contract and the same ``preprocessor`` / ``postprocessor`` attributes, so
    :class:`~retinaface.detector.Detector` drives either backend.
    """

    def __init__(self, onnx_model: bytes, *, inference: InferenceConfig | None = None, threads: int | None = None) -> None:
        super().__init__()
        import onnx

        proto = onnx.load_model_from_string(onnx_model)
        metadata = {p.key: p.value for p in proto.metadata_props}
        if CONFIG_METADATA_KEY not in metadata:
            raise ValueError("this ONNX file was not exported by scripts/export_onnx.py (no model config metadata)")
        self.config = config_from_dict(ModelConfig, json.loads(metadata[CONFIG_METADATA_KEY]))
        inference = inference or InferenceConfig()
        self.preprocessor = ImagePreprocessor(pixel_mean_bgr=self.config.pixel_mean_bgr, max_size=inference.max_size)
        self.anchor_generator = AnchorGenerator(sizes_per_level=self.config.anchor_sizes, strides=self.config.anchor_strides)
        self.postprocessor = DetectionPostProcessor(
            box_coder=BoxCoder(center_variance=self.config.box_variances[0], size_variance=self.config.box_variances[1]),
            score_threshold=inference.score_threshold,
            nms_threshold=inference.nms_threshold,
            pre_nms_top_k=inference.pre_nms_top_k,
            max_detections=inference.max_detections,
        )
        self.session = _session(onnx_model, threads)
        outputs = {o.name for o in self.session.get_outputs()}
        self.dense_mesh = DENSE_MESH_OUTPUT in outputs
        self._mesh_head: tuple[Tensor, Tensor] | None = None  # constant outputs, fetched once

    def head_outputs(self, batch: Tensor) -> tuple[HeadOutputs, Tensor]:
        height, width = int(batch.shape[-2]), int(batch.shape[-1])
        feed = {INPUT_NAME: np.ascontiguousarray(batch.numpy(), dtype=np.float32)}
        names = list(DETECTION_OUTPUTS) + ([DENSE_MESH_OUTPUT] if self.dense_mesh else ["mesh_features"])
        if not self.dense_mesh and self._mesh_head is None:
            names += ["mesh_weight", "mesh_bias"]
        arrays = [torch.from_numpy(a) for a in self.session.run(names, feed)]
        if self.dense_mesh:
            mesh = arrays[3]
        else:
            if self._mesh_head is None:
                self._mesh_head = (arrays[4], arrays[5])
            locations = [h * w for h, w in self.anchor_generator.feature_shapes(height, width)]
            mesh = SparseMeshCoefficients(arrays[3], *self._mesh_head, locations)
        anchors = self.anchor_generator.for_image_size(height, width)
        return HeadOutputs(arrays[0], arrays[1], arrays[2], mesh), anchors

    def forward(self, images: list[Tensor] | Tensor, targets=None) -> list[dict[str, Tensor]]:
        if targets is not None:
            raise RuntimeError("the onnxruntime backend is for inference only")
        image_list = list(images.unbind(0)) if isinstance(images, Tensor) else list(images)
        if not image_list:
            return []
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in image_list]
        # The pre/post-processing tensors are small; PyTorch's worker threads would only contend with
        # onnxruntime's for the same cores, so run them on the calling thread.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            batch, _, scales, _ = self.preprocessor([im.cpu() for im in image_list])
            outputs, anchors = self.head_outputs(batch)
            return self.preprocessor.map_back(self.postprocessor(outputs, anchors), scales, original_sizes)
        finally:
            torch.set_num_threads(threads)


def verify_export(model: RetinaFace, onnx_model: bytes, image_bgr: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch raw outputs, per output, on a random
    batch of two odd-sized inputs and on ``image_bgr`` (``ndarray[H, W, 3]`` uint8)."""
    session = _session(onnx_model, None)
    names = [o.name for o in session.get_outputs()]
    generator = torch.Generator().manual_seed(seed)
    real = model.preprocessor([torch.from_numpy(image_bgr).permute(2, 0, 1)])[0]
    inputs = [torch.randn(2, 3, 97, 131, generator=generator) * 60, real]
    errors = {name: 0.0 for name in names}
    for batch in inputs:
        with torch.no_grad():
            wrapper = _NetworkOnly(model.eval(), dense_mesh="mesh_coefficients" in names)
            expected = wrapper(batch)
        actual = session.run(names, {INPUT_NAME: np.ascontiguousarray(batch.numpy(), dtype=np.float32)})
        for name, want, got in zip(names, expected, actual):
            errors[name] = max(errors[name], float(np.abs(want.numpy() - got).max()))
    return errors
