"""Training output folders: an earlier run is continued only on purpose, and a resume state is checked first."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import ConfigError
from ..config import ModelConfig, model_preset
from ..errors import InputError
from ..outputs.atomic import check_writable

RUN_FILES = ("last.pt", "final.safetensors", "metrics.jsonl", "validation.jsonl", "config.json")
"""Files a training run writes into its output folder; any of them marks the folder as holding a run."""


def check_run_dir(output: str | os.PathLike, *, resume: str | os.PathLike | None) -> Path:
    """``InputError`` unless ``output`` can take this run: a new or empty folder, or, with ``resume``, the
    folder of the run being resumed. Checked before any work so no earlier run is overwritten or mixed."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file, not a folder; give a folder for the run")
    earlier = [name for name in RUN_FILES if (output / name).exists()]
    if earlier and resume is None:
        raise InputError(
            f"--output {output} holds an earlier run ({', '.join(earlier)}); continue it with "
            f"--resume {output / 'last.pt'} or choose a new --output"
        )
    if earlier and resume is not None:
        checkpoint = Path(resume)
        own = output / "last.pt"
        same = own.exists() and checkpoint.exists() and os.path.samefile(own, checkpoint)
        if not same and checkpoint.resolve().parent != output.resolve():
            raise InputError(
                f"--output {output} holds another run than {resume}; resume into a new folder (--output=NEW) or into the checkpoint's own folder"
            )
    check_writable(output / "config.json")
    return output


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_resume_state(checkpoint: dict[str, Any], config: Any, path: str | os.PathLike) -> None:
    """``ConfigError`` (one sentence) if ``checkpoint`` cannot continue training ``config``: another model,
    missing or malformed optimiser / scheduler / position / RNG state, or nothing left to train."""
    stored = checkpoint.get("model_config")
    try:
        # the mesh head is the checkpoint's own (its run began with it); the detection network is the preset's
        same = isinstance(stored, dict) and ModelConfig.from_stored(stored).without_mesh_head() == model_preset(config.model).without_mesh_head()
    except ConfigError:
        same = False
    if not same:
        backbone = stored.get("backbone", "unknown") if isinstance(stored, dict) else "unknown"
        raise ConfigError(f"{path} holds a {backbone} model that does not match the config's model {config.model!r}; it cannot be resumed")
    for key, test, expected in (
        ("optimizer", lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list), "an optimiser state"),
        ("scheduler", lambda v: isinstance(v, dict), "a scheduler state"),
        ("scaler", lambda v: isinstance(v, dict), "a gradient-scaler state"),
        ("epoch", _is_int, "an epoch number"),
        ("step_in_epoch", _is_int, "a step number"),
        ("global_step", _is_int, "a step number"),
    ):
        if key not in checkpoint:
            raise ConfigError(f"{path} has no '{key}' entry ({expected}); it cannot be resumed")
        if not test(checkpoint[key]):
            raise ConfigError(f"{path} has a malformed '{key}' entry (expected {expected}); it cannot be resumed")
    rng = checkpoint.get("loss_rng")  # absent in checkpoints of earlier versions (they start a fresh generator)
    if rng is not None and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.dim() == 1):
        raise ConfigError(f"{path} has a malformed 'loss_rng' entry (expected a generator state); it cannot be resumed")
    if checkpoint["epoch"] >= config.epochs and checkpoint["step_in_epoch"] == 0:
        raise ConfigError(
            f"{path} has already trained {checkpoint['epoch']} of {config.epochs} epochs; give --epochs=N with N > {checkpoint['epoch']} to train more"
        )
    if config.max_steps and checkpoint["global_step"] >= config.max_steps:
        raise ConfigError(f"{path} has already reached max_steps={config.max_steps}; raise --max_steps to train more")


@contextlib.contextmanager
def resume_error(path: str | os.PathLike | None) -> Iterator[None]:
    """Turn a state that does not fit the model/optimiser being resumed into one ``ConfigError`` sentence."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]) if lines else type(exc).__name__
        raise ConfigError(f"{path} does not fit the model and optimiser being resumed ({first})") from None
