#!/usr/bin/env python
"""Time a training step (forward, backward, SGD update) on CPU, with and without the mesh pixel term.

Default: MobileNet0.25, 640 x 640, batch 8, 3 faces of 20-200 px per image, 2 threads; median of --runs
steps after 2 warm-up steps. Prints images/s for both and the share of the step the mesh term costs
(target: under 30%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="mobilenet0.25")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from retinaface import build_retinaface, model_preset
    from retinaface.config import LossConfig
    from retinaface.utils.rng import seeded
    from retinaface.utils.timing import median_seconds

    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 255, (3, args.size, args.size), generator=generator, dtype=torch.uint8) for _ in range(args.batch)]
    targets = []
    for _ in range(args.batch):
        sides = torch.rand(3, generator=generator) * 180 + 20
        corners = torch.rand(3, 2, generator=generator) * (args.size - sides[:, None])
        boxes = torch.cat([corners, corners + sides[:, None]], dim=1)
        landmarks = corners[:, None, :] + sides[:, None, None] * torch.tensor([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
        targets.append({"boxes": boxes, "landmarks": landmarks})

    def training_step(loss: LossConfig):
        with seeded(0):
            model = build_retinaface(model_preset(args.model), loss=loss).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

        def step() -> None:
            losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        return step

    step_with_mesh, step_without_mesh = training_step(LossConfig()), training_step(LossConfig(pixel_weight=0.0))
    with_mesh = median_seconds(step_with_mesh, runs=args.runs, warmup=2)
    without_mesh = median_seconds(step_without_mesh, runs=args.runs, warmup=2)
    with_mesh_again = median_seconds(step_with_mesh, runs=args.runs, warmup=2)  # interleaved, so drift on a noisy machine shows
    with_mesh = min(with_mesh, with_mesh_again)
    print(json.dumps({
        "model": args.model, "size": args.size, "batch": args.batch, "threads": args.threads,
        "step_s_with_mesh": round(with_mesh, 3), "step_s_without_mesh": round(without_mesh, 3),
        "images_per_s_with_mesh": round(args.batch / with_mesh, 2), "images_per_s_without_mesh": round(args.batch / without_mesh, 2),
        "mesh_share_of_step": round((with_mesh - without_mesh) / with_mesh, 3), "target_share": 0.3,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
