"""Train the RoI mesh head of frozen detector weights on synthetic faces with known shape, pose and light.

  python scripts/train_mesh_head.py --output runs/mesh_head.safetensors
  python scripts/train_mesh_head.py --output runs/mesh_head.safetensors --workers 3 --samples runs/head_faces.pt --light_weight=1.0

The detector (trunk, score, box and landmark heads) is left exactly as it is; only a new RoI mesh head
learns, from faces drawn in memory by the synthetic generator (retinaface.training.mesh_head describes
the objective). The output holds the whole model with the trained head (its stored config says
mesh_head=roi), usable wherever weights are: detect.py --weights FILE --mesh --mesh-init head, eval-mesh,
export. Settings are --key=value overrides of MeshHeadTrainConfig: images, image_size, seed,
score_threshold, iou_threshold, steps, batch_size, lr, weight_decay and the four term weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import common


def _collect_range(weights: str, config_dict: dict, first: int, count: int, threads: int):
    """One worker's share of the synthetic images (a process of its own)."""

    import torch

    from ..model.weights import load_model
    from ..training.mesh_head import MeshHeadTrainConfig, collect_samples, with_fresh_mesh_head

    torch.set_num_threads(threads)
    config = dataclasses.replace(MeshHeadTrainConfig(**config_dict), images=count)
    return collect_samples(with_fresh_mesh_head(load_model(weights)), config, first_image=first)


def main(argv: list[str] | None = None) -> int:
    parser = common.ArgumentParser(
        prog="retinaface train-mesh-head", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", default="mobilenet0.25", help="detector weights to keep frozen (default: %(default)s)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="safetensors file to write (the model with its trained head)")
    parser.add_argument("--workers", type=common.int_at_least(1, 64), default=1, help="processes drawing and reading the synthetic faces (default: %(default)s)")
    parser.add_argument("--samples", type=Path, help="cache of the collected faces (.pt): read when it exists and matches the settings, else written after collecting")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args, overrides = parser.parse_known_args(argv)
    if any(not item.startswith("--") or "=" not in item for item in overrides):
        parser.error(f"unrecognised arguments: {' '.join(overrides)} (settings are --key=value)")
    if args.output.suffix != ".safetensors":
        parser.error("--output must end in .safetensors")

    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    import torch
    from tqdm import tqdm

    from ..config import apply_overrides, config_to_dict
    from ..model.weights import load_model, read_safetensors, resolve_weights, save_safetensors
    from ..training.mesh_head import (
        HeadSamples, MeshHeadTrainConfig, collect_samples, collection_settings, head_errors, read_samples, train_mesh_head,
        with_fresh_mesh_head, write_samples,
    )

    try:
        config = apply_overrides(MeshHeadTrainConfig(), overrides)
        source = resolve_weights(args.weights)
        model = with_fresh_mesh_head(load_model(source))
        collected = collection_settings(config, model.heads.mesh)
        samples = read_samples(args.samples, collected) if args.samples is not None and args.samples.is_file() else None
        if samples is not None:
            print(f"read the collected faces from {args.samples}", file=sys.stderr)
        elif args.workers == 1:
            with tqdm(total=config.images, desc="synthetic faces", unit="img", disable=args.no_progress) as bar:
                samples = collect_samples(model, config, progress=lambda done, total: bar.update(1))
        else:
            shares = [config.images // args.workers + (i < config.images % args.workers) for i in range(args.workers)]
            firsts = [sum(shares[:i]) for i in range(args.workers)]
            threads = max(1, torch.get_num_threads() // args.workers)
            print(f"drawing {config.images} synthetic images in {args.workers} processes", file=sys.stderr)
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = list(pool.map(_collect_range, [str(source)] * args.workers, [config_to_dict(config)] * args.workers,
                                      firsts, shares, [threads] * args.workers))
            samples = HeadSamples.cat(parts)
        if args.samples is not None and not args.samples.is_file():
            write_samples(args.samples, samples, collected)
        print(f"{int(samples.detected.sum())} faces found in {config.images} images ({len(samples.pooled)} samples)", file=sys.stderr)
        with tqdm(total=config.steps, desc="training", unit="step", disable=args.no_progress) as bar:
            def report(step: int, losses: dict[str, float]) -> None:
                bar.update(step - bar.n)
                bar.set_postfix({name: f"{value:.4f}" for name, value in losses.items() if name != "seconds"})

            train_mesh_head(model.heads.mesh, samples, config, report=report, report_every=50)
        errors = head_errors(model.heads.mesh, samples)
        _, metadata = read_safetensors(source) if source.suffix == ".safetensors" else ({}, {})
        kept = {key: value for key, value in metadata.items() if key != "model_config"}
        kept["mesh_head_training"] = json.dumps({"config": config_to_dict(config), "training_faces": errors})
        args.output.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(model, args.output, extra_metadata=kept)
    except common.REPORTED_ERRORS as exc:
        return common.report_error(exc)
    print(json.dumps({"output": str(args.output), "training_faces": {k: round(v, 2) for k, v in errors.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
