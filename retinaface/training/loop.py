"""Training: configuration presets, deterministic sampling, checkpoints with exact resume, the loop.

Works on CPU, one GPU (AMP) and several processes under ``torchrun`` (DistributedDataParallel; gloo on
CPU, NCCL on GPU). Data order and augmentation depend only on (seed, epoch, index); the loss draws from
its own generator; checkpoints hold the model, optimiser, scheduler, position and that generator's
state, so a run resumed from a checkpoint continues exactly as if it had never stopped.

:func:`train` strings together :func:`setup_training` (model, data, optimiser), :func:`resume_training`
(state from a checkpoint), :func:`train_epoch` (one pass, checkpointing on the way), :func:`validate_epoch`
and :func:`finish_training` (final weights).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from ..errors import ConfigError
from ..config import (
    InferenceConfig, MODEL_PRESETS, LossConfig, ModelConfig, apply_overrides, check_fields, config_from_dict, config_to_dict, model_preset,
)
from ..outputs.atomic import atomic_write
from ..model.retinaface import RetinaFace, build_retinaface
from ..utils.rng import seeded
from ..utils.distributed import Shard, current_shard, end_process_group, shard_device, start_process_group, wait_for_all


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; stored in every checkpoint."""

    model: str = "mobilenet0.25"
    train_labels: str = ""
    """WIDER ``label.txt`` (RetinaFace format) or official ``wider_face_train_bbx_gt.txt``."""
    train_images: str = ""
    """Folder the label paths are relative to (default: ``images/`` beside the label file)."""
    annotation_format: str = "auto"
    on_error: str = "raise"
    """``raise`` on a bad annotation line / missing image, or ``skip`` and count."""
    val_images: str = ""
    """WIDER val root holding ``images/<event>/*.jpg`` (empty: no validation)."""
    val_gt_dir: str = ""
    """Folder with the official ``wider_*_val.mat`` files for validation AP."""
    val_every: int = 10
    """Validate every this many epochs (and after the last)."""
    image_size: int = 640
    batch_size: int = 32
    workers: int = 4
    epochs: int = 250
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    decay_epochs: tuple[int, ...] = (190, 220)
    gamma: float = 0.1
    init: str = "scratch"
    """``scratch``, a released weights name (``mobilenet0.25``) or a weights/checkpoint file."""
    imagenet_weights: str = ""
    """Local torchvision ResNet-50 state dict for ``resnet50`` (nothing is downloaded)."""
    freeze_batchnorm: bool | None = None
    """Keep BatchNorm statistics fixed. Default: frozen when ``init`` is released weights, whose BatchNorms
    are folded into the convolutions (identity statistics that batch statistics would wreck)."""
    clip_grad_norm: float = 0.0
    """Clip the gradient norm to this (0: no clipping); useful when fine-tuning folded weights."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The training objective (weights of the terms, matching, the mesh terms); override as ``--loss.KEY=VALUE``."""
    mesh_optimizer: str = "adam"
    """Optimiser of the parameters only the pixel term trains (``heads.mesh.*`` and the mesh decoder):
    ``adam`` (at ``mesh_lr``, default) or ``sgd`` (the paper's: one SGD for everything, at ``lr * mesh_lr_scale``).
    Under SGD the 0.01 pixel weight scales these parameters' steps by 0.01 and the head did not learn pose
    (README, training); Adam's steps do not depend on the gradient's scale, so the paper's weight is kept
    while the shared trunk still sees the pixel gradient at 0.01 through SGD. Same warm-up and decays."""
    mesh_lr: float = 1e-3
    """Adam learning rate of the mesh-only parameters (``mesh_optimizer=adam``). The head is a 1x1 conv on
    64 features, so one step moves its output by about ``64 mesh_lr``: at 1e-2 it jumped out of the frontal
    basin to extreme poses (README, training)."""
    train_mesh_decoder: bool = False
    """Train the mesh decoder with the pixel term too (the paper's joint training). Off by default: a
    decoder free to deform the mesh absorbs pose and shading into shape, and the head's rotation stops
    meaning the face's (README, training). The decoder stays as built or loaded."""
    mesh_lr_scale: float = 1.0
    """Learning-rate multiplier for the parameters only the pixel term trains (``heads.mesh.*`` and the mesh
    decoder). Under SGD the paper's 0.01 pixel weight also scales the mesh head's own steps by 0.01 (its
    gradient measured ~900x smaller than the classification head's); ``k`` here acts like a pixel weight of
    ``0.01 k`` for these parameters alone while the shared trunk still sees 0.01. 1 = the paper's setting;
    see the README (training) for what 10 and 100 did."""
    min_face_size: float = 2.0
    seed: int = 0
    output: str = "runs/train"
    checkpoint_every: int = 500
    """Also write ``last.pt`` every this many steps (always at the end of each epoch)."""
    max_steps: int = 0
    """Stop after this many optimiser steps (0: run all epochs)."""
    amp: bool = True
    """Mixed precision on CUDA."""
    log_every: int = 10

    def __post_init__(self) -> None:
        check_fields(self, _TRAIN_CONFIG_RULES)
        if bool(self.val_images) != bool(self.val_gt_dir):
            raise ConfigError("validation needs both val_images and val_gt_dir (or neither)")

def _at_least(minimum: float):
    return lambda value: value >= minimum


_TRAIN_CONFIG_RULES = {
    "model": (lambda v: v in MODEL_PRESETS, f"one of {sorted(MODEL_PRESETS)}"),
    "annotation_format": (lambda v: v in ("auto", "retinaface", "wider"), "auto, retinaface or wider"),
    "on_error": (lambda v: v in ("raise", "skip"), "raise or skip"),
    "val_every": (_at_least(1), "an integer >= 1"),
    "image_size": (_at_least(32), "an integer >= 32 (pixels)"),
    "batch_size": (_at_least(1), "an integer >= 1"),
    "workers": (_at_least(0), "an integer >= 0"),
    "epochs": (_at_least(1), "an integer >= 1"),
    "lr": (lambda v: v > 0, "a number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (_at_least(0), "a number >= 0"),
    "warmup_epochs": (_at_least(0), "a number >= 0"),
    "decay_epochs": (lambda v: all(e >= 0 for e in v), "epochs >= 0"),
    "gamma": (lambda v: v > 0, "a number > 0"),
    "clip_grad_norm": (_at_least(0), "a number >= 0 (0: no clipping)"),
    "mesh_optimizer": (lambda v: v in ("adam", "sgd"), "adam or sgd"),
    "mesh_lr": (lambda v: v > 0, "a number > 0"),
    "mesh_lr_scale": (lambda v: v > 0, "a number > 0"),
    "min_face_size": (_at_least(0), "a number >= 0"),
    "seed": (_at_least(0), "an integer >= 0"),
    "output": (lambda v: bool(v.strip()), "a folder path"),
    "checkpoint_every": (_at_least(0), "an integer >= 0 (0: only at epoch ends)"),
    "max_steps": (_at_least(0), "an integer >= 0 (0: no limit)"),
    "log_every": (_at_least(1), "an integer >= 1"),
}


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # biubug6/Pytorch_Retinaface schedules
    "mobilenet0.25-wider": TrainConfig(),
    "resnet50-wider": TrainConfig(model="resnet50", image_size=840, batch_size=24, epochs=100, decay_epochs=(70, 90)),
    # minutes on a laptop CPU: smaller images, higher learning rate, short schedule
    "mobilenet0.25-synthetic": TrainConfig(
        image_size=320, batch_size=8, workers=2, epochs=25, lr=1e-2, warmup_epochs=1.0, decay_epochs=(18, 23),
        val_every=5, checkpoint_every=200, min_face_size=4.0,
    ),
    # the synthetic preset that also teaches the mesh head from the faces' rendered truth (loss_mesh_truth at
    # 2, read at 8 boxes per face), made for a 1,200-image set (make_synthetic.py --train 1200): 3,000 steps,
    # under 30 minutes on 2 CPU cores; the head learns with the steps, and a head trained hard on the faces
    # of 400 images overfits them. A head with 64 pixel maps and a first decay after 12 epochs: the head's
    # rotation error falls most after a decay, and the wider pixel branch gets there sooner (docs/training.md); the shape term at
    # 0.5 (LossConfig's 0.2 left the head's shape behind the mean face's with two of three seeds)
    "mobilenet0.25-synthetic-mesh": TrainConfig(
        model="mobilenet0.25-pixels64", image_size=320, batch_size=8, workers=2, epochs=20, lr=1e-2, warmup_epochs=1.0,
        decay_epochs=(12, 17), val_every=5, checkpoint_every=200, min_face_size=4.0,
        loss=LossConfig(mesh_truth_weight=2.0, mesh_truth_reads=8, mesh_truth_shape_weight=0.5),
    ),
    # fine-tuning the released weights: their BatchNorms are folded (frozen, see freeze_batchnorm), so
    # the network trains like one without normalisation; at lr 1e-3 it collapsed here, 1e-4 with
    # clipping keeps it stable
    "mobilenet0.25-synthetic-finetune": TrainConfig(
        image_size=320, batch_size=8, workers=2, epochs=2, lr=1e-4, clip_grad_norm=5.0, warmup_epochs=0.2,
        decay_epochs=(100,), val_every=1, checkpoint_every=200, min_face_size=4.0, init="mobilenet0.25",
    ),
}


def train_config(preset: str, overrides: list[str], *, resume: str | None = None) -> TrainConfig:
    """Named preset (or, when resuming, the checkpoint's stored config) plus ``--key=value`` overrides
    (unknown keys raise :class:`ConfigError`)."""
    if resume:
        from ..model.weights import read_checkpoint

        from .run_dir import check_resume_state

        checkpoint = read_checkpoint(resume)
        if "train_config" not in checkpoint or not isinstance(checkpoint["train_config"], dict):
            raise ConfigError(f"{resume} holds weights only, not a training state to resume")
        config = apply_overrides(config_from_dict(TrainConfig, checkpoint["train_config"]), overrides)
        check_resume_state(checkpoint, config, resume)
        return config
    if preset not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
    return apply_overrides(TRAIN_PRESETS[preset], overrides)


class EpochSampler(Sampler[int]):
    """Shuffled indices fixed by (seed, epoch), sharded across ranks, optionally skipping a prefix.

    Every rank draws the same permutation (padded by wrapping to a multiple of ``world_size``) and takes
    every ``world_size``-th index, like ``DistributedSampler``; ``skip`` drops the first indices of this
    rank's share, which is how a run resumed mid-epoch continues where it stopped.
    """

    def __init__(self, length: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        total = math.ceil(self.length / self.world_size) * self.world_size
        order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return len(self.indices()) - self.skip


def lr_factor(step: int, *, steps_per_epoch: int, warmup_epochs: float, decay_epochs: tuple[int, ...], gamma: float) -> float:
    """Linear warm-up from 0 over ``warmup_epochs``, then multiply by ``gamma`` at each decay epoch."""
    epoch = step / max(steps_per_epoch, 1)
    warm = min(1.0, (step + 1) / max(warmup_epochs * steps_per_epoch, 1)) if warmup_epochs > 0 else 1.0
    return warm * gamma ** sum(epoch >= d for d in decay_epochs)


def build_model_for_training(config: TrainConfig, model_config: ModelConfig | None = None) -> RetinaFace:
    """The model with the loss of ``config`` and weights from ``config.init`` (random ones fixed by ``config.seed``).

    From scratch the architecture is the preset's, or ``model_config`` (a resumed run's stored one: a run
    begun with the per-anchor mesh head continues with it). Weights from ``init`` bring their own mesh
    head (the released weights: the per-anchor one); their detection network must be the preset's."""
    from ..model.weights import load_model

    if config.init == "scratch":
        with seeded(config.seed):
            return set_train_mode(
                build_retinaface(model_config or model_preset(config.model), loss=config.loss, imagenet_weights=config.imagenet_weights or None),
                config,
            )
    model = load_model(config.init, loss=config.loss)
    if model.config.without_mesh_head() != model_preset(config.model).without_mesh_head():
        raise ConfigError(f"--init {config.init} is a {model.config.backbone} model but the config trains {config.model}")
    return set_train_mode(model, config)


def is_mesh_only_parameter(name: str) -> bool:
    """Parameters that only the pixel term reaches: the mesh coefficients head and the mesh decoder."""
    return name.startswith(("heads.mesh.", "mesh_branch."))


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """SGD parameter groups: everything at ``lr``, the mesh-only parameters at ``lr * mesh_lr_scale``
    (the schedule multiplies both). With ``mesh_optimizer=adam`` the mesh-only parameters are left out
    here (see :func:`build_optimizers`)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mesh = [p for n, p in named if is_mesh_only_parameter(n)]
    rest = [p for n, p in named if not is_mesh_only_parameter(n)]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": config.lr}]
    if mesh and config.mesh_optimizer == "sgd":
        groups.append({"params": mesh, "lr": config.lr * config.mesh_lr_scale})
    return groups


def build_optimizers(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """The SGD optimiser of :func:`parameter_groups` and, with ``mesh_optimizer=adam``, an Adam optimiser
    (``mesh_lr``, no weight decay) for the mesh-only parameters (``None`` otherwise or when there are none)."""
    sgd = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    mesh = [p for n, p in model.named_parameters() if p.requires_grad and is_mesh_only_parameter(n)]
    if config.mesh_optimizer != "adam" or not mesh:
        return sgd, None
    return sgd, torch.optim.Adam(mesh, lr=config.mesh_lr)


def batchnorm_frozen(config: TrainConfig) -> bool:
    if config.freeze_batchnorm is not None:
        return config.freeze_batchnorm
    from ..model.weights import PRETRAINED

    return config.init in PRETRAINED


def set_train_mode(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model.train()``, with BatchNorm layers kept in eval mode when they are frozen, and the mesh decoder's
    parameters frozen unless ``train_mesh_decoder``."""
    model.train()
    if model.mesh_branch is not None and not config.train_mesh_decoder:
        model.mesh_branch.requires_grad_(False)
    if batchnorm_frozen(config):
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return model


def loss_generator(config: TrainConfig) -> torch.Generator:
    """The CPU generator the loss draws from (which faces the mesh pixel loss renders); checkpointed."""
    return torch.Generator().manual_seed(config.seed * 7_919 + 1)


@dataclass
class Position:
    """Where a run stands: the epoch in progress, optimiser steps done in it and in total."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclass
class TrainingRun:
    """Everything :func:`setup_training` builds; the loop functions read and advance it."""

    config: TrainConfig
    info: Shard
    device: torch.device
    model: RetinaFace
    trained: nn.Module
    """``model``, wrapped in DistributedDataParallel when several processes train."""
    dataset: Any
    sampler: EpochSampler
    steps_per_epoch: int
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    output: Path
    mesh_optimizer: torch.optim.Optimizer | None = None
    """Adam for the mesh-only parameters (``mesh_optimizer=adam``), stepped with ``optimizer``."""
    mesh_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    position: Position = field(default_factory=Position)
    writer: Any = None
    """TensorBoard ``SummaryWriter`` on the main process when TensorBoard is installed."""

    @property
    def use_amp(self) -> bool:
        return self.scaler is not None


def save_checkpoint(path: Path, run: TrainingRun, *, epoch: int, step_in_epoch: int) -> None:
    """Atomically write everything needed to resume (``torch.load(weights_only=True)`` can read it)."""
    state = {
        "model": run.model.state_dict(),
        "model_config": config_to_dict(run.model.config),
        "train_config": config_to_dict(run.config),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        **({"mesh_optimizer": run.mesh_optimizer.state_dict(), "mesh_scheduler": run.mesh_scheduler.state_dict()} if run.mesh_optimizer else {}),
        "scaler": run.scaler.state_dict() if run.scaler is not None else {},
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": run.position.global_step,
        "loss_rng": run.generator.get_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@dataclass
class TrainResult:
    global_step: int
    epochs_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    output: Path | None = None


def _to(target: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in target.items()}


def setup_training(config: TrainConfig, *, device: str = "auto", model_config: ModelConfig | None = None) -> TrainingRun:
    """Join the process group (under ``torchrun``) and build the model, data, optimiser and schedule of ``config``
    (``model_config``: see :func:`build_model_for_training`)."""
    from ..datasets.transforms import TrainAugmentation
    from ..datasets.wider import WiderFaceDataset

    info = current_shard()  # torchrun's place for this process, the same set-up as detection's
    device = shard_device(info, device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    start_process_group(info, device)
    device_t = torch.device(device)
    model = build_model_for_training(config, model_config).to(device_t)
    augmentation = TrainAugmentation(size=config.image_size, min_face_size=config.min_face_size, pixel_mean_bgr=model.config.pixel_mean_bgr)
    dataset = WiderFaceDataset(
        config.train_labels, config.train_images or None, annotation_format=config.annotation_format, on_error=config.on_error,
        transform=augmentation, seed=config.seed,
    )
    if len(dataset) == 0:
        raise ConfigError(f"{config.train_labels} lists no usable images")
    sampler = EpochSampler(len(dataset), seed=config.seed, rank=info.rank, world_size=info.world_size)
    steps_per_epoch = max(1, math.ceil(len(sampler) / config.batch_size))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer, mesh_optimizer = build_optimizers(model, config)
    schedule = dict(steps_per_epoch=steps_per_epoch, warmup_epochs=config.warmup_epochs, decay_epochs=config.decay_epochs, gamma=config.gamma)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **schedule))
    mesh_scheduler = None
    if mesh_optimizer is not None:
        mesh_scheduler = torch.optim.lr_scheduler.LambdaLR(mesh_optimizer, lambda step: lr_factor(step, **schedule))
    scaler = torch.amp.GradScaler("cuda") if config.amp and device_t.type == "cuda" else None
    trained = model
    if info.distributed:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if device_t.type == "cuda" else None)
    return TrainingRun(
        config=config, info=info, device=device_t, model=model, trained=trained, dataset=dataset, sampler=sampler,
        steps_per_epoch=steps_per_epoch, parameters=parameters, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        generator=loss_generator(config), output=Path(config.output), mesh_optimizer=mesh_optimizer, mesh_scheduler=mesh_scheduler,
    )


def resume_training(run: TrainingRun, checkpoint_path: str) -> None:
    """Load model, optimiser, scheduler, scaler, loss generator and position from a :func:`save_checkpoint` file."""
    from .run_dir import resume_error
    from ..model.weights import read_checkpoint

    checkpoint = read_checkpoint(checkpoint_path)
    with resume_error(checkpoint_path):  # another model, or missing/malformed state: one sentence
        run.model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        if run.mesh_optimizer is not None:
            run.mesh_optimizer.load_state_dict(checkpoint["mesh_optimizer"])
            run.mesh_scheduler.load_state_dict(checkpoint["mesh_scheduler"])
        if run.scaler is not None and checkpoint["scaler"]:
            run.scaler.load_state_dict(checkpoint["scaler"])
        if "loss_rng" in checkpoint:  # checkpoints of earlier versions drew from the global generator
            run.generator.set_state(checkpoint["loss_rng"])
        run.position = Position(checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["global_step"])


def open_logs(run: TrainingRun) -> None:
    """Main process: create the output folder, write ``config.json`` and open TensorBoard (when installed)."""
    if not run.info.is_main:
        return
    run.output.mkdir(parents=True, exist_ok=True)
    (run.output / "config.json").write_text(json.dumps(config_to_dict(run.config), indent=2) + "\n")
    try:
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(run.output / "tensorboard"))
    except ImportError:  # TensorBoard is optional; metrics.jsonl has the same numbers
        run.writer = None


def optimisation_step(run: TrainingRun, images: list[Tensor], targets: list[dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward, backward (scaled under AMP, clipped when configured) and one optimiser and scheduler step.
    Returns the total loss and its weighted terms."""
    config = run.config
    with torch.autocast(device_type=run.device.type, enabled=run.use_amp):
        losses = run.trained(images, targets, generator=run.generator)
    total = sum(losses.values())
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite loss at step {run.position.global_step}: { {k: v.item() for k, v in losses.items()} }")
    optimizers = [o for o in (run.optimizer, run.mesh_optimizer) if o is not None]
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(total).backward()
        if config.clip_grad_norm:
            for optimizer in optimizers:
                run.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(run.parameters, config.clip_grad_norm)
        for optimizer in optimizers:
            run.scaler.step(optimizer)
        run.scaler.update()
    else:
        total.backward()
        if config.clip_grad_norm:
            nn.utils.clip_grad_norm_(run.parameters, config.clip_grad_norm)
        for optimizer in optimizers:
            optimizer.step()
    run.scheduler.step()
    if run.mesh_scheduler is not None:
        run.mesh_scheduler.step()
    return total, losses


def log_step(run: TrainingRun, result: TrainResult, record: dict[str, float]) -> None:
    """Append a training record to the history, ``metrics.jsonl`` and TensorBoard."""
    result.history.append(record)
    with open(run.output / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if run.writer is not None:
        for key, value in record.items():
            if key not in ("step", "epoch"):
                run.writer.add_scalar(f"train/{key}", value, record["step"])


def _background_worker(worker_id: int) -> None:
    """DataLoader workers yield the CPU to the training step: on a machine whose cores the step's OpenMP
    threads already fill, a worker that takes one of them stalls every thread of the step at its next
    barrier; at a lower priority the workers run in the step's single-threaded stretches instead."""
    import os

    if hasattr(os, "nice"):
        os.nice(10)


def train_epoch(run: TrainingRun, result: TrainResult, *, progress: bool = True) -> bool:
    """Train the epoch at ``run.position`` from its step there to its end, or until ``max_steps``; checkpoint
    every ``checkpoint_every`` steps and at the end. Returns ``True`` when ``max_steps`` stopped it."""
    from tqdm import tqdm

    from ..datasets.wider import collate

    config, position, info = run.config, run.position, run.info
    epoch = position.epoch
    run.dataset.epoch = run.sampler.epoch = epoch
    run.sampler.skip = position.step_in_epoch * config.batch_size
    # its own generator: creating an iterator must not draw from the global RNG, or a resumed run
    # (which creates one mid-epoch) would diverge from an uninterrupted one
    loader = DataLoader(
        run.dataset, batch_size=config.batch_size, sampler=run.sampler, num_workers=config.workers, collate_fn=collate,
        drop_last=False, generator=torch.Generator().manual_seed(config.seed * 1_000 + epoch),
        worker_init_fn=_background_worker if config.workers and run.device.type == "cpu" else None,
    )
    bar = tqdm(
        loader, total=run.steps_per_epoch, initial=position.step_in_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=not (progress and info.is_main), file=sys.stderr, unit="step",
    )
    tick, images_seen, stop = time.perf_counter(), 0, False
    for images, targets in bar:
        images = [im.to(run.device, non_blocking=True) for im in images]
        total, losses = optimisation_step(run, images, [_to(t, run.device) for t in targets])
        position.global_step += 1
        position.step_in_epoch += 1
        images_seen += len(images) * info.world_size
        end_of_epoch = position.step_in_epoch == run.steps_per_epoch
        if info.is_main and (position.global_step % config.log_every == 0 or end_of_epoch):
            rate = images_seen / max(time.perf_counter() - tick, 1e-9)
            record = {
                "step": position.global_step, "epoch": epoch + position.step_in_epoch / run.steps_per_epoch,
                "lr": run.optimizer.param_groups[0]["lr"], "loss": total.item(), "images_per_s": rate,
                **{k: v.item() for k, v in losses.items()},
            }
            log_step(run, result, record)
            bar.set_postfix({"loss": f"{record['loss']:.3f}", **{k[5:]: f"{record[k]:.3f}" for k in losses}, "img/s": f"{rate:.1f}"})
        if config.checkpoint_every and position.global_step % config.checkpoint_every == 0 and not end_of_epoch:
            checkpoint(run, epoch=epoch, step_in_epoch=position.step_in_epoch)
        if config.max_steps and position.global_step >= config.max_steps:
            stop = True
            break
    bar.close()
    if position.step_in_epoch >= run.steps_per_epoch:
        position.epoch, position.step_in_epoch = epoch + 1, 0
    checkpoint(run, epoch=position.epoch, step_in_epoch=position.step_in_epoch)
    result.epochs_done = position.epoch
    return stop


def checkpoint(run: TrainingRun, *, epoch: int, step_in_epoch: int) -> None:
    """``last.pt`` in the output folder (main process only)."""
    if run.info.is_main:
        save_checkpoint(run.output / "last.pt", run, epoch=epoch, step_in_epoch=step_in_epoch)


def validate_epoch(run: TrainingRun, result: TrainResult, *, epoch: int, progress: bool = False) -> None:
    """Validation AP after ``epoch`` epochs, logged to ``validation.jsonl`` and TensorBoard (main process)."""
    record = validate(run.model, run.config, epoch=epoch, step=run.position.global_step, progress=progress)
    result.validation.append(record)
    with open(run.output / "validation.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if run.writer is not None:
        for key in ("easy", "medium", "hard"):
            run.writer.add_scalar(f"val/AP_{key}", record[key], run.position.global_step)
        for key, value in record.items():
            if key.startswith("mesh_"):
                run.writer.add_scalar(f"val/{key}", value, run.position.global_step)
    if "mesh_rotation_deg" in record and progress:
        from ..evaluation.mesh_eval import format_summary

        print(f"epoch {epoch}: {format_summary(record)}", file=sys.stderr)


def finish_training(run: TrainingRun) -> None:
    """Write ``final.safetensors`` (main process), close the logs and leave the process group."""
    if run.writer is not None:
        run.writer.close()
    if run.info.is_main:
        from ..model.weights import save_safetensors

        save_safetensors(run.model, run.output / "final.safetensors")
    wait_for_all(run.info)
    end_process_group(run.info)


def train(config: TrainConfig, *, resume: str | None = None, progress: bool = True, device: str = "auto") -> TrainResult:
    """Run training, or continue it from the ``resume`` checkpoint (model, optimiser, scheduler, position and
    loss generator; build ``config`` with :func:`train_config` so it starts from the stored one). Returns the
    step count and the logged history. See :class:`TrainConfig`."""
    stored = None
    if resume:
        from ..model.weights import read_checkpoint

        stored = ModelConfig.from_stored(read_checkpoint(resume)["model_config"])
    run = setup_training(config, device=device, model_config=stored)
    if resume:
        resume_training(run, resume)
    open_logs(run)
    result = TrainResult(global_step=run.position.global_step, epochs_done=run.position.epoch, output=run.output)
    while run.position.epoch < config.epochs:
        epoch = run.position.epoch
        stop = train_epoch(run, result, progress=progress)
        last_epoch = stop or epoch + 1 == config.epochs
        if run.info.is_main and config.val_images and config.val_gt_dir and ((epoch + 1) % config.val_every == 0 or last_epoch):
            validate_epoch(run, result, epoch=epoch + 1, progress=progress)
        if stop:
            break
    result.global_step = run.position.global_step
    finish_training(run)
    return result


def validate(model: RetinaFace, config: TrainConfig, *, epoch: int, step: int, progress: bool = False) -> dict[str, Any]:
    """WIDER-protocol AP of the current weights on the validation set (original image size, scores down to
    ``WIDER_SCORE_THRESHOLD``), plus, on a synthetic set (``render_params.json`` in ``val_images``), the mesh
    head's median errors against the true render parameters (:func:`retinaface.mesh_eval.evaluate_detections`,
    detections with score >= 0.5) as ``mesh_*`` keys."""
    import tempfile

    from ..inference.detector import Detector
    from ..inference.tta import TestTimeAugmentation
    from ..evaluation.wider_benchmark import WIDER_SCORE_THRESHOLD, predict_wider
    from ..evaluation.wider_eval import evaluate_folder, load_ground_truth

    # a separate inference model (no mesh branch) with the protocol's score threshold, the same weights
    with seeded(config.seed):
        evaluation_model = build_retinaface(model.config, InferenceConfig(score_threshold=WIDER_SCORE_THRESHOLD), mesh=False)
    evaluation_model.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("mesh_branch.")})
    # boxes are all WIDER scores: no second look at rolled faces (the protocol keeps hundreds of low-score boxes)
    detector = Detector(evaluation_model.to(next(model.parameters()).device), refine_landmarks=False)
    gt = load_ground_truth(config.val_gt_dir)
    with tempfile.TemporaryDirectory() as folder:
        predict_wider(TestTimeAugmentation(detector), config.val_images, gt, folder, progress=False)
        result = evaluate_folder(folder, config.val_gt_dir)
    record: dict[str, Any] = {"epoch": epoch, "step": step, **{k: result.ap[k] for k in ("easy", "medium", "hard")}}
    # synthetic val sets carry every face's render parameters: measure the mesh head against them
    if model.mesh_branch is not None and (Path(config.val_images) / "render_params.json").is_file():
        from ..evaluation.mesh_eval import evaluate_detections

        try:
            record.update(evaluate_detections(model, config.val_images).summary())
        finally:
            set_train_mode(model, config)  # evaluate_detections switches to eval mode; frozen layers stay frozen
    return record
