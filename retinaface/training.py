"""Training: configuration presets, deterministic sampling, checkpoints with exact resume, the loop.

Works on CPU, one GPU (AMP) and several processes under ``torchrun`` (DistributedDataParallel; gloo on
CPU, NCCL on GPU). Data order and augmentation depend only on (seed, epoch, index), and checkpoints hold
the model, optimiser, scheduler, position and RNG state, so a run resumed from a checkpoint continues
exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from .config import ConfigError, apply_overrides, config_from_dict, config_to_dict, model_preset
from .io import atomic_write
from .model import RetinaFace, build_retinaface


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
    cls_weight: float = 1.0
    box_weight: float = 0.25
    landmark_weight: float = 0.1
    pixel_weight: float = 0.01
    mesh_lr_scale: float = 1.0
    """Learning-rate multiplier for the parameters only the pixel term trains (``heads.mesh.*`` and the mesh
    decoder). Under SGD the paper's 0.01 pixel weight also scales the mesh head's own steps by 0.01 (its
    gradient measured ~900x smaller than the classification head's); ``k`` here acts like a pixel weight of
    ``0.01 k`` for these parameters alone while the shared trunk still sees 0.01. 1 = the paper's setting;
    see the README (training) for what 10 and 100 did."""
    negative_ratio: float = 3.0
    max_mesh_faces: int = 16
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


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # biubug6/Pytorch_Retinaface schedules
    "mobilenet0.25-wider": TrainConfig(),
    "resnet50-wider": TrainConfig(model="resnet50", image_size=840, batch_size=24, epochs=100, decay_epochs=(70, 90)),
    # minutes on a laptop CPU: smaller images, higher learning rate, short schedule
    "mobilenet0.25-synthetic": TrainConfig(
        image_size=320, batch_size=8, workers=2, epochs=25, lr=1e-2, warmup_epochs=1.0, decay_epochs=(18, 23),
        val_every=5, checkpoint_every=200, min_face_size=4.0,
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
        from .weights import read_checkpoint

        checkpoint = read_checkpoint(resume)
        if "train_config" not in checkpoint:
            raise ConfigError(f"{resume} holds weights only, not a training state to resume")
        return apply_overrides(config_from_dict(TrainConfig, checkpoint["train_config"]), overrides)
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


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the ``torchrun`` process group if launched by it (gloo on CPU, NCCL on GPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return Distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    info = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def build_model_for_training(config: TrainConfig) -> RetinaFace:
    """The model with its loss configured by ``config`` and weights from ``config.init``."""
    from .mesh.branch import MeshPixelLoss

    from .weights import load_model

    torch.manual_seed(config.seed)
    if config.init == "scratch":
        model = build_retinaface(model_preset(config.model), imagenet_weights=config.imagenet_weights or None)
    else:
        model = load_model(config.init)
        if model.config != model_preset(config.model):
            raise ConfigError(f"--init {config.init} is a {model.config.backbone} model but the config trains {config.model}")
    loss = model.loss
    loss.cls_weight, loss.box_weight, loss.landmark_weight = config.cls_weight, config.box_weight, config.landmark_weight
    loss.pixel_weight, loss.negative_ratio = config.pixel_weight, config.negative_ratio
    loss.pixel_loss = MeshPixelLoss(max_faces=config.max_mesh_faces) if config.pixel_weight > 0 else None
    return set_train_mode(model, config)


def is_mesh_only_parameter(name: str) -> bool:
    """Parameters that only the pixel term reaches: the mesh coefficients head and the mesh decoder."""
    return name.startswith(("heads.mesh.", "mesh_branch."))


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """SGD parameter groups: everything at ``lr``, the mesh-only parameters at ``lr * mesh_lr_scale``
    (the schedule multiplies both)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mesh = [p for n, p in named if is_mesh_only_parameter(n)]
    rest = [p for n, p in named if not is_mesh_only_parameter(n)]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": config.lr}]
    if mesh:
        groups.append({"params": mesh, "lr": config.lr * config.mesh_lr_scale})
    return groups


def batchnorm_frozen(config: TrainConfig) -> bool:
    if config.freeze_batchnorm is not None:
        return config.freeze_batchnorm
    from .weights import PRETRAINED

    return config.init in PRETRAINED


def set_train_mode(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model.train()``, with BatchNorm layers kept in eval mode when they are frozen."""
    model.train()
    if batchnorm_frozen(config):
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return model


def save_checkpoint(path: Path, *, model: nn.Module, optimizer, scheduler, scaler, config: TrainConfig, epoch: int, step_in_epoch: int, global_step: int) -> None:
    """Atomically write everything needed to resume (``torch.load(weights_only=True)`` can read it)."""
    bare = model.module if hasattr(model, "module") else model
    state = {
        "model": bare.state_dict(),
        "model_config": config_to_dict(bare.config),
        "train_config": config_to_dict(config),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": global_step,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
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


def train(config: TrainConfig, *, resume: str | None = None, progress: bool = True, device: str = "auto") -> TrainResult:
    """Run training, or continue it from the ``resume`` checkpoint (model, optimiser, scheduler, position and
    RNG state; build ``config`` with :func:`train_config` so it starts from the stored one). Returns the
    step count and the logged history. See :class:`TrainConfig`."""
    from tqdm import tqdm

    from .datasets.transforms import TrainAugmentation
    from .datasets.wider import WiderFaceDataset, collate

    from .weights import read_checkpoint

    info = init_distributed()
    if device == "auto":
        device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    device_t = torch.device(device)
    start_epoch, start_step, global_step = 0, 0, 0
    checkpoint = None
    if resume:
        checkpoint = read_checkpoint(resume)
        start_epoch, start_step, global_step = checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["global_step"]

    output = Path(config.output)
    model = build_model_for_training(config).to(device_t)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    dataset = WiderFaceDataset(
        config.train_labels, config.train_images or None, annotation_format=config.annotation_format, on_error=config.on_error,
        transform=TrainAugmentation(size=config.image_size, min_face_size=config.min_face_size), seed=config.seed,
    )
    if len(dataset) == 0:
        raise ConfigError(f"{config.train_labels} lists no usable images")
    sampler = EpochSampler(len(dataset), seed=config.seed, rank=info.rank, world_size=info.world_size)
    steps_per_epoch = max(1, math.ceil(len(sampler) / config.batch_size))

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, steps_per_epoch=steps_per_epoch, warmup_epochs=config.warmup_epochs, decay_epochs=config.decay_epochs, gamma=config.gamma),
    )
    use_amp = config.amp and device_t.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if scaler is not None and checkpoint["scaler"]:
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if torch.cuda.is_available() and checkpoint["cuda_rng"]:
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    trained = nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if device_t.type == "cuda" else None) if info.enabled else model

    writer = None
    if info.main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(output / "tensorboard"))
        except ImportError:  # TensorBoard is optional; metrics.jsonl has the same numbers
            writer = None
    result = TrainResult(global_step=global_step, epochs_done=start_epoch, output=output)
    metrics_path = output / "metrics.jsonl"

    def checkpoint_now(epoch: int, step_in_epoch: int) -> None:
        if info.main:
            save_checkpoint(output / "last.pt", model=trained, optimizer=optimizer, scheduler=scheduler, scaler=scaler, config=config, epoch=epoch, step_in_epoch=step_in_epoch, global_step=global_step)

    stop = False
    for epoch in range(start_epoch, config.epochs):
        dataset.epoch = sampler.epoch = epoch
        sampler.skip = start_step * config.batch_size if epoch == start_epoch else 0
        # its own generator: creating an iterator must not draw from the global RNG, or a resumed run
        # (which creates one mid-epoch) would diverge from an uninterrupted one
        loader = DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers, collate_fn=collate,
            drop_last=False, generator=torch.Generator().manual_seed(config.seed * 1_000 + epoch),
        )
        step_in_epoch = start_step if epoch == start_epoch else 0
        bar = tqdm(loader, total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (progress and info.main), file=sys.stderr, unit="step")
        tick, images_seen = time.perf_counter(), 0
        for images, targets in bar:
            images = [im.to(device_t, non_blocking=True) for im in images]
            targets = [_to(t, device_t) for t in targets]
            with torch.autocast(device_type=device_t.type, enabled=use_amp):
                losses = trained(images, targets)
            total = sum(losses.values())
            if not torch.isfinite(total):
                raise FloatingPointError(f"non-finite loss at step {global_step}: { {k: v.item() for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(total).backward()
                if config.clip_grad_norm:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                total.backward()
                if config.clip_grad_norm:
                    nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
                optimizer.step()
            scheduler.step()
            global_step += 1
            step_in_epoch += 1
            images_seen += len(images) * info.world_size
            if info.main and (global_step % config.log_every == 0 or step_in_epoch == steps_per_epoch):
                rate = images_seen / max(time.perf_counter() - tick, 1e-9)
                record = {"step": global_step, "epoch": epoch + step_in_epoch / steps_per_epoch, "lr": optimizer.param_groups[0]["lr"], "loss": total.item(), "images_per_s": rate, **{k: v.item() for k, v in losses.items()}}
                result.history.append(record)
                with open(metrics_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, value in record.items():
                        if key not in ("step", "epoch"):
                            writer.add_scalar(f"train/{key}", value, global_step)
                bar.set_postfix({"loss": f"{record['loss']:.3f}", **{k[5:]: f"{record[k]:.3f}" for k in losses}, "img/s": f"{rate:.1f}"})
            if config.checkpoint_every and global_step % config.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                checkpoint_now(epoch, step_in_epoch)
            if config.max_steps and global_step >= config.max_steps:
                stop = True
                break
        bar.close()
        start_step = 0
        finished_epoch = step_in_epoch >= steps_per_epoch
        checkpoint_now(epoch + 1 if finished_epoch else epoch, 0 if finished_epoch else step_in_epoch)
        result.epochs_done = epoch + 1 if finished_epoch else epoch
        last_epoch = stop or epoch + 1 == config.epochs
        if info.main and config.val_images and config.val_gt_dir and ((epoch + 1) % config.val_every == 0 or last_epoch):
            record = validate(model, config, epoch=epoch + 1, step=global_step, progress=progress)
            result.validation.append(record)
            with open(output / "validation.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if writer is not None:
                for key in ("easy", "medium", "hard"):
                    writer.add_scalar(f"val/AP_{key}", record[key], global_step)
                for key, value in record.items():
                    if key.startswith("mesh_"):
                        writer.add_scalar(f"val/{key}", value, global_step)
            if "mesh_rotation_deg" in record and progress:
                from .mesh_eval import format_summary

                print(f"epoch {epoch + 1}: {format_summary(record)}", file=sys.stderr)
            set_train_mode(model, config)
        if stop:
            break
    result.global_step = global_step
    if writer is not None:
        writer.close()
    if info.main:
        bare = trained.module if hasattr(trained, "module") else trained
        from .weights import save_safetensors

        save_safetensors(bare, output / "final.safetensors")
    if info.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return result


def validate(model: RetinaFace, config: TrainConfig, *, epoch: int, step: int, progress: bool = False) -> dict[str, Any]:
    """WIDER-protocol AP of the current weights on the validation set (original image size, score >= 0.02),
    plus, on a synthetic set (``render_params.json`` in ``val_images``), the mesh head's median errors
    against the true render parameters (:func:`retinaface.mesh_eval.evaluate_detections`, detections with
    score >= 0.5) as ``mesh_*`` keys."""
    import copy
    import tempfile

    from .detector import Detector
    from .tta import TestTimeAugmentation
    from .wider_benchmark import predict_wider
    from .wider_eval import evaluate_folder, load_ground_truth

    evaluation_model = copy.deepcopy(model).eval()
    evaluation_model.postprocessor.score_threshold = 0.02
    detector = Detector(evaluation_model)
    gt = load_ground_truth(config.val_gt_dir)
    with tempfile.TemporaryDirectory() as folder:
        predict_wider(TestTimeAugmentation(detector), config.val_images, gt, folder, progress=False)
        result = evaluate_folder(folder, config.val_gt_dir)
    record: dict[str, Any] = {"epoch": epoch, "step": step, **{k: result.ap[k] for k in ("easy", "medium", "hard")}}
    # synthetic val sets carry every face's render parameters: measure the mesh head against them
    if model.mesh_branch is not None and (Path(config.val_images) / "render_params.json").is_file():
        from .mesh_eval import evaluate_detections

        record.update(evaluate_detections(evaluation_model, config.val_images).summary())
    return record
