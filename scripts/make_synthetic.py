#!/usr/bin/env python
"""Generate a synthetic WIDER-format face dataset (train labels with landmarks, val images and .mat GT).

  python scripts/make_synthetic.py runs/synthetic --train 400 --val 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="folder to write (train/ and val/ inside)")
    parser.add_argument("--train", type=int, default=400, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=100, help="validation images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--shape-scale", type=float, default=1.0,
                        help="scale of the faces' identity and expression weights (1: the face prior's variety; 0: all the mean face)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.train < 0 or args.val < 0:
        parser.error("--train and --val must not be negative")
    if not 0 <= args.shape_scale <= 1:
        parser.error("--shape-scale must be in [0, 1] (expression weights stay in [0, 1])")
    from retinaface.datasets.synthetic import generate
    from retinaface.errors import InputError
    from retinaface.outputs.atomic import check_writable

    try:
        check_writable(args.output / "probe")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = generate(args.output, num_train=args.train, num_val=args.val, seed=args.seed, height=args.height, width=args.width,
                      shape_scale=args.shape_scale, progress=not args.no_progress)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
