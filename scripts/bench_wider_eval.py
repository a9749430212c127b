#!/usr/bin/env python
"""Time the WIDER evaluator on the full val ground truth with about 20 generated predictions per image.

Writes the predictions in the official format to a temporary folder, then times reading + scoring
(what `benchmark.py --predictions` does) and scoring alone. Prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(gt, per_image: int, seed: int):
    rng = np.random.default_rng(seed)
    predictions = []
    for per_event in gt.boxes:
        rows_per_image = []
        for boxes in per_event:
            hits = boxes[rng.random(len(boxes)) < 0.8][:per_image]
            hits = hits + rng.normal(0, 0.1, hits.shape) * np.maximum(hits[:, 2:4], 1).repeat(2, axis=1)
            n_fp = max(0, per_image - len(hits))
            fps = np.column_stack([rng.uniform(0, 1000, (n_fp, 2)), rng.uniform(4, 100, (n_fp, 2))])
            rows = np.vstack([hits, fps])
            rows_per_image.append(np.column_stack([rows, rng.random(len(rows))]))
        predictions.append(rows_per_image)
    return predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "wider_val_gt")
    parser.add_argument("--per-image", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from retinaface.errors import WiderFormatError
    from retinaface.evaluation.wider_eval import evaluate, evaluate_folder, load_ground_truth, write_prediction_file

    try:
        gt = load_ground_truth(args.gt_dir)
    except WiderFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    predictions = generate(gt, args.per_image, seed=0)
    total = sum(len(p) for per in predictions for p in per)
    with tempfile.TemporaryDirectory() as folder:
        for event, names, per in zip(gt.events, gt.files, predictions):
            for name, rows in zip(names, per):
                write_prediction_file(Path(folder) / event / f"{name}.txt", name, rows)
        with_io, in_memory = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = evaluate_folder(folder, args.gt_dir)
            with_io.append(time.perf_counter() - start)
            start = time.perf_counter()
            evaluate(predictions, gt)
            in_memory.append(time.perf_counter() - start)
    print(json.dumps({
        "images": gt.num_images, "predictions": total,
        "seconds_read_and_score_median": round(float(np.median(with_io)), 3),
        "seconds_score_only_median": round(float(np.median(in_memory)), 3),
        "ap": {k: round(v, 4) for k, v in result.ap.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
