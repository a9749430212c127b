"""Faces found in rotated copies of photos, without and with `--rotations`, against the upright photo.

  python scripts/measure_rotations.py ../shared/data/images/crowd.jpg datasets/samples/astronaut.jpg

For each photo and each turn (0, 90, 180, 270 degrees counter-clockwise) prints the faces found and how
many of them match an upright-photo face (IoU >= 0.5 after mapping it into the turned frame).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torchvision.ops import box_iou

from retinaface import Detector
from retinaface.errors import InputError
from retinaface.media.images import read_image
from retinaface.inference.views import MultiViewDetector, rotation_matrix


def _matched(faces, reference) -> int:
    if not faces or not reference:
        return 0
    iou = box_iou(torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float64)),
                  torch.from_numpy(np.stack([f.box for f in reference]).astype(np.float64)))
    return int((iou.max(dim=0).values >= 0.5).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--weights", default="mobilenet0.25")
    args = parser.parse_args(argv)
    detector = Detector.from_pretrained(args.weights, device="cpu")
    rotations = MultiViewDetector(detector, rotations=True)
    print("| photo | turn | upright faces | found (plain) | matched (plain) | found (--rotations) | matched (--rotations) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in args.images:
        try:
            image = read_image(path)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        height, width = image.shape[:2]
        upright = detector(image)
        for degrees in (0, 90, 180, 270):
            turned = np.ascontiguousarray(np.rot90(image, degrees // 90))
            size = (turned.shape[1], turned.shape[0])
            expected = [f.transformed(rotation_matrix(degrees, width, height), size) for f in upright]
            plain, multi = detector(turned), rotations(turned)
            print(f"| {path.split('/')[-1]} | {degrees} | {len(upright)} | {len(plain)} | {_matched(plain, expected)} "
                  f"| {len(multi)} | {_matched(multi, expected)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
