#!/usr/bin/env python
"""The RetinaFace paper's Table 3 in miniature: synthetic val AP with and without the mesh terms.

Trains the same preset on the same synthetic data once per seed and arm, in this process, one run after
the other:
  with      the preset as it is (the pixel term at pixel_weight, our mesh landmark term at mesh_landmark_weight)
  without   --loss.pixel_weight=0 --loss.mesh_landmark_weight=0 (the mesh branch is not run in training)
then prints the final validation AP (easy / medium / hard, official protocol) per run and, per arm, the mean
and standard deviation over the seeds, with the paired differences (same seed: same initial weights, data
order and augmentation), and writes JSON. Runs already finished under --output are read, not retrained; a folder
holding an unfinished run stops the script (continue that run with scripts/train.py --resume, or delete it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ARMS = {"with": [], "without": ["--loss.pixel_weight=0", "--loss.mesh_landmark_weight=0"]}
LEVELS = ("easy", "medium", "hard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a make_synthetic.py folder (train/label.txt, val/, val/gt)")
    parser.add_argument("--preset", default="mobilenet0.25-synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=Path("runs/table3"))
    parser.add_argument("--threads", type=int, default=2)
    args, overrides = parser.parse_known_args(argv)
    if len(args.seeds) < 2:
        parser.error("give at least two seeds (a spread needs them)")
    for name in ("train/label.txt", "val/gt"):
        if not (args.data / name).exists():
            print(f"error: {args.data / name} not found; make it with scripts/make_synthetic.py", file=sys.stderr)
            return 2

    import torch

    from retinaface.errors import ConfigError
    from retinaface.errors import InputError
    from retinaface.outputs.atomic import atomic_write
    from retinaface.training.run_dir import check_run_dir
    from retinaface.training.loop import train, train_config

    torch.set_num_threads(args.threads)
    results: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    for seed in args.seeds:
        for arm, extra in ARMS.items():
            folder = args.output / f"{arm}-seed{seed}"
            finished = folder / "final.safetensors"
            if not finished.is_file():
                common = [f"--train_labels={args.data / 'train' / 'label.txt'}", f"--val_images={args.data / 'val'}",
                          f"--val_gt_dir={args.data / 'val' / 'gt'}", f"--output={folder}", f"--seed={seed}"]
                try:
                    config = train_config(args.preset, common + overrides + extra)
                    check_run_dir(folder, resume=None)  # an interrupted run: its logs must not be mixed with a new one's
                except (ConfigError, InputError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                print(f"training {arm} seed {seed} -> {folder}", flush=True)
                train(config, progress=False, device="cpu")
            last = json.loads((folder / "validation.jsonl").read_text().splitlines()[-1])
            results[arm][seed] = last
            print(f"{arm:>8} seed {seed}: " + " / ".join(f"{last[level]:.4f}" for level in LEVELS), flush=True)

    summary: dict = {"preset": args.preset, "overrides": overrides, "seeds": args.seeds, "runs": results, "arms": {}}
    print(f"\n{'arm':>8} " + " ".join(f"{level:>17}" for level in LEVELS))
    for arm in ARMS:
        stats = {}
        for level in LEVELS:
            values = [results[arm][seed][level] for seed in args.seeds]
            stats[level] = {"mean": statistics.mean(values), "std": statistics.stdev(values)}
        summary["arms"][arm] = stats
        print(f"{arm:>8} " + " ".join(f"{stats[l]['mean']:.4f} +- {stats[l]['std']:.4f}" for l in LEVELS))
    paired = {level: [results["with"][s][level] - results["without"][s][level] for s in args.seeds] for level in LEVELS}
    summary["paired_with_minus_without"] = paired
    print("paired (with - without), per seed: " + "; ".join(f"{l} " + " / ".join(f"{d:+.4f}" for d in paired[l]) for l in LEVELS))
    path = args.output / "table3.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
