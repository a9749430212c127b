#!/usr/bin/env python
"""How much head pose does one anchor's feature hold? A ceiling for any mesh head of the paper's design.

The mesh head reads the context feature at one anchor (a 1x1 convolution). This probe takes that feature
(64 channels, plus the pyramid level) at every face's best anchor of a synthetic split with known render
parameters, fits maps from it to the *true* head rotation (the camera's pitch, yaw and roll parameters)
on the train split, and scores them on the val split:
  linear   ridge least squares (what a 1x1 head could learn at best)
  mlp      two hidden layers of --hidden units, Adam, L1 (a non-linear head on the same feature)
reporting the median geodesic rotation error next to the zero coefficients' (the template) and, for the
linear map, the R^2 per angle. Nothing here trains the detector; the weights are only read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a make_synthetic.py folder (train/ and val/ with render_params.json)")
    parser.add_argument("--weights", default="mobilenet0.25", help="released weights name or a weights file")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3000, help="MLP optimisation steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for split in ("train", "val"):
        if not (args.data / split / "render_params.json").is_file():
            print(f"error: {args.data / split / 'render_params.json'} not found; make it with scripts/make_synthetic.py", file=sys.stderr)
            return 2

    import torch

    from retinaface.mesh.coefficients import LATENT_DIM, POSE
    from retinaface.evaluation.mesh_eval import anchor_features, head_rotations, rotation_error_degrees
    from retinaface.errors import WeightsError
    from retinaface.model.weights import load_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        model = load_model(args.weights).eval()
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if model.config.mesh_head != "anchor":  # the probe reads what the paper's per-anchor head would read
        from retinaface.training.mesh_head import with_fresh_mesh_head

        model = with_fresh_mesh_head(model, "anchor")
    train_x, train_truth = anchor_features(model, args.data / "train")
    val_x, val_truth = anchor_features(model, args.data / "val")
    pose = slice(LATENT_DIM + POSE.start, LATENT_DIM + POSE.stop)  # the camera's rotation parameters among the 144

    def rotation_error(predicted_pose, truth):
        coefficients = torch.zeros(len(truth), truth.shape[1])
        coefficients[:, pose] = predicted_pose
        return float(rotation_error_degrees(head_rotations(coefficients), head_rotations(truth)).median())

    def r_squared(predicted_pose, truth):
        target = truth[:, pose]
        return (1 - ((predicted_pose - target) ** 2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)).tolist()

    results = {"train_faces": len(train_x), "val_faces": len(val_x),
               "zero": rotation_error(torch.zeros(len(val_x), 3), val_truth)}
    design = torch.cat([train_x, torch.ones(len(train_x), 1)], 1)
    weights = torch.linalg.solve(design.T @ design + torch.eye(design.shape[1]), design.T @ train_truth[:, pose])
    linear = torch.cat([val_x, torch.ones(len(val_x), 1)], 1) @ weights
    results["linear"] = {"rotation_deg": rotation_error(linear, val_truth), "r2_pitch_yaw_roll": r_squared(linear, val_truth)}

    mean, spread = train_x.mean(0), train_x.std(0) + 1e-6
    mlp = torch.nn.Sequential(torch.nn.Linear(train_x.shape[1], args.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 3))
    optimiser = torch.optim.Adam(mlp.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(args.steps):
        rows = torch.randint(len(train_x), (128,))
        loss = (mlp((train_x[rows] - mean) / spread) - train_truth[rows, pose]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        results["mlp"] = {"rotation_deg": rotation_error(mlp((val_x - mean) / spread), val_truth),
                          "train_rotation_deg": rotation_error(mlp((train_x - mean) / spread), train_truth)}
    print(f"{results['train_faces']} train faces, {results['val_faces']} val faces; median rotation error on val "
          f"(zero coefficients {results['zero']:.1f} deg):")
    print(f"  linear map of one anchor's feature  {results['linear']['rotation_deg']:.1f} deg "
          f"(R^2 pitch / yaw / roll {' / '.join(f'{v:.2f}' for v in results['linear']['r2_pitch_yaw_roll'])})")
    print(f"  MLP ({args.hidden} units)                  {results['mlp']['rotation_deg']:.1f} deg "
          f"(on its own train faces {results['mlp']['train_rotation_deg']:.1f})")
    if args.json:
        from retinaface.outputs.atomic import atomic_write

        text = json.dumps(results, indent=1)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
