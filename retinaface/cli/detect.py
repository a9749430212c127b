"""Detect faces (box, score, five landmarks) in an image, a folder of images, a video or a camera.

Writes an annotated copy and a JSON Lines file with one record per image or frame:
  {"source", "frame", "width", "height", "faces": [{"box": [x1, y1, x2, y2], "score", "landmarks": [[x, y] x 5]}]}
With --mesh each face also gets "mesh_coefficients" (144) and "mesh_vertices" ([x, y, depth] x 468, pixels).

Examples:
  python scripts/detect.py photo.jpg
  python scripts/detect.py video.mp4 --output annotated.mp4 --json faces.jsonl
  python scripts/detect.py photos/ --no-draw --json faces.jsonl
  python scripts/detect.py photo.jpg --mesh                # overlay the fitted 3D face meshes
  python scripts/detect.py 0            # webcam 0, Ctrl+C to stop
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import InferenceConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="retinaface detect", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="image file, folder of images, video file, or camera index (e.g. 0)")
    parser.add_argument("--output", "-o", type=Path, help="annotated image/video/folder (default: ./<name>_faces.<ext>)")
    parser.add_argument("--json", type=Path, help="JSON Lines output (default: next to --output, .jsonl)")
    parser.add_argument("--weights", default="mobilenet0.25", help="released weights name or .safetensors/.pt path (default: %(default)s)")
    parser.add_argument("--score-threshold", type=float, default=InferenceConfig.score_threshold, help="minimum face score (default: %(default)s)")
    parser.add_argument("--nms-threshold", type=float, default=InferenceConfig.nms_threshold, help="NMS IoU threshold (default: %(default)s)")
    parser.add_argument("--max-size", type=int, default=None, help="downscale so the long side is at most this many pixels for detection; results stay in original pixels; 0 = original size (default: 640 for videos and cameras, original size for images)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto = CUDA if available)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch", help="inference engine (default: %(default)s; onnxruntime runs on the CPU)")
    parser.add_argument("--batch-size", type=int, default=1, help="frames/images per forward pass (default: %(default)s)")
    parser.add_argument("--mesh", action="store_true", help="decode each face's 3D mesh: overlay the rendered meshes and add mesh coefficients and vertices to the JSON (PyTorch backend)")
    parser.add_argument("--no-draw", action="store_true", help="write only the JSON Lines file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_threshold <= 1.0:
        parser.error("--score-threshold must be between 0 and 1")
    if not 0.0 < args.nms_threshold <= 1.0:
        parser.error("--nms-threshold must be in (0, 1]")
    if args.max_size is not None and args.max_size < 0:
        parser.error("--max-size must be 0 (original size) or positive")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from retinaface import Detector, InputError, WeightsError, run_detect
    from retinaface.pipeline import VIDEO_MAX_SIZE, classify_source

    try:
        max_size = args.max_size
        if max_size is None:
            max_size = VIDEO_MAX_SIZE if classify_source(args.input) in ("video", "camera") else 0
        detector = Detector.from_pretrained(
            args.weights, device=args.device, score_threshold=args.score_threshold,
            nms_threshold=args.nms_threshold, max_size=max_size or None, backend=args.backend, mesh=args.mesh,
        )
        summary = run_detect(
            detector, args.input, output=args.output, json_path=args.json, draw=not args.no_draw,
            batch_size=args.batch_size, include_mesh=args.mesh, progress=not args.no_progress,
        )
    except (InputError, WeightsError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. an unavailable --device
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1

    unit = "frames" if summary.kind in ("video", "camera") else "images"
    written = ", ".join(str(p) for p in (summary.output, summary.json_path) if p is not None)
    print(
        f"{summary.faces} faces in {summary.frames} {unit} ({summary.frames_per_second:.1f} {unit}/s on "
        f"{detector.device}); wrote {written}"
    )
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable files", file=sys.stderr)
    if summary.interrupted:
        print("interrupted: outputs hold the frames processed so far", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
