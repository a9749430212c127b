#!/usr/bin/env python
"""Video speed with meshes: frames/s of detect.py's pipeline on a generated 1280x720 clip with three faces.

Runs the same clip (the astronaut sample, three moving copies; retinaface.samples.demo_frames) through
run_detect three ways in one process, so the figures share the machine's load: detection only; detection
with the landmark refiner (the closer look that --mesh turns on; its video preset, as detect.py uses on
videos); and Detector(mesh=True) (refiner, warm-
started fits, mesh overlay drawn, H.264 written). Prints frames/s and the ratios; writes JSON.
Targets: >= 8 frames/s with --mesh on 2 CPU cores (met), >= 20 (#23). Where a frame's time goes: scripts/bench_mesh_breakdown.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames of the generated clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("runs/bench_mesh_video.json"))
    args = parser.parse_args(argv)
    if args.frames < 2:
        print("error: --frames must be at least 2", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    from retinaface import Detector, run_detect
    from retinaface.config import REFINE_PRESETS
    from retinaface.outputs.atomic import atomic_write
    from retinaface.runner.pipeline import VIDEO_MAX_SIZE
    from retinaface.samples import write_demo_video

    video = REFINE_PRESETS["video"]
    runs = {
        "detection": dict(mesh=False),
        "detection + refined landmarks": dict(mesh=False, refine_landmarks=True, refine=video),
        "--mesh": dict(mesh=True, refine=video),
    }
    results: dict = {"frames": args.frames, "threads": args.threads, "size": "1280x720", "faces_per_frame": 3}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_demo_video(Path(folder) / "clip.mp4", num_frames=args.frames)
        for name, options in runs.items():
            detector = Detector.from_pretrained(device="cpu", max_size=VIDEO_MAX_SIZE, **options)
            summary = run_detect(detector, str(clip), output=Path(folder) / f"out{len(results)}.mp4",
                                 json_path=Path(folder) / f"out{len(results)}.jsonl", include_mesh=options["mesh"], progress=False)
            results[name] = summary.frames_per_second
            print(f"{name:<32} {summary.frames_per_second:6.1f} frames/s ({summary.frames} frames)", flush=True)
    base = results["detection"]
    for name in runs:
        print(f"{name:<32} {results[name] / base:6.2f}x the detection-only speed")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1)
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
