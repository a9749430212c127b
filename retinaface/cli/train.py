"""Train RetinaFace (detection, landmarks and the self-supervised mesh branch).

  python scripts/train.py --preset mobilenet0.25-wider --train_labels=WIDER/train/label.txt
  python scripts/train.py --preset mobilenet0.25-synthetic --train_labels=runs/synthetic/train/label.txt \\
      --val_images=runs/synthetic/val --val_gt_dir=runs/synthetic/val/gt --output=runs/synthetic-train
  torchrun --nproc_per_node=4 scripts/train.py --preset resnet50-wider --train_labels=...   # several GPUs
  python scripts/train.py --resume runs/train/last.pt                                        # continue exactly
  python scripts/train.py --resume runs/train/last.pt --epochs=300                           # ... with overrides

Any field of the training config can be overridden with --key=value; unknown keys and out-of-range
values (e.g. --batch_size=0) are an error before any work.
Checkpoints (last.pt, written atomically) hold model, optimiser, scheduler, position and RNG state; the
final weights are written as final.safetensors. Metrics go to metrics.jsonl and TensorBoard.

An --output folder that already holds a run (last.pt, final.safetensors, metrics.jsonl, ...) is refused:
continue that run with --resume <output>/last.pt, or choose a new --output. Two runs cannot share a folder
(the second is refused while the first holds its lock). Ctrl+C or SIGTERM stops the run and keeps the
last checkpoint (exit 130 / 143); resume from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import common


def _flat_keys(config, prefix: str = ""):
    """``(key, default)`` of every setting, nested configs' keys dotted (``loss.box_weight``)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from _flat_keys(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def main(argv: list[str] | None = None) -> int:
    from ..training.loop import TRAIN_PRESETS, TrainConfig

    fields = "\n".join(f"  --{key}={value!r}" for key, value in _flat_keys(TrainConfig()))
    parser = common.ArgumentParser(
        prog="retinaface train", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] + f"\nconfig keys (defaults of the base config):\n{fields}",
    )
    parser.add_argument("--preset", default="mobilenet0.25-wider", choices=sorted(TRAIN_PRESETS), help="(default: %(default)s)")
    parser.add_argument("--resume", help="checkpoint to continue from (its config is used); the only way to write into a folder holding a run")
    parser.add_argument("--device", type=common.device, default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--no-progress", action="store_true")
    args, overrides = parser.parse_known_args(argv)

    with common.command_session() as interruption:
        return _train(parser, args, overrides, interruption)


def _last_line(exc: BaseException) -> str:
    """One sentence from an exception; DataLoader workers wrap the original error and its traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):
        return lines[-1].split(": ", 1)[-1]
    return lines[0] if lines else type(exc).__name__


def _train(parser, args, overrides, interruption) -> int:

    from ..outputs.guards import locked_outputs
    from ..utils.distributed import current_shard
    from ..training.run_dir import check_run_dir
    from ..training.loop import train, train_config

    output = None
    try:
        config = train_config(args.preset, overrides, resume=args.resume)
        if not args.resume and not config.train_labels:
            parser.error("give --train_labels=PATH (a WIDER label.txt) or --resume CHECKPOINT")
        main_process = current_shard().is_main
        output = Path(config.output)
        if main_process:
            check_run_dir(output, resume=args.resume)
        with locked_outputs(output if main_process else None):
            result = train(config, resume=args.resume, progress=not args.no_progress, device=args.device)
    except common.REPORTED_ERRORS as exc:
        return common.report_error(exc, _last_line)
    except FloatingPointError as exc:
        print(f"error: {_last_line(exc)}; lower --lr or set --clip_grad_norm, then --resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        checkpoint = output / "last.pt" if output is not None else None
        if checkpoint is not None and checkpoint.is_file():
            print(f"interrupted: the last checkpoint is kept; resume with --resume {checkpoint}", file=sys.stderr)
        else:
            print("interrupted before the first checkpoint", file=sys.stderr)
        return interruption.exit_code
    except RuntimeError as exc:  # e.g. out of memory, or an AnnotationError raised in a DataLoader worker
        print(f"error: {_last_line(exc)}", file=sys.stderr)
        return 1
    if result.output is not None:
        print(f"trained {result.global_step} steps ({result.epochs_done} epochs); weights: {result.output / 'final.safetensors'}")
    for record in result.validation[-1:]:
        print(f"validation AP easy {record['easy']:.4f} medium {record['medium']:.4f} hard {record['hard']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
