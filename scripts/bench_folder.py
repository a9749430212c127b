#!/usr/bin/env python
"""Folder throughput of `retinaface detect FOLDER`: images/s with and without decoding ahead, in one run.

Generates --count real-size JPEGs (once, into --folder) from the shipped astronaut photo and, when present,
../shared/data/images/crowd.jpg, at several sizes from 640x480 to 1920x1080, then times in alternating order:
  sequential   run_detect(..., decode_workers=0): read an image, detect, next (how folders ran before)
  prefetch     run_detect(..., decode_workers=2): images decoded ahead in threads, batch size 1
  prefetch_batched   the same with --batch-size images of similar sizes per forward pass
  prefetch_onnxruntime   prefetch with the network in onnxruntime (detect.py --backend onnxruntime)
and, to show where the time goes, decoding alone (read_image over the folder) and detection alone (the
detector over the already decoded images). Writes JSON (--json). No drawing: the JSON Lines only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SIZES = [(640, 480), (1024, 768), (1280, 720), (1920, 1080), (800, 800)]


def make_folder(folder: Path, count: int) -> list[Path]:
    import cv2

    from retinaface.media.images import read_image
    from retinaface.samples import ASTRONAUT

    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == count:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    for old in existing:
        old.unlink()
    crowd = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "crowd.jpg"
    photos = [read_image(ASTRONAUT)] + ([read_image(crowd)] if crowd.is_file() else [])
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        image = cv2.resize(photos[index % len(photos)], (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"img{index:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return sorted(folder.glob("*.jpg"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="JPEGs to generate and detect (default: %(default)s)")
    parser.add_argument("--folder", type=Path, default=Path("runs/bench_folder/images"))
    parser.add_argument("--batch-size", type=int, default=4, help="batch size of the prefetch path (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("runs/bench_folder.json"))
    args = parser.parse_args(argv)
    if args.count < 1 or args.batch_size < 1 or args.threads < 1:
        parser.error("--count, --batch-size and --threads must be positive")

    import torch

    from retinaface import Detector, run_detect
    from retinaface.outputs.atomic import atomic_write
    from retinaface.media.images import read_image

    torch.set_num_threads(args.threads)
    paths = make_folder(args.folder, args.count)
    # no mesh head: detect.py runs none without --mesh
    detector = Detector.from_pretrained("mobilenet0.25", device="cpu", mesh_head=False)
    detectors = {"torch": detector, "onnxruntime": Detector.from_pretrained("mobilenet0.25", backend="onnxruntime", mesh_head=False)}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "sequential": dict(decode_workers=0, batch_size=1),
            "prefetch": dict(decode_workers=2, batch_size=1),
            "prefetch_batched": dict(decode_workers=2, batch_size=args.batch_size),
            "prefetch_onnxruntime": dict(decode_workers=2, batch_size=1),
        }
        for name, options in runs.items():
            engine = detectors["onnxruntime" if name.endswith("onnxruntime") else "torch"]
            summary = run_detect(engine, str(args.folder), json_path=Path(tmp) / f"{name}.jsonl", draw=False,
                                 progress=False, **options)
            results[f"{name}_images_per_s"] = summary.frames / summary.seconds
            print(f"{name:>16}: {summary.frames / summary.seconds:6.1f} images/s ({summary.frames} images, {summary.faces} faces)")
        start = time.perf_counter()
        images = [read_image(path) for path in paths[: min(len(paths), 200)]]
        decode = (time.perf_counter() - start) / len(images)
        start = time.perf_counter()
        for image in images:
            detector(image)
        network = (time.perf_counter() - start) / len(images)
    results.update(decode_ms=decode * 1000, detect_ms=network * 1000, decode_share=decode / (decode + network),
                   speedup=results["prefetch_images_per_s"] / results["sequential_images_per_s"], count=len(paths))
    print(f"per image: decoding {decode * 1000:.1f} ms, detection {network * 1000:.1f} ms "
          f"(decoding = {100 * results['decode_share']:.0f}% of the sequential work); "
          f"prefetch / sequential = {results['speedup']:.2f}x")
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
