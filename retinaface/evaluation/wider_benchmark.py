"""Running a detector over WIDER FACE val images, writing official-format predictions, plotting PR curves."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..utils.distributed import Shard
from ..errors import InputError
from ..outputs.atomic import atomic_write
from ..outputs.records import claim_results_folder
from ..media.images import read_image
from ..inference.tta import TestTimeAugmentation
from .wider_eval import SETTINGS, WiderGroundTruth, WiderResult, write_prediction_file

WIDER_SCORE_THRESHOLD = 0.02
"""Detections down to this score are written for WIDER evaluation (they shape the precision-recall curve)."""


@dataclass
class PredictionRun:
    """Bookkeeping of :func:`predict_wider`: per-image detection times (ms) and problems."""

    written: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    milliseconds: list[float] = field(default_factory=list)
    interrupted: bool = False

    @classmethod
    def combined(cls, runs: list["PredictionRun"]) -> "PredictionRun":
        """The bookkeeping of several processes' runs (each over its own images) as one run's."""
        total = cls(interrupted=any(run.interrupted for run in runs))
        for run in runs:
            total.written += run.written
            total.reused += run.reused
            total.unreadable += run.unreadable
            total.missing += run.missing
            total.milliseconds += run.milliseconds
        return total

    def speed_summary(self) -> dict[str, float]:
        times = np.asarray(self.milliseconds) if self.milliseconds else np.zeros(1)
        return {"images_timed": len(self.milliseconds), "ms_mean": float(times.mean()), "ms_median": float(np.median(times))}


def claim_prediction_folder(pred_dir: str | os.PathLike, settings: dict, *, overwrite: bool, write: bool = True) -> None:
    """Record the detector ``settings`` in ``<pred_dir>/settings.json``, or ``InputError`` if the folder holds
    predictions made with other settings or of unknown origin: reusing them (resume) would silently mix two
    detectors' results (the rule every resumable output follows: :func:`claim_results_folder`). ``overwrite``
    redoes every image, so the folder is then simply taken over. ``write=False`` only checks (the other
    processes of a torchrun run: rank 0 writes)."""
    pred_dir = Path(pred_dir)
    claim_results_folder(
        pred_dir, settings, reuse=not overwrite, holds_results=any(pred_dir.glob("*/*.txt")), name=f"--predictions {pred_dir}",
        what="predictions", otherwise="choose another folder, or --overwrite to redo them all", write=write,
    )


def find_image(images_root: Path, event: str, name: str) -> Path | None:
    for suffix in (".jpg", ".jpeg", ".png"):
        path = images_root / event / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def predict_wider(
    tta: TestTimeAugmentation,
    wider_root: str | os.PathLike,
    gt: WiderGroundTruth,
    pred_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    shard: Shard | None = None,
) -> PredictionRun:
    """Detect faces in ``<wider_root>/images/<event>/<name>.jpg`` for every ground-truth image and write
    ``<pred_dir>/<event>/<name>.txt``. Existing prediction files are kept unless ``overwrite`` (resumable).
    ``shard`` (under torchrun) restricts this process to its share of the images in ground-truth order; each
    image's file is the same whichever process writes it, so the folder equals a single process's.

    A missing or unreadable image is recorded and skipped (it then scores as an image without detections).
    Times cover detection only (decode/NMS included, file reading and writing excluded).
    """
    images_root = Path(wider_root) / "images"
    if not images_root.is_dir():
        raise InputError(f"{images_root} not found; --wider-root must contain images/<event>/*.jpg")
    pred_dir = Path(pred_dir)
    shard = shard or Shard()
    mine = shard.select([(event, name) for event, names in zip(gt.events, gt.files) for name in names])
    run = PredictionRun()
    bar = tqdm(total=len(mine), unit="img", desc="WIDER val", disable=not progress or not shard.is_main, file=sys.stderr)
    try:
        for event, name in mine:
            bar.update(1)
            target = pred_dir / event / f"{name}.txt"
            if target.is_file() and not overwrite:
                run.reused += 1
                continue
            path = find_image(images_root, event, name)
            if path is None:
                run.missing.append(f"{event}/{name}")
                continue
            try:
                image = read_image(path)
            except InputError as exc:
                run.unreadable.append(str(exc))
                tqdm.write(f"warning: {exc}", file=sys.stderr)
                continue
            start = time.perf_counter()
            faces = tta(image)
            run.milliseconds.append((time.perf_counter() - start) * 1000)
            rows = np.array(
                [[f.box[0], f.box[1], f.box[2] - f.box[0], f.box[3] - f.box[1], f.score] for f in faces]
            ).reshape(-1, 5)
            write_prediction_file(target, name, rows)
            run.written += 1
            bar.set_postfix(ms=f"{np.median(run.milliseconds):.0f}")
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        bar.close()
    return run


def plot_pr_curves(result: WiderResult, path: str | os.PathLike, *, title: str = "WIDER FACE val") -> None:
    """Save the easy / medium / hard precision-recall curves as one PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for axis, setting in zip(axes, SETTINGS):
        precision, recall = result.curves[setting][:, 0], result.curves[setting][:, 1]
        valid = ~np.isnan(precision)
        axis.plot(recall[valid], precision[valid], lw=2, color="tab:blue")
        axis.set_title(f"{setting}: AP {result.ap[setting]:.4f}  ({result.faces[setting]} faces)")
        axis.set_xlabel("recall")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)
