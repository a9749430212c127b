"""Train RetinaFace (detection, landmarks and the self-supervised mesh branch).

  python scripts/train.py --preset mobilenet0.25-wider --train_labels=WIDER/train/label.txt
  python scripts/train.py --preset mobilenet0.25-synthetic --train_labels=runs/synthetic/train/label.txt \\
      --val_images=runs/synthetic/val --val_gt_dir=runs/synthetic/val/gt --output=runs/synthetic-train
  torchrun --nproc_per_node=4 scripts/train.py --preset resnet50-wider --train_labels=...   # several GPUs
  python scripts/train.py --resume runs/train/last.pt                                        # continue exactly
  python scripts/train.py --resume runs/train/last.pt --epochs=300                           # ... with overrides

Any field of the training config can be overridden with --key=value; unknown keys are an error.
Checkpoints (last.pt, written atomically) hold model, optimiser, scheduler, position and RNG state; the
final weights are written as final.safetensors. Metrics go to metrics.jsonl and TensorBoard.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import common


def main(argv: list[str] | None = None) -> int:
    from retinaface.training import TRAIN_PRESETS, TrainConfig

    fields = "\n".join(f"  --{f.name}={f.default!r}" for f in dataclasses.fields(TrainConfig))
    parser = common.ArgumentParser(
        prog="retinaface train", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] + f"\nconfig keys (defaults of the base config):\n{fields}",
    )
    parser.add_argument("--preset", default="mobilenet0.25-wider", choices=sorted(TRAIN_PRESETS), help="(default: %(default)s)")
    parser.add_argument("--resume", help="checkpoint to continue from (its config is used)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--no-progress", action="store_true")
    args, overrides = parser.parse_known_args(argv)

    from retinaface.datasets.wider import AnnotationError
    from retinaface import InputError, WeightsError
    from retinaface.config import ConfigError
    from retinaface.training import train, train_config

    try:
        config = train_config(args.preset, overrides, resume=args.resume)
        if not args.resume and not config.train_labels:
            parser.error("give --train_labels=PATH (a WIDER label.txt) or --resume CHECKPOINT")
        result = train(config, resume=args.resume, progress=not args.no_progress, device=args.device)
    except (ConfigError, AnnotationError, InputError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume <output>/last.pt", file=sys.stderr)
        return 130
    if result.output is not None:
        print(f"trained {result.global_step} steps ({result.epochs_done} epochs); weights: {result.output / 'final.safetensors'}")
    for record in result.validation[-1:]:
        print(f"validation AP easy {record['easy']:.4f} medium {record['medium']:.4f} hard {record['hard']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
