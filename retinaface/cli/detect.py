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

from . import common


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(
        prog="retinaface detect", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="image file, folder of images, video file, or camera index (e.g. 0)")
    parser.add_argument("--output", "-o", type=Path, help="annotated image/video/folder (default: ./<name>_faces.<ext>); never one of the inputs")
    parser.add_argument("--json", type=Path, help="JSON Lines output (default: next to --output, .jsonl)")
    parser.add_argument("--weights", default="mobilenet0.25", help="released weights name or .safetensors/.pt path (default: %(default)s)")
    parser.add_argument("--score-threshold", type=common.float_in(0.0, 1.0), default=0.5, help="minimum face score (default: %(default)s)")
    parser.add_argument("--nms-threshold", type=common.float_in(0.0, 1.0, low_open=True), default=0.4, help="NMS IoU threshold (default: %(default)s)")
    parser.add_argument("--max-size", type=common.int_at_least(0, 100_000), default=None, help="downscale so the long side is at most this many pixels for detection; results stay in original pixels; 0 = original size (default: 640 for videos and cameras, original size for images)")
    parser.add_argument("--device", type=common.device, default="auto", help="cpu, cuda, cuda:1, ... (default: auto = CUDA if available)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch", help="inference engine (default: %(default)s; onnxruntime runs on the CPU)")
    parser.add_argument("--batch-size", type=common.int_at_least(1, 1024), default=1, help="frames/images per forward pass (default: %(default)s)")
    parser.add_argument("--mesh", action="store_true", help="decode each face's 3D mesh: overlay the rendered meshes and add mesh coefficients and vertices to the JSON (PyTorch backend)")
    parser.add_argument("--no-draw", action="store_true", help="write only the JSON Lines file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with common.command_session() as interruption:
        return _detect(args, interruption)


def _detect(args: argparse.Namespace, interruption) -> int:
    from retinaface import Detector, InputError, WeightsError, run_detect
    from retinaface.io import OutputError
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
            protected=[args.weights] if Path(args.weights).is_file() else [],
        )
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (InputError, WeightsError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. out of memory on the device
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file system problem outside the atomic writers (logs, folders)
        print(f"error: {common.os_error(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory; use a smaller --max-size or --batch-size", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before any output was opened
        print("interrupted: nothing written", file=sys.stderr)
        return interruption.exit_code

    unit = "frames" if summary.kind in ("video", "camera") else "images"
    written = ", ".join(str(p) for p in (summary.output, summary.json_path) if p is not None) or "nothing"
    print(
        f"{summary.faces} faces in {summary.frames} {unit} ({summary.frames_per_second:.1f} {unit}/s on "
        f"{detector.device}); wrote {written}"
    )
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable files (listed above); the JSON covers the others", file=sys.stderr)
    if summary.interrupted:
        done = "outputs hold the frames processed so far" if summary.frames else "nothing written, earlier files kept"
        print(f"interrupted: {done}", file=sys.stderr)
        return interruption.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
