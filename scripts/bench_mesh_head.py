#!/usr/bin/env python
"""Time the RoI mesh head per face: RoI Align (features and pixels), convs and linear layer on a photo's kept detections.

  python scripts/bench_mesh_head.py                       # the shared crowd photo (or the astronaut)
  python scripts/bench_mesh_head.py photo.jpg --repeats 50 --threads 2
  python scripts/bench_mesh_head.py --test-offset 0.05       # the head read four times per face

Runs the released detector on the photo once, then times the mesh head alone on that photo's features
and kept boxes (the work inference adds per face) and the whole detector call, and prints ms per face.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from retinaface.cli import common

    parser = common.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    crowd = REPO.parent / "shared" / "data" / "images" / "crowd.jpg"
    parser.add_argument("photo", nargs="?", type=Path, default=crowd if crowd.is_file() else REPO / "datasets" / "samples" / "astronaut.jpg")
    parser.add_argument("--weights", default="mobilenet0.25")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--test-offset", type=common.float_in(0.0, 0.5, high_open=True), default=None, metavar="F",
                        help="read the head four times per face around the box, moved by F of its side (0 <= F < 0.5; 0: once; default: the weights' own)")
    args = parser.parse_args(argv)

    import torch

    from retinaface.media.images import read_image
    from retinaface.model.heads import RoIMeshHead
    from retinaface.model.weights import load_model
    from retinaface.utils.cpu import summary_line

    torch.set_num_threads(args.threads)
    try:
        image = read_image(args.photo)
        model = load_model(args.weights, mesh=False, mesh_roi_test_offset=args.test_offset).fuse_for_inference()
    except Exception as exc:  # a bench script: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not isinstance(model.heads.mesh, RoIMeshHead):
        print("error: these weights have the per-anchor mesh head, not the RoI head", file=sys.stderr)
        return 2
    bgr = torch.from_numpy(image).permute(2, 0, 1).float()
    with torch.inference_mode():
        detections = model([bgr])[0]
        batch, _, scales, _ = model.preprocessor([bgr])
        features = model.context_features(batch.contiguous(memory_format=model.input_memory_format))
        boxes = detections["boxes"] * scales[0]
        ids = torch.zeros(len(boxes), dtype=torch.long)
        if not len(boxes):
            print("error: no face found in the photo", file=sys.stderr)
            return 2

        def timed(call) -> float:
            call()
            start = time.perf_counter()
            for _ in range(args.repeats):
                call()
            return (time.perf_counter() - start) / args.repeats

        head = timed(lambda: model.heads.mesh(features, ids, boxes, images=batch))
        one = timed(lambda: model.heads.mesh(features, ids[:1], boxes[:1], images=batch))
        single_reading = timed(lambda: model.heads.mesh.read(features, ids, boxes, images=batch))
        whole = timed(lambda: model([bgr]))
    readings = len(model.heads.mesh.test_boxes(boxes[:1])) if model.heads.mesh.test_offset > 0 else 1
    print(f"{args.photo.name}: {image.shape[1]}x{image.shape[0]}, {len(boxes)} faces; {summary_line()}, {args.threads} threads")
    print(f"mesh head, all faces at once ({readings} readings each): {head * 1e3:.2f} ms ({head * 1e3 / len(boxes):.3f} ms per face)")
    print(f"mesh head, one face: {one * 1e3:.2f} ms")
    print(f"one reading per face instead: {single_reading * 1e3:.2f} ms ({single_reading * 1e3 / len(boxes):.3f} ms per face)")
    print(f"whole detector call: {whole * 1e3:.1f} ms (the head's share {head / whole:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
