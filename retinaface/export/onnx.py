"""ONNX export of the whole detector (8-bit images in, final detections out) and the onnxruntime backend that
runs it, sharing the PyTorch resizing and mapping back."""

from __future__ import annotations

import contextvars
import copy
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import nms

from ..config import InferenceConfig, ModelConfig, config_to_dict
from ..model.base import DetectionModel, box_coder_for, build_detection_stages
from ..model.heads import RoIMeshHead
from ..model.retinaface import RetinaFace
from ..model.postprocess import DetectionPostProcessor, face_probability
from ..utils.threads import ONNXRUNTIME_SPINNING

INPUT_NAME = "images"
SETTING_INPUTS = ("score_threshold", "nms_threshold", "pre_nms_top_k", "max_detections")
OUTPUT_NAMES = ("image_ids", "scores", "boxes", "landmarks", "mesh_coefficients")
HEADLESS_OUTPUT_NAMES = tuple(name for name in OUTPUT_NAMES if name != "mesh_coefficients")
"""The outputs of the graph without the mesh head (:func:`without_mesh_head`)."""
CONFIG_METADATA_KEY = "retinaface_model_config"
FORMAT_METADATA_KEY = "retinaface_onnx_format"
FORMAT_VERSION = 2  # 1: float NCHW input, raw per-anchor outputs (before 2026-12-01)
CHANNEL_BLOCK_METADATA_KEY = "retinaface_channel_block"  # the block the MobileNet channels were padded to


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` with the images of a batch as its classes. Only traced for the export: the
    forward is a reference of the op for the tracer; the symbolic emits the operator itself."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_image: Tensor, iou_threshold: Tensor, score_threshold: Tensor) -> Tensor:
        selected = []
        for image, image_scores in enumerate(scores[0]):
            candidates = torch.nonzero(image_scores > score_threshold).squeeze(1)
            keep = candidates[nms(boxes[0, candidates], image_scores[candidates], float(iou_threshold))][: int(max_per_image)]
            selected.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, image), keep], dim=1))
        return torch.cat(selected)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_image, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_image, iou_threshold, score_threshold)


class _TopKPerRow(torch.autograd.Function):
    """``scores`` ``Tensor[C, K]`` with all but each row's ``k`` highest set to -1 (``k`` may exceed K)."""

    @staticmethod
    def forward(ctx, scores: Tensor, k: Tensor) -> Tensor:
        values, indices = scores.topk(min(int(k), scores.shape[1]), dim=1)
        return torch.full_like(scores, -1.0).scatter(1, indices, values)

    @staticmethod
    def symbolic(g, scores, k):
        shape = g.op("Shape", scores)
        columns = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([1])), g.op("Constant", value_t=torch.tensor([2])))
        count = g.op("Min", columns, g.op("Reshape", k, g.op("Constant", value_t=torch.tensor([1]))))
        values, indices = g.op("TopK", scores, count, axis_i=1, outputs=2)
        filled = g.op("ConstantOfShape", shape, value_t=torch.tensor([-1.0]))
        return g.op("ScatterElements", filled, indices, values, axis_i=1)


class _DetectionGraph(nn.Module):
    """What the exported graph computes: 8-bit NHWC BGR images in, final detections out (see :func:`export_onnx`).

    The steps are :class:`~retinaface.postprocess.DetectionPostProcessor`'s, written for the ONNX exporter:
    threshold, per-image top-k, decoding, NMS per image (one ``NonMaxSuppression`` with the images as its
    classes), and the mesh head evaluated for the kept detections only: at their anchors (per-anchor head)
    or on their boxes (RoI head: ``RoiAlign``, opset >= 16).
    """

    def __init__(self, model: RetinaFace, dense_mesh: bool) -> None:
        super().__init__()
        self.model = model
        self.dense_mesh = dense_mesh
        self.register_buffer("pixel_mean", torch.tensor(model.config.pixel_mean_bgr, dtype=torch.float32))
        self.box_coder = box_coder_for(model.config)
        self.strides = model.anchor_generator.strides
        self.sizes_per_level = model.anchor_generator.sizes_per_level

    def anchors(self, features: list[Tensor]) -> Tensor:
        """:class:`~retinaface.anchors.AnchorGenerator`'s anchors ``Tensor[A, 4]``, from the feature maps' traced
        (dynamic) shapes; a session with fixed input sizes folds them into constants."""
        per_level = []
        for feature, stride, sizes in zip(features, self.strides, self.sizes_per_level):
            ys = (torch.arange(feature.shape[-2], dtype=torch.float32) + 0.5) * stride
            xs = (torch.arange(feature.shape[-1], dtype=torch.float32) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
            side = torch.tensor(sizes, dtype=torch.float32).reshape(1, -1, 1).expand_as(centres)
            per_level.append(torch.cat([centres, side], dim=-1).reshape(-1, 4))
        return torch.cat(per_level, dim=0)

    def _decode_landmarks(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """:meth:`BoxCoder.decode_landmarks` on ``Tensor[K, 10]``, flat: a reshape to ``[K, 5, 2]`` has no
        valid ONNX form for K = 0 (no face)."""
        points = self.model.heads.values_per_task[2] // 2
        centres, sizes = anchors[:, :2].repeat(1, points), anchors[:, 2:].repeat(1, points)
        return centres + deltas * self.box_coder.center_variance * sizes

    def _sparse_mesh(self, features: list[Tensor], image_ids: Tensor, anchor_ids: Tensor) -> Tensor:
        """:class:`~retinaface.heads.SparseMeshCoefficients` indexing, traceable: ``Tensor[D, M]``."""
        mesh = self.model.heads.mesh.sparse(features)
        num_levels, per_location, coefficients, channels = mesh.weight.shape
        locations, slots = anchor_ids // per_location, anchor_ids % per_location
        level = torch.zeros_like(locations)
        end = 0
        for feature in features[:-1]:
            end = end + feature.shape[-2] * feature.shape[-1]
            level = level + (locations >= end).long()
        picked = mesh.features.flatten(0, 1)[image_ids * mesh.features.shape[1] + locations]  # [D, C]
        every_head = picked @ mesh.weight.reshape(-1, channels).T + mesh.bias.reshape(-1)
        block = (level * per_location + slots)[:, None, None].expand(-1, 1, coefficients)
        return every_head.unflatten(1, (num_levels * per_location, coefficients)).gather(1, block).squeeze(1)

    def forward(
        self, images: Tensor, score_threshold: Tensor, nms_threshold: Tensor, pre_nms_top_k: Tensor, max_detections: Tensor
    ) -> tuple[Tensor, ...]:
        heads = self.model.heads
        # Layout first, on bytes; then the mean per channel plane (one DequantizeLinear after the export).
        # onnxruntime's Sub broadcasting a 3-vector over NHWC pixels measured 20 ms at 640x480.
        batch = images.permute(0, 3, 1, 2).float() - self.pixel_mean.view(3, 1, 1)
        features = self.model.context_features(batch)
        merged = heads.merged_outputs(features)  # [N, A, 16]
        num_anchors = merged.shape[1]
        rows = merged.flatten(0, 1)
        scores = face_probability(rows[:, :2])  # the two logit columns only: no copy of the whole table
        flat = torch.nonzero(scores > score_threshold).squeeze(1)  # image-major, ascending
        image_ids, anchor_ids, candidate_scores = flat // num_anchors, flat % num_anchors, scores[flat]
        candidate_anchors = self.anchors(features)[anchor_ids]
        _, box_deltas, landmark_deltas = heads.split(rows[flat])
        boxes = self.box_coder.decode_boxes(box_deltas, candidate_anchors)
        # One NMS "class" per image: a candidate scores -1 (below NMS's own threshold) in the other images.
        owner = torch.arange(images.shape[0])[:, None] == image_ids[None, :]
        per_image = _TopKPerRow.apply(torch.where(owner, candidate_scores[None, :], torch.tensor(-1.0)), pre_nms_top_k)
        selected = _NonMaxSuppression.apply(boxes[None], per_image[None], max_detections, nms_threshold, torch.tensor(-0.5))
        kept_images, keep = selected[:, 1], selected[:, 2]  # image-major, by descending score within an image
        kept_flat = flat[keep]
        if isinstance(heads.mesh, RoIMeshHead):
            mesh = heads.mesh(features, kept_images, boxes[keep], images=batch)
        elif self.dense_mesh:
            mesh = heads.mesh(features).flatten(0, 1)[kept_flat]
        else:
            mesh = self._sparse_mesh(features, kept_images, anchor_ids[keep])
        landmarks = self._decode_landmarks(landmark_deltas[keep], candidate_anchors[keep])
        return kept_images, candidate_scores[keep], boxes[keep], landmarks, mesh


def export_onnx(
    model: RetinaFace, path: str | os.PathLike | None = None, *, opset: int = 17, dense_mesh: bool = False,
    channel_block: int | None = None,
) -> bytes:
    """Export the whole detector as one ONNX graph, from 8-bit images to final detections, with dynamic
    batch, height and width and the model config in the metadata.

    The graph is an inference copy of ``model`` (BatchNorm folded, score/box/landmark heads merged, MobileNet
    channels padded to a multiple of ``channel_block``: default onnxruntime's NCHWc block on this machine's CPU,
    16 with AVX-512 and 8 with AVX2, :func:`~retinaface.utils.cpu.onnxruntime_channel_block`; a graph is
    fastest on the kind of CPU it was exported on) followed by the post-processing of
    :class:`~retinaface.postprocess.DetectionPostProcessor`: same detections up to float rounding.

    Inputs:

    - ``images``: ``uint8[N, H, W, 3]``, BGR (an OpenCV image with a batch axis). Images of different sizes
      go in one batch padded at the bottom/right with the pixel mean (104, 117, 123).
    - ``score_threshold`` ``float32[]``: face probability a detection must exceed (0.5 in the detector)
    - ``nms_threshold`` ``float32[]``: IoU above which a lower-scored box is suppressed (0.4)
    - ``pre_nms_top_k`` ``int64[]``: candidates per image kept, by score, before NMS (5000)
    - ``max_detections`` ``int64[]``: detections per image kept after NMS (750)

    Outputs, one row per detection, grouped by image, by descending score within an image:

    - ``image_ids`` ``int64[D]``: the detection's image in the batch
    - ``scores`` ``float32[D]``: face probability
    - ``boxes`` ``float32[D, 4]``: x1 y1 x2 y2 in input pixels (not clipped to the image)
    - ``landmarks`` ``float32[D, 10]``: x, y of the left eye, right eye, nose, left and right mouth corner
    - ``mesh_coefficients`` ``float32[D, 144]``: the mesh head's raw parameters, computed for the kept
      detections only: the RoI head (``mesh_head="roi"``) on their boxes, the per-anchor head at their
      anchors; ``dense_mesh`` computes the per-anchor head for every anchor first, as the training graph
      does (slower; the RoI head has no such form).

    Writes ``path`` (atomically) when given; returns the bytes.
    """
    import onnx

    from ..outputs.atomic import atomic_write

    if model.config.mesh_head == "roi" and dense_mesh:
        raise ValueError("dense_mesh applies to the per-anchor mesh head; this model's mesh head reads boxes (mesh_head='roi')")
    if model.config.mesh_head == "roi" and opset < 16:
        raise ValueError(f"the RoI mesh head exports as RoiAlign with half-pixel sampling, which needs opset >= 16 (got {opset})")
    # Export an inference copy: BatchNorm folded, heads merged and, for the MobileNet trunk, channels padded
    # to onnxruntime's channel blocks on this CPU (16 with AVX-512: the x0.25 trunk's 8-channel stem would
    # otherwise force a layout round trip; 8 with AVX2, where the stem fills a block and padding would double
    # its work). All three leave the outputs unchanged; the caller's model is untouched.
    if channel_block is None:
        from ..utils.cpu import onnxruntime_channel_block

        channel_block = onnxruntime_channel_block()
    if channel_block < 1:
        raise ValueError(f"channel_block must be positive, got {channel_block}")
    model = copy.deepcopy(model).fuse_for_inference().to(memory_format=torch.contiguous_format)
    if hasattr(model.backbone, "pad_channels"):
        model.backbone.pad_channels(channel_block)
    settings = (torch.tensor(0.5), torch.tensor(0.4), torch.tensor(5000), torch.tensor(750))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            _DetectionGraph(model, dense_mesh),
            (torch.zeros(1, 64, 64, 3, dtype=torch.uint8), *settings),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME, *SETTING_INPUTS],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch", 1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUT_NAMES}},
        )
    proto = onnx.load_model_from_string(buffer.getvalue())
    _cast_and_mean_as_dequantize(proto, model.config.pixel_mean_bgr)
    for key, value in ((CONFIG_METADATA_KEY, config_to_dict(model.config)), (FORMAT_METADATA_KEY, FORMAT_VERSION), (CHANNEL_BLOCK_METADATA_KEY, channel_block)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    data = proto.SerializeToString()
    if path is not None:
        atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return data


def _cast_and_mean_as_dequantize(proto, pixel_mean_bgr: tuple[float, float, float]) -> None:
    """Replace the traced ``Cast(uint8 -> float) -> Sub(mean)`` on the NCHW input by one per-channel
    ``DequantizeLinear`` (``(x - zero_point) * 1``, zero point = the mean): the same values in one pass over
    the pixels instead of two. Left as it is when the mean is not whole numbers in 0-255."""
    import onnx
    from onnx import numpy_helper

    mean = np.asarray(pixel_mean_bgr, dtype=np.float64)
    if not (np.all(mean == np.round(mean)) and np.all((mean >= 0) & (mean <= 255))):
        return
    nodes = list(proto.graph.node)
    cast = next((n for n in nodes if n.op_type == "Cast"), None)
    sub = next((n for n in nodes if n.op_type == "Sub" and cast is not None and n.input[0] == cast.output[0]), None)
    if sub is None or sum(cast.output[0] in n.input for n in nodes) != 1:
        raise RuntimeError("unexpected exported graph: no Cast -> Sub at the input")
    scale = numpy_helper.from_array(np.ones(3, np.float32), name="pixel_scale")
    zero_point = numpy_helper.from_array(mean.astype(np.uint8), name="pixel_zero_point")
    proto.graph.initializer.extend([scale, zero_point])
    dequantize = onnx.helper.make_node(
        "DequantizeLinear", [cast.input[0], scale.name, zero_point.name], [sub.output[0]], name="/PixelMean", axis=1
    )
    index = nodes.index(cast)
    if sum(sub.input[1] in n.input for n in nodes) == 1:  # the mean constant is now unused
        kept = [t for t in proto.graph.initializer if t.name != sub.input[1]]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
    del proto.graph.node[:]
    proto.graph.node.extend([*nodes[:index], dequantize, *(n for n in nodes[index + 1 :] if n is not sub)])


def _session(onnx_model: bytes | str, threads: int | None, fixed_shape: tuple[int, int, int] | None = None, *, spinning: bool = True):
    """onnxruntime CPU session; ``fixed_shape`` ``(batch, height, width)`` pins the dynamic input axes so that
    shapes are constant-folded and buffers planned once (a few percent faster per call). ``spinning``:
    onnxruntime's default of worker threads that spin between calls (faster for calls back to back on
    otherwise idle cores); ``False``: they sleep (faster beside other busy threads; docs/speed.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if fixed_shape is not None:
        for name, size in zip(("batch", "height", "width"), fixed_shape):
            options.add_free_dimension_override_by_name(name, size)
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def setting_inputs(postprocessor: DetectionPostProcessor) -> dict[str, np.ndarray]:
    """The exported graph's four setting inputs (0-d arrays) holding ``postprocessor``'s settings."""
    return {
        "score_threshold": np.array(postprocessor.score_threshold, np.float32),
        "nms_threshold": np.array(postprocessor.nms_threshold, np.float32),
        "pre_nms_top_k": np.array(postprocessor.pre_nms_top_k, np.int64),
        "max_detections": np.array(postprocessor.max_detections, np.int64),
    }


_CALLER_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("onnxruntime_threads", default=None)
"""PyTorch's thread count in the caller of :meth:`OnnxRetinaFace.detect` (per thread: each has its own context)."""


class SessionCache:
    """onnxruntime sessions of one graph, per intra-op thread count and spinning setting: the dynamic-shape
    session, and a shape-specialised one for a ``(batch, height, width)`` input once that shape has come twice
    (video frames, repeated sizes), for the first ``max_fixed`` shapes that do; later shapes use the dynamic
    session. (Replacing the least recently used instead made a folder cycling through more sizes than that
    build a new session, about 40 ms, for every image.)"""

    def __init__(self, onnx_model: bytes, *, max_fixed: int = 4) -> None:
        self.onnx_model, self.max_fixed = onnx_model, max_fixed
        self.dynamic: dict[tuple[int, bool], object] = {}
        self.seen: set[tuple[int, bool, int, int, int]] = set()
        self.fixed: dict[tuple[int, bool, int, int, int], object] = {}

    def __call__(self, shape: tuple[int, int, int], threads: int, spinning: bool = True):
        """The session to run an input of ``shape`` ``(batch, height, width)`` with on ``threads`` threads."""
        key = (threads, spinning, *shape)
        if key in self.fixed:
            return self.fixed[key]
        if key not in self.seen or len(self.fixed) >= self.max_fixed:
            if len(self.seen) >= 1024:  # a folder of ever-new sizes must not grow memory
                self.seen.clear()
            self.seen.add(key)
            return self.dynamic_session(threads, spinning)
        self.fixed[key] = _session(self.onnx_model, threads, fixed_shape=shape, spinning=spinning)
        return self.fixed[key]

    def dynamic_session(self, threads: int, spinning: bool = True):
        """The dynamic-shape session on ``threads`` threads (built on first use)."""
        if (threads, spinning) not in self.dynamic:
            self.dynamic[threads, spinning] = _session(self.onnx_model, threads, spinning=spinning)
        return self.dynamic[threads, spinning]


def float_input_graph(onnx_model: bytes) -> bytes:
    """The :func:`export_onnx` graph with the network's own input instead of 8-bit pixels: ``images`` becomes
    ``float32[N, 3, H, W]``, BGR with the pixel mean subtracted (what :class:`~retinaface.model.transform.ImagePreprocessor`
    gives, padding 0), and the graph's first steps (layout change, cast, mean) are removed. Same outputs as the
    8-bit graph for 8-bit pixels; for resized images it spares the rounding to whole grey levels."""
    import onnx

    proto = onnx.load_model_from_string(onnx_model)
    graph = proto.graph
    nodes = list(graph.node)
    # the chain from the 8-bit input to the normalised batch: Transpose -> DequantizeLinear (or Cast -> Sub)
    chain, tensor = [], INPUT_NAME
    while not chain or chain[-1].op_type not in ("DequantizeLinear", "Sub"):
        consumers = [n for n in nodes if tensor in n.input and n.op_type in ("Transpose", "Cast", "DequantizeLinear", "Sub")]
        if len(consumers) != 1 or len(chain) > 3:
            raise RuntimeError("unexpected exported graph: no Transpose -> DequantizeLinear (or Cast -> Sub) at the input")
        chain.append(consumers[0])
        tensor = consumers[0].output[0]
    normalised = chain[-1].output[0]
    kept = [n for n in nodes if n not in chain]
    for node in kept:  # the normalised batch is now the input itself
        for i, name in enumerate(node.input):
            if name == normalised:
                node.input[i] = INPUT_NAME
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used]  # the mean and scale of the removed steps go
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    graph_input = next(i for i in graph.input if i.name == INPUT_NAME)
    graph_input.CopyFrom(onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"]))
    return proto.SerializeToString()


def without_mesh_head(onnx_model: bytes) -> bytes:
    """The :func:`export_onnx` graph without its ``mesh_coefficients`` output and the mesh head's nodes that
    only it needs (onnxruntime runs every node of a graph whatever outputs are asked for): the same other
    outputs, for callers that read no mesh coefficients (crowd.jpg, 27 faces: 0.79x the detector call)."""
    import onnx
    from onnx.utils import Extractor

    proto = onnx.load_model_from_string(onnx_model)
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    extracted = Extractor(proto).extract_model(inputs, list(HEADLESS_OUTPUT_NAMES))
    del extracted.metadata_props[:]
    extracted.metadata_props.extend(proto.metadata_props)
    return extracted.SerializeToString()


class OnnxRetinaFace(DetectionModel):
    """Inference-only stand-in for :class:`RetinaFace` running an :func:`export_onnx` graph in onnxruntime.

    :meth:`detect` has the inputs and outputs of :meth:`RetinaFace.detect`, so
    :class:`~retinaface.detector.Detector` drives either backend. The graph does everything but the resizing
    for ``max_size`` and the mapping back to the original image, which are the PyTorch backend's own code.
    8-bit images at their own size go to the graph as they are; a batch with an image resized for
    ``max_size`` (or a float image) goes as the PyTorch preprocessing's float batch, unrounded, to the same
    graph with its first steps removed (:func:`float_input_graph`). ``threads``: onnxruntime's intra-op
    threads (default: PyTorch's thread count when :meth:`detect` is called, so that ``torch.set_num_threads``
    and :func:`~retinaface.utils.threads.torch_threads` govern both backends). ``spinning``: whether idle
    onnxruntime threads spin between calls (its own default) or sleep, unless the caller says otherwise with
    :func:`~retinaface.utils.threads.onnxruntime_spinning` (detect.py's pipelines: sleep).
    """

    # The few tensor ops left around the graph are faster on one PyTorch thread than waiting for cores that
    # onnxruntime's own threads hold (measured on 2 busy cores).
    pipeline_threads = 1
    MAX_FIXED_SESSIONS = 4

    def __init__(
        self, onnx_model: bytes, *, inference: InferenceConfig | None = None, threads: int | None = None, spinning: bool = True,
    ) -> None:
        super().__init__()
        import onnx

        proto = onnx.load_model_from_string(onnx_model)
        metadata = {p.key: p.value for p in proto.metadata_props}
        if CONFIG_METADATA_KEY not in metadata or json.loads(metadata.get(FORMAT_METADATA_KEY, "1")) != FORMAT_VERSION:
            raise ValueError("this ONNX file was not exported by this version of `retinaface export`; export it again")
        self.config = ModelConfig.from_stored(json.loads(metadata[CONFIG_METADATA_KEY]))
        self.preprocessor, self.anchor_generator, self.postprocessor = build_detection_stages(
            self.config, inference or InferenceConfig()
        )
        # Padding a batch with the mean colour makes padded pixels exactly 0 after the graph's subtraction.
        self._pad_value = np.array(self.config.pixel_mean_bgr).round().clip(0, 255).astype(np.uint8)
        self.onnx_model, self.threads, self.spinning = onnx_model, threads, spinning
        self._forms: dict[tuple[bool, bool], SessionCache] = {}
        # onnxruntime checks a graph when it builds a session: build the one a first call uses now, so that an
        # unusable file is refused when it is loaded (Detector.from_pretrained reports it) and not mid-run
        self.sessions.dynamic_session(threads or torch.get_num_threads(), spinning)

    def sessions_for(self, *, float_input: bool, mesh: bool) -> SessionCache:
        """Sessions of one form of the graph: 8-bit or float input (:func:`float_input_graph`), with or
        without the mesh head (:func:`without_mesh_head`); each form is built when first needed."""
        key = (float_input, mesh)
        if key not in self._forms:
            graph = self.onnx_model if mesh else without_mesh_head(self.onnx_model)
            self._forms[key] = SessionCache(float_input_graph(graph) if float_input else graph, max_fixed=self.MAX_FIXED_SESSIONS)
        return self._forms[key]

    @property
    def sessions(self) -> SessionCache:
        """Sessions of the graph as exported: 8-bit input, with the mesh head."""
        return self.sessions_for(float_input=False, mesh=True)

    def network_input(self, images: list[Tensor]) -> tuple[np.ndarray, list[float]]:
        """The graph's input for BGR ``Tensor[3, H, W]`` images, and each image's scale: ``uint8[N, Hp, Wp, 3]``
        when every image is 8-bit at its own size (a single image that came from a contiguous
        ``ndarray[H, W, 3]`` is passed on without a copy), else the preprocessing's ``float32[N, 3, Hp, Wp]``
        (mean subtracted) for :func:`float_input_graph`."""
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a Tensor[3, H, W] BGR image, got shape {tuple(image.shape)}")
        scales = [self.preprocessor.scale_for(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        if any(scale != 1.0 for scale in scales) or any(image.dtype != torch.uint8 for image in images):
            batch, _, scales, _ = self.preprocessor(images)
            return batch.numpy(), scales
        arrays = [image.permute(1, 2, 0).numpy() for image in images]
        if len(arrays) == 1:
            return np.ascontiguousarray(arrays[0])[None], scales
        batch = np.empty((len(arrays), max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays), 3), np.uint8)
        batch[:] = self._pad_value
        for slot, array in zip(batch, arrays):
            slot[: array.shape[0], : array.shape[1]] = array
        return batch, scales

    def settings(self) -> dict[str, np.ndarray]:
        """The graph's setting inputs from the postprocessor (whose thresholds :class:`Detector` may change)."""
        return setting_inputs(self.postprocessor)

    def run_graph(self, batch: np.ndarray, *, mesh: bool = True) -> dict[str, Tensor]:
        """The graph's outputs (see :func:`export_onnx`) for a ``uint8[N, H, W, 3]`` batch, or a ``float32[N, 3, H, W]``
        one (:func:`float_input_graph`), at the postprocessor's settings. ``mesh=False``: the graph without the
        mesh head (:func:`without_mesh_head`), whose ``mesh_coefficients`` are ``Tensor[D, 0]``."""
        threads = self.threads or _CALLER_THREADS.get() or torch.get_num_threads()
        spinning = self.spinning if ONNXRUNTIME_SPINNING.get() is None else ONNXRUNTIME_SPINNING.get()
        float_input = batch.dtype != np.uint8
        shape = (batch.shape[0], *batch.shape[2:]) if float_input else batch.shape[:3]
        session = self.sessions_for(float_input=float_input, mesh=mesh)(shape, threads, spinning)
        names = OUTPUT_NAMES if mesh else HEADLESS_OUTPUT_NAMES
        out = {name: torch.from_numpy(array) for name, array in zip(names, session.run(names, {INPUT_NAME: batch, **self.settings()}))}
        if not mesh:
            out["mesh_coefficients"] = out["scores"].new_zeros((len(out["scores"]), 0))
        return out

    def detect(self, images, *, mesh: bool = True) -> list[dict[str, Tensor]]:
        # the caller's PyTorch thread count, read before the pipeline's own few ops switch to one thread
        token = _CALLER_THREADS.set(torch.get_num_threads())
        try:
            return super().detect(images, mesh=mesh)
        finally:
            _CALLER_THREADS.reset(token)

    def detect_resized(self, images: list[Tensor], *, mesh: bool = True) -> tuple[list[dict[str, Tensor]], list[float]]:
        batch, scales = self.network_input(images)
        out = self.run_graph(batch, mesh=mesh)
        fields = {"boxes": out["boxes"], "scores": out["scores"], "landmarks": out["landmarks"].unflatten(-1, (-1, 2)),
                  "mesh_coefficients": out["mesh_coefficients"]}
        if len(images) == 1:
            return [fields], scales
        counts = torch.bincount(out["image_ids"], minlength=len(images)).tolist()
        return [dict(zip(fields, parts)) for parts in zip(*(value.split(counts) for value in fields.values()))], scales

    def forward(self, images: list[Tensor] | Tensor, targets=None) -> list[dict[str, Tensor]]:
        if targets is not None:
            raise RuntimeError("the onnxruntime backend is for inference only")
        return self.detect(images)


def verify_export(model: RetinaFace, onnx_model: bytes, image_bgr: np.ndarray, *, seed: int = 0, score_threshold: float = 0.02) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch detections, per output, on a random batch
    of two odd-sized 8-bit inputs and on ``image_bgr`` (``ndarray[H, W, 3]`` uint8), at ``score_threshold``.

    The reference is ``model`` itself (usually unfused): its raw outputs through
    :class:`~retinaface.postprocess.DetectionPostProcessor`. Different detection counts give ``inf`` under
    ``count``."""
    session = _session(onnx_model, None)
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (2, 97, 131, 3), generator=generator, dtype=torch.uint8), torch.from_numpy(image_bgr)[None]]
    post = model.postprocessor
    reference = DetectionPostProcessor(box_coder=box_coder_for(model.config), score_threshold=score_threshold,
                                       nms_threshold=post.nms_threshold, pre_nms_top_k=post.pre_nms_top_k, max_detections=post.max_detections)
    feed_settings = setting_inputs(reference)
    errors = {"count": 0.0, **{name: 0.0 for name in OUTPUT_NAMES[1:]}}
    for images in inputs:
        batch = model.preprocessor(list(images.permute(0, 3, 1, 2)))[0]
        with torch.no_grad():
            outputs, anchors = model.eval().head_outputs(batch, dense_mesh=False)
            expected = reference(outputs, anchors)
        got = dict(zip(OUTPUT_NAMES, (torch.from_numpy(a) for a in session.run(OUTPUT_NAMES, {INPUT_NAME: images.numpy(), **feed_settings}))))
        for image, want in enumerate(expected):
            mine = got["image_ids"] == image
            if int(mine.sum()) != len(want["scores"]):
                errors["count"] = float("inf")
                continue
            for name in OUTPUT_NAMES[1:]:
                value = want[name].flatten(1) if name == "landmarks" else want[name]
                if value.numel():
                    errors[name] = max(errors[name], float((value - got[name][mine]).abs().max()))
    return errors
