#!/usr/bin/env python
"""Time one forward + backward of the whole mesh branch (decoder + rendering + pixel loss) on CPU.

Default: 16 faces, 112 x 112 crops, 2 threads, median of 10 runs after 3 warm-up runs; target < 0.3 s.
Also times PyTorch3D's own CPU rasteriser on the same scene for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from retinaface.mesh.branch import MeshBranch, MeshPixelLoss
    from retinaface.mesh.coefficients import random_coefficients, split_coefficients
    from retinaface.mesh.renderer import camera_from_params, project, rasterize_pytorch3d, rasterize_zbuffer
    from retinaface.utils.timing import median_seconds

    torch.manual_seed(0)
    branch = MeshBranch()
    loss_fn = MeshPixelLoss(template=branch.template, crop_size=args.size, max_faces=args.faces)
    images = torch.rand(2, 3, 640, 640)
    boxes = torch.rand(args.faces, 2) * 400
    boxes = torch.cat([boxes, boxes + 40 + torch.rand(args.faces, 2) * 150], dim=1)
    image_index = torch.arange(args.faces) % 2
    base = random_coefficients(args.faces, torch.Generator().manual_seed(0))

    def step() -> None:
        coefficients = base.clone().requires_grad_()
        loss_fn(branch, coefficients, images, boxes, image_index).backward()

    total = median_seconds(step, runs=args.runs)
    with torch.no_grad():
        mesh = branch.decode(base)
        ndc = project(mesh.vertices, camera_from_params(split_coefficients(base).camera))
    ours = median_seconds(lambda: rasterize_zbuffer(ndc, branch.render_faces, args.size), runs=args.runs)
    theirs = median_seconds(lambda: rasterize_pytorch3d(ndc, branch.render_faces, args.size), runs=3, warmup=1)
    result = {
        "faces": args.faces, "size": args.size, "threads": args.threads,
        "forward_backward_s": round(total, 4), "target_s": 0.3,
        "rasterise_zbuffer_s": round(ours, 4), "rasterise_pytorch3d_cpu_s": round(theirs, 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
