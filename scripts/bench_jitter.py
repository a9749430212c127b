#!/usr/bin/env python
"""Frame-to-frame jitter on a still face: landmarks, meshes and head pose.

A photo repeated as a video with fresh sensor-like noise in every frame (default: the astronaut sample,
60 frames, noise sigma 2 grey levels), run through Detector(mesh=True) (video refiner preset; network in
onnxruntime, --backend) with the IoU tracker as detect.py does on videos. Reports median and 95th-percentile
frame-to-frame motion (mean over points) in pixels and relative to sqrt(box area), and the standard deviation
of yaw, pitch and roll. Writes runs/bench_jitter.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", nargs="?", type=Path, default=REPO / "datasets" / "samples" / "astronaut.jpg")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--noise", type=float, default=2.0, help="Gaussian noise sigma per frame, grey levels")
    parser.add_argument("--no-mesh", action="store_true", help="landmarks and pose only (no mesh branch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="onnxruntime",
                        help="engine of the network (default: %(default)s, detect.py's for videos on the CPU)")
    parser.add_argument("--max-size", type=int, default=0, help="detect on a copy whose long side is at most this (0: the photo's size)")
    parser.add_argument("--json", type=Path, default=REPO / "runs" / "bench_jitter.json")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")

    import torch

    torch.set_num_threads(args.threads)
    from retinaface import Detector, InputError
    from retinaface.media.images import read_image
    from retinaface.evaluation.jitter import measure_jitter, still_face_clip

    try:
        image = read_image(args.photo)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from retinaface.config import REFINE_PRESETS

    # the landmark refiner as detect.py runs it on videos (on with meshes)
    detector = Detector.from_pretrained("mobilenet0.25", device="cpu", mesh=not args.no_mesh, refine=REFINE_PRESETS["video"],
                                        backend=args.backend, max_size=args.max_size or None)
    start = time.perf_counter()
    report = measure_jitter(detector, still_face_clip(image, frames=args.frames, noise=args.noise))
    report.update(photo=str(args.photo), noise=args.noise, backend=args.backend, max_size=args.max_size, seconds=round(time.perf_counter() - start, 2))
    print(f"{args.photo.name}: {report['tracked_frames']}/{report['frames']} frames tracked, face {report.get('face_size_px', 0):.0f} px, "
          f"noise sigma {args.noise:g}, network in {args.backend}" + (f" at {args.max_size} px" if args.max_size else ""))
    for key in ("box", "landmarks", "template_mesh", "mesh"):
        if key in report:
            m = report[key]
            print(f"  {key:<14} frame-to-frame motion median {m['median_px']:.3f} px ({m['median_rel']:.4f} of the face), "
                  f"95th percentile {m['p95_px']:.3f} px ({m['p95_rel']:.4f})")
    if "pose_std_deg" in report:
        print("  pose std (deg): " + ", ".join(f"{k} {v:.2f}" for k, v in report["pose_std_deg"].items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
