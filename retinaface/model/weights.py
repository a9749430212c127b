"""Loading and saving model weights without executing code from files.

Released weights are safetensors files whose metadata holds the :class:`ModelConfig` as JSON;
training checkpoints are ``torch.save`` dicts read with ``weights_only=True``. Either way the
model is rebuilt from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..outputs.atomic import atomic_write
from ..utils.resources import package_path
from ..errors import ConfigError
from ..config import InferenceConfig, LossConfig, ModelConfig, config_to_dict
from .retinaface import RetinaFace, build_retinaface
from ..errors import WeightsError

WEIGHTS_DIR_ENV = "RETINAFACE_WEIGHTS_DIR"
PRETRAINED: dict[str, str] = {"mobilenet0.25": "retinaface_mobilenet0.25.safetensors"}



def weights_dir() -> Path:
    """Folder holding released weights: ``$RETINAFACE_WEIGHTS_DIR``, else the installed package data
    (``retinaface.pretrained``, the repository's ``weights/`` folder)."""
    override = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(override) if override else package_path("retinaface.pretrained", "")


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """Map a released-weights name (``"mobilenet0.25"``) or a file path to an existing file."""
    text = str(name_or_path)
    if text in PRETRAINED:
        path = weights_dir() / PRETRAINED[text]
        if not path.is_file():
            raise WeightsError(f"released weights {text!r} not found at {path}; reinstall the package or run scripts/convert_weights.py")
        return path
    path = Path(text).expanduser()
    if not path.exists():
        raise WeightsError(f"weights {text!r} are neither a released name ({', '.join(PRETRAINED)}) nor an existing file")
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file")
    return path


def save_safetensors(model: RetinaFace, path: str | os.PathLike, *, extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state dict and config to a safetensors file (atomically)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"model_config": json.dumps(config_to_dict(model.config)), **(extra_metadata or {})}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path} is not a valid safetensors file ({exc})") from None
    return tensors, metadata


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint dict, loaded with ``weights_only=True`` (no pickled code runs)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise WeightsError(f"{path} is not a RetinaFace checkpoint (needs 'model' and 'model_config' entries)")
    _check_state_dict(checkpoint["model"], path)
    if not isinstance(checkpoint["model_config"], dict):
        raise WeightsError(f"{path} is not a RetinaFace checkpoint: its 'model_config' is a {type(checkpoint['model_config']).__name__}, not a dict")
    return checkpoint


def _check_state_dict(state: object, path: str | os.PathLike) -> None:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{path} is not a RetinaFace checkpoint: its 'model' entry is not a dict of named tensors")


def _model_config(config_dict: object, path: Path) -> ModelConfig:
    """The stored :class:`ModelConfig` (:meth:`ModelConfig.from_stored`: a config written before the mesh head
    was a choice, such as the released weights', keeps the per-anchor head), or ``WeightsError`` naming the file."""
    if isinstance(config_dict, str):
        try:
            config_dict = json.loads(config_dict)
        except ValueError:
            raise WeightsError(f"{path} has malformed 'model_config' metadata (not JSON)") from None
    if not isinstance(config_dict, dict):
        raise WeightsError(f"{path} has malformed 'model_config' metadata (a {type(config_dict).__name__}, not an object)")
    try:
        return ModelConfig.from_stored(config_dict)
    except ConfigError as exc:
        raise WeightsError(f"{path} has a model config this version cannot build ({exc})") from None


def load_model(
    name_or_path: str | os.PathLike,
    *,
    inference: InferenceConfig | None = None,
    loss: LossConfig | None = None,
    device: str | torch.device = "cpu",
    mesh: bool = True,
    mesh_roi_test_offset: float | None = None,
) -> RetinaFace:
    """Rebuild a :class:`RetinaFace` from released weights or a checkpoint, in eval mode on ``device``.

    ``mesh=False`` builds the model without its mesh branch (no pytorch3d / torch-geometric needed) and
    ignores the branch's tensors in the file. ``mesh_roi_test_offset`` replaces the stored config's (how the
    RoI mesh head is read at inference; 0: once per face, at its box), which changes no weight.
    """
    path = resolve_weights(name_or_path)
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        if "model_config" not in metadata:
            raise WeightsError(f"{path} has no 'model_config' metadata; it was not written by this project")
        config_dict = metadata["model_config"]
    else:
        checkpoint = read_checkpoint(path)
        state, config_dict = checkpoint["model"], checkpoint["model_config"]
    config = _model_config(config_dict, path)
    try:
        if mesh_roi_test_offset is not None:
            config = dataclasses.replace(config, mesh_roi_test_offset=mesh_roi_test_offset)
        model = build_retinaface(config, inference, loss=loss, mesh=mesh)
    except (ConfigError, ValueError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"{path} has a model config this version cannot build ({str(exc).splitlines()[0]})") from None
    if not mesh:
        state = {key: value for key, value in state.items() if not key.startswith("mesh_branch.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise WeightsError(f"{path} does not match the {config.backbone} model: {detail}") from None
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not match the {config.backbone} model: {len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors (e.g. {(missing or unexpected)[0]})"
        )
    if mesh and path.suffix == ".safetensors" and "upstream" in metadata:
        # Converted published weights carry an untrained (randomly initialised) mesh decoder: use the one
        # pre-trained on the face-shape prior instead (mesh/assets/prior_decoder.safetensors).
        from ..mesh.decoder import load_prior_decoder

        load_prior_decoder(model.mesh_branch.decoder)
    return model.eval().to(device)
