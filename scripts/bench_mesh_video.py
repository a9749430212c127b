#!/usr/bin/env python
"""Video speed with meshes: frames/s of detect.py's pipeline on a generated 1280x720 clip with three faces.

Runs the same clip (the astronaut sample, three moving copies; retinaface.samples.demo_frames) through
run_detect in one process, so the figures share the machine's load: detection only, with the network in
PyTorch and in onnxruntime; detection with the landmark refiner (the closer look that --mesh turns on; its
video preset, as detect.py uses on videos); Detector(mesh=True) with the mesh fits run after each frame's
detection in the same thread, at the process's PyTorch threads and at one thread; and Detector(mesh=True) as
detect.py runs it (refiner, warm-started fits in a thread of their own beside the next frame's detection,
one PyTorch thread each on 2 cores, mesh overlay drawn, H.264 written), with the network in PyTorch and in
onnxruntime (detect.py's default for videos on the CPU). The other runs use PyTorch. With --repeats N the
runs take turns N times and the medians are printed. Prints frames/s, CPU ms per frame (all threads of the
process) and the ratios; writes JSON. Targets: >= 8 frames/s with --mesh on 2 CPU cores (met), >= 20 (#23).
Where a frame's time goes: scripts/bench_mesh_breakdown.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames of the generated clip")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch threads of the process")
    parser.add_argument("--repeats", type=int, default=1, help="times every run is made, taking turns")
    parser.add_argument("--json", type=Path, default=Path("runs/bench_mesh_video.json"))
    args = parser.parse_args(argv)
    if args.frames < 2 or args.threads < 1 or args.repeats < 1:
        print("error: --frames must be at least 2, --threads and --repeats at least 1", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    from retinaface import Detector, run_detect
    from retinaface.config import REFINE_PRESETS
    from retinaface.utils.threads import torch_threads
    from retinaface.outputs.atomic import atomic_write
    from retinaface.runner.pipeline import VIDEO_MAX_SIZE
    from retinaface.samples import write_demo_video
    from retinaface.utils.cpu import summary_line

    video = REFINE_PRESETS["video"]
    mesh = dict(mesh=True, refine=video)
    # name: (detector options, overlap the fits with detection, PyTorch threads)
    runs = {
        "detection": (dict(mesh=False), True, args.threads),
        "detection, onnxruntime": (dict(mesh=False, backend="onnxruntime"), True, args.threads),
        "detection + refined landmarks": (dict(mesh=False, refine_landmarks=True, refine=video), True, args.threads),
        f"--mesh, fits after detection, {args.threads} thread{'s' if args.threads > 1 else ''}": (mesh, False, args.threads),
        "--mesh, fits after detection, 1 thread": (mesh, False, 1),  # the same run when --threads is 1
        "--mesh (fits beside detection)": (mesh, True, args.threads),
        "--mesh, onnxruntime (detect.py's default on the CPU)": ({**mesh, "backend": "onnxruntime"}, True, args.threads),
    }
    # the mesh head runs only with meshes, as in detect.py
    detectors = {name: Detector.from_pretrained(device="cpu", max_size=VIDEO_MAX_SIZE, mesh_head=options["mesh"], **options)
                 for name, (options, _, _) in runs.items()}
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    faces_per_frame: dict[str, float] = {}
    print(summary_line())
    with tempfile.TemporaryDirectory() as folder:
        clip = write_demo_video(Path(folder) / "clip.mp4", num_frames=args.frames)
        for repeat in range(args.repeats):
            for index, (name, (options, overlap, threads)) in enumerate(runs.items()):
                start = time.process_time()
                with torch_threads(threads):
                    summary = run_detect(detectors[name], str(clip), output=Path(folder) / f"out{index}.mp4",
                                         json_path=Path(folder) / f"out{index}.jsonl", include_mesh=options["mesh"],
                                         progress=False, overlap_stages=overlap)
                speeds[name].append(summary.frames_per_second)
                cpu[name].append((time.process_time() - start) / summary.frames * 1000)
                faces_per_frame[name] = summary.faces / summary.frames
                print(f"{name:<44} {summary.frames_per_second:6.1f} frames/s, {cpu[name][-1]:6.1f} CPU ms per frame "
                      f"({summary.frames} frames, repeat {repeat + 1})", flush=True)
    # the clip shows three faces; the smallest (about 25 px, 12 px at the network's 640) is mostly not detected
    results: dict = {"frames": args.frames, "threads": args.threads, "repeats": args.repeats, "size": "1280x720",
                     "faces_per_frame": faces_per_frame["--mesh (fits beside detection)"], "cpu": summary_line(),
                     "frames_per_second": {}, "cpu_ms_per_frame": {}}
    base = statistics.median(speeds["detection"])
    for name in runs:
        fps, ms = statistics.median(speeds[name]), statistics.median(cpu[name])
        results["frames_per_second"][name], results["cpu_ms_per_frame"][name] = fps, ms
        print(f"{name:<44} median {fps:6.1f} frames/s ({fps / base:4.2f}x detection only), {ms:6.1f} CPU ms per frame, "
              f"{faces_per_frame[name]:.2f} faces per frame")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1)
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
