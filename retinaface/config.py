"""Configuration dataclasses, named presets and ``--key=value`` overrides.

One dataclass per concern: :class:`ModelConfig` describes the network (enough to
rebuild it from a checkpoint alone), :class:`InferenceConfig` the test-time
behaviour, :class:`LossConfig` the training objective. Modules receive plain keyword
arguments built from these; nothing reads a global config. Each default lives in its
dataclass field only: code needing it elsewhere reads the field (``InferenceConfig.score_threshold``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .mesh.coefficients import MESH_COEFFICIENT_LAYOUT, NUM_MESH_COEFFICIENTS
from .errors import ConfigError


def check_fields(config: Any, rules: Mapping[str, tuple[Callable[[Any], bool], str]]) -> None:
    """``ConfigError`` for the first field whose value breaks its rule: ``{name: (test, "what is expected")}``.

    Called from a config's ``__post_init__``, so presets, ``--key=value`` overrides and configs stored in
    checkpoints are all checked when they are built, before any work.
    """
    for key, (test, expected) in rules.items():
        value = getattr(config, key)
        if not test(value):
            raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


MESH_STARTS = ("pnp", "head")
"""Where a face's first mesh fit starts: ``"pnp"``, the prior's mean face posed by PnP of the five landmarks;
``"head"``, the detector's own mesh (its RoI mesh head's coefficients: shape weights, rotation, camera and
light; :func:`retinaface.mesh.head_start.state_from_coefficients`). A tracked face's later frames start
from its previous fit either way."""
DEFAULT_MESH_START = "pnp"


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a RetinaFace network."""

    backbone: str = "mobilenet0.25"
    """``"mobilenet0.25"`` (MobileNetV1 x0.25) or ``"resnet50"`` (torchvision)."""
    fpn_channels: int = 64
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    """Anchor side lengths in pixels, one tuple per pyramid level."""
    anchor_strides: tuple[int, ...] = (8, 16, 32)
    box_variances: tuple[float, float] = (0.1, 0.2)
    """Scale of centre and log-size offsets in the box/landmark coding."""
    pixel_mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    num_mesh_coefficients: int = NUM_MESH_COEFFICIENTS
    mesh_decoder_channels: tuple[int, ...] = (64, 32, 16)
    """Graph-conv widths of the mesh decoder, coarsest level first."""
    mesh_chebyshev_order: int = 6
    mesh_head: str = "roi"
    """Where each face's mesh coefficients come from. ``"roi"`` (new models): RoI Align of the face's box on
    the pyramid level its size belongs to, 3x3 convs and a linear layer (:class:`~retinaface.model.heads.RoIMeshHead`),
    run at the kept detections and, in training, at the pixel term's faces. ``"anchor"``: the paper's 1x1 conv
    per anchor, which the released weights use. A stored config without this key (the released weights,
    checkpoints written before the key existed) means ``"anchor"``: see :meth:`from_stored`. Why the default
    departs from the paper: docs/training.md."""
    mesh_roi_size: int = 8
    """Side (cells) of the ``roi`` head's RoI Align output."""
    mesh_roi_convs: int = 3
    """3x3 convs of the ``roi`` head (the last has stride 2, halving the side before the linear layer)."""
    mesh_roi_pixels: int = 32
    """Feature maps the ``roi`` head also reads from the face's own pixels (a crop of 4 x ``mesh_roi_size``
    px through two stride-2 convs); 0: the SSH features only. A stored ``roi`` config without this key was
    built without them (:meth:`from_stored`)."""
    mesh_roi_test_offset: float = 0.0
    """With a value above 0 the ``roi`` head reads each face four times at inference (eval mode), at copies of
    its box moved right, left, down and up by this fraction of the box's side, and returns the mean of the
    readings; 0 (the default, the released weights): one reading at the box. Training reads are unaffected.
    The head's pose depends on where the box sits on the face, and a detection's box misses the face's by a
    median IoU of 0.84 on synthetic faces: readings placed symmetrically about it average part of that out,
    at about three times the head's cost (docs/training.md). The ``mobilenet0.25-pixels64`` model, which the
    synthetic mesh preset trains, reads four times (0.05)."""

    def __post_init__(self) -> None:
        check_fields(self, _MODEL_RULES)

    @property
    def num_anchors_per_location(self) -> int:
        counts = {len(sizes) for sizes in self.anchor_sizes}
        if len(counts) != 1:
            raise ConfigError("every pyramid level needs the same number of anchor sizes")
        return counts.pop()

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """The config of a weights file, checkpoint or ONNX file (:func:`config_to_dict` output). One written
        before the mesh head was a choice has no ``mesh_head`` key and was built with the per-anchor head, so
        a missing key means ``"anchor"``, not today's default; likewise a missing ``mesh_roi_pixels`` means a
        RoI head without the pixel branch (0)."""
        return config_from_dict(cls, {"mesh_head": "anchor", "mesh_roi_pixels": 0, **data})

    def without_mesh_head(self) -> "ModelConfig":
        """This config with the mesh-head settings at their defaults: compares two configs' detection
        networks (backbone to score, box and landmark heads), whichever mesh head each has."""
        return dataclasses.replace(self, **{name: getattr(ModelConfig, name) for name in MESH_HEAD_FIELDS})


MESH_HEAD_FIELDS = ("mesh_head", "mesh_roi_size", "mesh_roi_convs", "mesh_roi_pixels", "mesh_roi_test_offset")
"""The :class:`ModelConfig` fields that describe the mesh head alone (not the detection network)."""


_MODEL_RULES = {
    "mesh_head": (lambda v: v in ("anchor", "roi"), "anchor or roi"),
    "mesh_roi_size": (lambda v: v >= 1, "an integer >= 1 (cells)"),
    "mesh_roi_convs": (lambda v: v >= 0, "an integer >= 0"),
    "mesh_roi_pixels": (lambda v: v >= 0, "an integer >= 0 (0: no pixel branch)"),
    "mesh_roi_test_offset": (lambda v: 0 <= v < 0.5, "a number in [0, 0.5) (fraction of the box side; 0: one reading)"),
}


@dataclass(frozen=True)
class InferenceConfig:
    """Test-time detection settings."""

    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    pre_nms_top_k: int = 5000
    """Highest-scoring candidates per image kept before NMS."""
    max_detections: int = 750
    max_size: int | None = None
    """Downscale images whose long side exceeds this many pixels (``None``: original size)."""


@dataclass(frozen=True)
class RefineConfig:
    """Second look at each detected face for steadier landmarks (:class:`~retinaface.inference.refine.LandmarkRefiner`)."""

    face_size: int = 160
    """Pixels the face box's longer side is resampled to in its crop (small faces are enlarged)."""
    context: float = 2.0
    """Crop side as a multiple of the box's longer side (the detector needs some surroundings)."""
    flip: bool = True
    """Also look at the mirrored crop."""
    upright: bool = True
    """Turn each crop so that the face is upright (its roll estimated from the first landmarks): the detector
    learned from mostly upright faces, and its landmarks on rolled heads are worse."""
    upright_tolerance: float = 0.0
    """With ``upright``: degrees of roll left in the crop (it is turned by the rest). In videos, turning the crops
    of upright faces by their frame-to-frame wobble of estimated roll shakes their landmarks (bench_jitter:
    0.105 against 0.089 px from frame to frame); on stills, turning fully upright is the more accurate."""
    first_look_rolls: tuple[float, float] = (10.0, 20.0)
    """With ``upright``: rolls (degrees) over which the first detection's landmarks go from counting fully to
    not at all against the upright crops' answers; on rolled faces they are the worse ones (photos turned by
    25 degrees: median NME 0.038 with them, 0.034 without, against mediapipe)."""
    only_rolled: bool = False
    """Look again only at faces whose first landmarks do not count fully (rolled beyond the first of
    ``first_look_rolls``): the refinement for rolled faces alone, at no cost for upright ones."""
    min_iou: float = 0.3
    """A crop's detection counts as the same face if its box overlaps the expected box at least this much."""


@dataclass(frozen=True)
class SmoothConfig:
    """One-Euro smoothing of each track's box and landmarks in videos (:class:`~retinaface.faces.tracking.OneEuroFilter`),
    applied before the mesh fit so that meshes and poses follow the smoothed landmarks."""

    min_cutoff: float = 1.0
    """Cut-off frequency (Hz) for a still face: lower is steadier."""
    beta: float = 0.05
    """How fast the cut-off rises with speed: higher lags less behind moving faces."""


@dataclass(frozen=True)
class LossConfig:
    """Training objective ``L = cls_weight L_cls + box_weight L_box + landmark_weight L_pts + pixel_weight L_pixel``
    (weights of the RetinaFace paper) and how its targets are chosen."""

    cls_weight: float = 1.0
    box_weight: float = 0.25
    landmark_weight: float = 0.1
    pixel_weight: float = 0.01
    """0 leaves the mesh pixel loss out (the mesh branch is then not run in training)."""
    positive_iou: float = 0.5
    """Anchors with IoU at least this with a face are positives (each face also keeps its best anchor)."""
    negative_iou: float = 0.3
    """Anchors below this IoU with every face are background; those in between are ignored."""
    negative_ratio: float = 3.0
    """Hard negatives per positive (online hard example mining, per image)."""
    min_negatives: int = 16
    """Hard negatives per image at least (images without faces still teach background)."""
    max_mesh_faces: int = 16
    """Positives per batch rendered for the pixel loss (a random subset beyond this)."""
    mesh_crop_size: int = 112
    """Side of the face crops the pixel loss compares renders with."""
    mesh_latent_weight: float = 1e-3
    """Weight of ``mean(P_ST^2)`` in the pixel loss (keeps shape/texture codes small)."""
    mesh_smoothness_weight: float = 1.0
    """Weight of the Laplacian smoothness of the decoded vertex offsets in the pixel loss."""
    mesh_pixel_levels: int = 4
    """Resolutions the pixel L1 is averaged over (1: the paper's single-scale L1; 4: full, 1/2, 1/4, 1/8)."""
    mesh_box_weight: float = 1.0
    """Weight of the term tying the rendered face's extent to the face box (0: the paper's loss, where a
    render smaller than the face costs nothing)."""
    mesh_landmark_weight: float = 0.0
    """Weight of ``loss_mesh_landmarks``, a term the paper does not have (0, the default, leaves it out): the
    mesh's five landmark vertices, placed by the head's coefficients at every positive anchor, against the
    face's annotated landmarks (mean distance in the crop's NDC). Tried at 0.01 because the pixel term alone
    did not teach the head rotation in the synthetic preset; it did not either, at 1.35x the step time
    (docs/training.md), so it is off."""
    mesh_truth_weight: float = 0.0
    """Weight of ``loss_mesh_truth``, a term the paper does not have, for data that knows each face's mesh
    coefficients (the synthetic set's ``render_params.json``): at each face's best anchor, the head's rotation,
    light and shape against the truth the face was rendered from
    (:func:`retinaface.mesh.coefficients.truth_distances`; flipped images: rotation and light of the mirrored
    truth). 0 (the default) leaves it out; real annotations have no truth, so it never applies to them."""
    mesh_truth_light_weight: float = 0.5
    """Weight of the light distance inside ``loss_mesh_truth`` (the rotation's is 1)."""
    mesh_truth_shape_weight: float = 0.2
    """Weight of the shape distance inside ``loss_mesh_truth``."""
    mesh_truth_vertex_weight: float = 0.0
    """Weight of the vertex placement distance inside ``loss_mesh_truth`` (0: left out): the face's true shape
    placed in the image by the head's camera at the box it was read at, against the same shape placed by
    the true camera where the face was rendered, mean distance per vertex in units of the box side
    (:func:`retinaface.mesh.branch.placement_distance`). For faces whose target has a ``mesh_placement`` (a
    synthetic set's render squares) in images that were not flipped (a mirrored face is not a shape of the
    prior). Rotation, location, distance and focal length are scored together, in the image, where a
    wrong turn of the head moves every vertex. Off in the presets: in detector training it traded the
    light's accuracy for the rotation's (docs/training.md)."""
    mesh_truth_reads: int = 1
    """Boxes per face the RoI head is read at for ``loss_mesh_truth``: the face's box and ``reads - 1``
    copies moved and scaled at random by up to ``mesh_truth_jitter`` of its side (detections differ from the
    true box by that much). More faces per step for the head at little cost (the trunk runs once)."""
    mesh_truth_jitter: float = 0.1
    """Largest shift and scale change of the jittered boxes, as a fraction of the box side."""

    def __post_init__(self) -> None:
        check_fields(self, _LOSS_RULES)


def _non_negative(value: float) -> bool:
    return value >= 0


_LOSS_RULES = {
    **{name: (_non_negative, "a number >= 0") for name in (
        "cls_weight", "box_weight", "landmark_weight", "pixel_weight", "mesh_latent_weight", "mesh_smoothness_weight",
        "mesh_box_weight", "mesh_landmark_weight", "mesh_truth_weight", "mesh_truth_light_weight",
        "mesh_truth_shape_weight", "mesh_truth_vertex_weight")},
    "positive_iou": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "negative_iou": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "negative_ratio": (lambda v: v > 0, "a number > 0"),
    "min_negatives": (lambda v: v >= 0, "an integer >= 0"),
    "max_mesh_faces": (lambda v: v >= 1, "an integer >= 1"),
    "mesh_truth_reads": (lambda v: v >= 1, "an integer >= 1"),
    "mesh_truth_jitter": (lambda v: 0 <= v < 0.5, "a number in [0, 0.5)"),
    "mesh_crop_size": (lambda v: v >= 16, "an integer >= 16 (pixels)"),
    "mesh_pixel_levels": (lambda v: v >= 1, "an integer >= 1"),
}


REFINE_PRESETS: dict[str, RefineConfig] = {
    "photo": RefineConfig(),
    # a frame's budget is a few dozen milliseconds: a smaller crop and no mirror cost about a quarter as much
    "video": RefineConfig(face_size=112, flip=False, upright_tolerance=10.0),
}
"""Landmark refinement for stills and for video frames (``detect.py`` picks by the input's kind)."""

MODEL_PRESETS: dict[str, ModelConfig] = {
    "mobilenet0.25": ModelConfig(),
    # the same detector with twice the RoI mesh head's pixel maps: in detector training on synthetic
    # truth the head learnt pose faster (docs/training.md); the released head has 32
    "mobilenet0.25-pixels64": ModelConfig(mesh_roi_pixels=64, mesh_roi_test_offset=0.05),
    "resnet50": ModelConfig(backbone="resnet50", fpn_channels=256),
}

C = TypeVar("C")


def model_preset(name: str) -> ModelConfig:
    """Return the named :class:`ModelConfig` preset; ``ConfigError`` lists the choices."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}") from None


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):  # a nested config: given whole, or as a dict (stored configs)
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return replace_config(annotation(), value)
        raise ConfigError(f"{key}: expected {annotation.__name__} settings, got {value!r}")
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _parse_literal(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def replace_config(config: C, values: Mapping[str, Any]) -> C:
    """Return a copy of dataclass ``config`` with ``values`` applied, type-checked.

    Keys of a nested config field are dotted (``loss.box_weight``); a nested field may also be given whole,
    as a dataclass or a dict. Raises ``ConfigError`` for keys the dataclass does not have.
    """
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    updates: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, dot, rest = key.partition(".")
        if dot and head in names and dataclasses.is_dataclass(hints[head]):  # "loss.box_weight": a nested config's key
            nested.setdefault(head, {})[rest] = value
            continue
        if key not in names:
            inner = [f"{name}.{key}" for name in sorted(names) if dataclasses.is_dataclass(hints[name])
                     and key in {f.name for f in dataclasses.fields(hints[name])}]
            hint = f"; did you mean {inner[0]}?" if inner else f"; known keys: {sorted(names)}"
            raise ConfigError(f"unknown config key {key!r} for {type(config).__name__}{hint}")
        updates[key] = _coerce(value, hints[key], key)
    for head, inner_values in nested.items():
        updates[head] = replace_config(updates.get(head, getattr(config, head)), inner_values)
    return dataclasses.replace(config, **updates)


def apply_overrides(config: C, overrides: Sequence[str]) -> C:
    """Apply ``["key=value", ...]`` (a leading ``--`` is allowed) to a dataclass config.

    Values are parsed as Python literals (``0.3``, ``[[16, 32], [64, 128]]``, ``none``).
    """
    values: dict[str, Any] = {}
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = text.split("=", 1)
        values[key.strip().replace("-", "_")] = _parse_literal(raw)
    return replace_config(config, values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuild a dataclass config from :func:`config_to_dict` output (unknown keys fail)."""
    return replace_config(cls(), data)


__all__ = [
    "ConfigError",
    "InferenceConfig",
    "LossConfig",
    "MESH_COEFFICIENT_LAYOUT",
    "MESH_HEAD_FIELDS",
    "MODEL_PRESETS",
    "ModelConfig",
    "REFINE_PRESETS",
    "RefineConfig",
    "NUM_MESH_COEFFICIENTS",
    "apply_overrides",
    "check_fields",
    "config_from_dict",
    "config_to_dict",
    "model_preset",
    "replace_config",
]
