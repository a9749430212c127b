#!/usr/bin/env python
"""Where a --mesh video frame's time goes: CPU milliseconds per frame of each step of detect.py's pipeline.

Runs the steps of ``detect.py CLIP --mesh`` (the generated 1280x720 three-face demo clip, detection at 640 px,
the video refiner preset, tracking, warm-started mesh fits, mesh and box drawing, the JSON record, H.264
encoding) one after the other in one thread, and charges each step the process CPU time it used
(``time.process_time``: steadier than wall time on a shared machine; with ``--threads 1`` it is the work
itself). Inside the fit it also times the PnP start, the crops, shading, rasterisation, interpolation,
backward passes and Adam steps. Then it runs the clip through detect.py's own loop (run_detect), where the
steps overlap in four threads (reading; detection and the refiner; tracking and mesh fits; drawing, JSON
and encoding), and charges each thread its CPU time (``time.thread_time``; all frames counted, x264's own
threads under "other"): the busiest thread and half the total bound the frames/s that 2 free cores can give
(``scripts/bench_mesh_video.py`` measures the frames/s). Writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames of the generated clip")
    parser.add_argument("--skip", type=int, default=5, help="first frames run but not counted (cold fits, warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (1: each step's own work)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="onnxruntime",
                        help="engine of the network (default: %(default)s, detect.py's for videos on the CPU)")
    parser.add_argument("--json", type=Path, default=Path("runs/bench_mesh_breakdown.json"))
    args = parser.parse_args(argv)
    if args.frames < 2 or not 0 <= args.skip < args.frames:
        print("error: --frames must be at least 2 and more than --skip", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    import retinaface.mesh.photo_fit as photo_fit
    from retinaface import Detector
    from retinaface.config import REFINE_PRESETS
    from retinaface.faces.drawing import draw_faces
    from retinaface.faces.mesh_overlay import draw_meshes
    from retinaface.faces.tracking import IouTracker
    from retinaface.media.video import VideoSource
    from retinaface.outputs.video import open_video_writer
    from retinaface.runner.loop import frame_record
    from retinaface.runner.pipeline import VIDEO_MAX_SIZE
    from retinaface.samples import write_demo_video
    from retinaface.utils.cpu import summary_line

    spent: dict[str, float] = collections.defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.process_time() - start
        return wrapper

    # steps inside the fit (module attributes the fit looks up at call time)
    for attribute, name in (("initial_state", "fit: PnP start"), ("_crops", "fit: crops"), ("shade_vertices", "fit: shading"),
                            ("rasterize_zbuffer", "fit: rasterisation"), ("interpolate_covered", "fit: interpolation"),
                            ("interpolate", "fit: interpolation"), ("roi_align", "fit: crops"),  # names of earlier versions
                            ("_optimise", "fit: optimisation (all of the above but PnP, and the rest)")):
        if hasattr(photo_fit, attribute):
            setattr(photo_fit, attribute, timed(name, getattr(photo_fit, attribute)))
    backward, adam_step = torch.Tensor.backward, torch.optim.Adam.step
    torch.Tensor.backward = timed("fit: backward passes", backward)
    torch.optim.Adam.step = timed("fit: Adam steps", adam_step)

    detector = Detector.from_pretrained(device="cpu", max_size=VIDEO_MAX_SIZE, mesh=True, refine=REFINE_PRESETS["video"], backend=args.backend)
    stages = detector.stages
    refiner_type, fitter_type = type(stages.refiner), type(stages.mesh_fitter)
    refiner_call, fitter_call = refiner_type.__call__, fitter_type.__call__
    refiner_type.__call__ = timed("landmark refiner", refiner_call)
    fitter_type.__call__ = timed("mesh fit (all of it)", fitter_call)
    steps = collections.OrderedDict()
    try:
        with tempfile.TemporaryDirectory() as folder:
            clip = write_demo_video(Path(folder) / "clip.mp4", num_frames=args.frames)
            source = VideoSource(str(clip))
            tracker = IouTracker(fps=source.fps)
            writer = open_video_writer(Path(folder) / "out.mp4", fps=source.fps, size=(source.width, source.height))
            frames = faces_total = 0
            wall = time.perf_counter()
            with open(Path(folder) / "out.jsonl", "w") as records:
                iterator = iter(source)
                while True:
                    if frames == args.skip:  # from here on, counted
                        spent.clear()
                        frames = faces_total = 0
                        args.skip = -1
                        wall = time.perf_counter()
                    start = time.process_time()
                    frame = next(iterator, None)
                    spent["decoding"] += time.process_time() - start
                    if frame is None:
                        break
                    start = time.process_time()
                    faces = detector.find([frame])[0]
                    spent["detection (network, NMS)"] += time.process_time() - start
                    start = time.process_time()
                    stages([frame], [faces], tracker=tracker)
                    spent["per-face stages (refiner, tracking, fit)"] += time.process_time() - start
                    start = time.process_time()
                    picture = draw_meshes(frame, faces)
                    spent["drawing meshes"] += time.process_time() - start
                    start = time.process_time()
                    picture = draw_faces(picture, faces)
                    spent["drawing boxes and points"] += time.process_time() - start
                    start = time.process_time()
                    records.write(json.dumps(frame_record("clip", frames, frame, faces, include_mesh=True)) + "\n")
                    spent["JSON record"] += time.process_time() - start
                    start = time.process_time()
                    writer.write(picture)
                    spent["H.264 encoding"] += time.process_time() - start
                    frames += 1
                    faces_total += len(faces)
            writer.close()
            wall = time.perf_counter() - wall
            source.close()
    finally:
        torch.Tensor.backward, torch.optim.Adam.step = backward, adam_step
        refiner_type.__call__, fitter_type.__call__ = refiner_call, fitter_call

    order = ["decoding", "detection (network, NMS)", "landmark refiner", "mesh fit (all of it)", "fit: PnP start", "fit: crops",
             "fit: shading", "fit: rasterisation", "fit: interpolation", "fit: backward passes", "fit: Adam steps",
             "fit: optimisation (all of the above but PnP, and the rest)", "per-face stages (refiner, tracking, fit)",
             "drawing meshes", "drawing boxes and points", "JSON record", "H.264 encoding"]
    for name in order + [k for k in spent if k not in order]:
        if name in spent:
            steps[name] = spent[name] / frames * 1000
    threads = _loop_threads(detector, args.frames)

    top = ("decoding", "detection (network, NMS)", "per-face stages (refiner, tracking, fit)", "drawing meshes", "drawing boxes and points", "JSON record", "H.264 encoding")
    total = sum(steps[name] for name in top if name in steps)
    print(summary_line())
    print(f"{frames} frames counted, {faces_total / frames:.2f} faces per frame, PyTorch threads {args.threads}, network in {args.backend}; CPU ms per frame:")
    for name, value in steps.items():
        indent = "    " if name.startswith("fit: ") or name in ("landmark refiner", "mesh fit (all of it)") else "  "
        print(f"{indent}{name:<62} {value:7.2f}")
    print(f"  {'total':<62} {total:7.2f}  (sequential wall time {wall / frames * 1000:.1f} ms per frame)")
    print("detect.py's loop, CPU ms per frame of each thread:")
    for name, value in threads.items():
        print(f"  {name:<62} {value:7.2f}")
    busiest = max(value for name, value in threads.items() if name not in ("other threads (x264, ...)", "total"))
    bound = max(busiest, threads["total"] / 2)
    print(f"  on 2 free cores at most {1000 / bound:.1f} frames/s (busiest thread {busiest:.1f} ms, half the total {threads['total'] / 2:.1f} ms)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"frames": frames, "faces_per_frame": faces_total / frames, "threads": args.threads, "backend": args.backend,
                                     "cpu_ms_per_frame": steps, "total_cpu_ms_per_frame": total,
                                     "loop_thread_cpu_ms_per_frame": threads, "two_core_bound_frames_per_second": 1000 / bound}, indent=1))
    print(f"wrote {args.json}")
    return 0


def _loop_threads(detector, num_frames: int) -> dict[str, float]:
    """CPU ms per frame of each thread of run_detect's loop on a fresh clip (the reader, the calling thread's
    detection and refiner, the stager's tracking and fits, the writer), the rest of the process as "other"."""
    import threading

    from retinaface import run_detect
    from retinaface.runner.loop import DetectLoop
    from retinaface.samples import write_demo_video

    spent: dict[str, float] = {}
    lock = threading.Lock()
    names = {"_read": "reader (decoding)", "_detect": "detection thread (network, refiner)",
             "_run_stages": "stager (tracking, mesh fits)", "_write": "writer (drawing, JSON, encoding)"}
    originals = {attribute: getattr(DetectLoop, attribute) for attribute in names}

    def charged(attribute, fn):
        def wrapper(*a, **k):
            start = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    spent[names[attribute]] = spent.get(names[attribute], 0.0) + time.thread_time() - start
        return wrapper

    for attribute, fn in originals.items():
        setattr(DetectLoop, attribute, charged(attribute, fn))
    try:
        with tempfile.TemporaryDirectory() as folder:
            clip = write_demo_video(Path(folder) / "clip.mp4", num_frames=num_frames)
            start = time.process_time()
            summary = run_detect(detector, str(clip), output=Path(folder) / "loop.mp4", json_path=Path(folder) / "loop.jsonl",
                                 include_mesh=True, progress=False)
            process = time.process_time() - start
    finally:
        for attribute, fn in originals.items():
            setattr(DetectLoop, attribute, fn)
    per_frame = {name: spent.get(name, 0.0) / summary.frames * 1000 for name in names.values()}
    per_frame["other threads (x264, ...)"] = max(0.0, process / summary.frames * 1000 - sum(per_frame.values()))
    per_frame["total"] = process / summary.frames * 1000
    return per_frame


if __name__ == "__main__":
    raise SystemExit(main())
