#!/usr/bin/env python
"""Does fitting bring a face's mesh closer to its true 3-D shape than the mean face it starts from?

  python scripts/bench_shape_truth.py                     # 6 identities x 5 poses, 20 fitting steps
  python scripts/bench_shape_truth.py --identities 10 --mesh-steps 40 --mesh-init head
  python scripts/bench_shape_truth.py --fit shape_lr_scale=1 landmarks_move_shape=true   # other fitting settings

Faces of the face-shape prior with random identities (retinaface.evaluation.pose_truth: rendered with the
template's colours at known poses) go through Detector(mesh=True). For each face found, the fitted mesh's
model-frame vertices and the prior's mean face are each aligned to the true shape by a similarity transform
(Umeyama) and their mean vertex distance is reported in % of the face height: the fit should never be
farther from the truth than the mean face.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=6)
    parser.add_argument("--mesh-steps", type=int, default=None, help="fitting steps (default: the Detector's)")
    parser.add_argument("--mesh-init", choices=("pnp", "head"), default=None)
    parser.add_argument("--fit", nargs="+", default=[], metavar="KEY=VALUE",
                        help="FitConfig fields to change (retinaface.mesh.photo_fit), e.g. shape_lr_scale=1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=REPO / "runs" / "bench_shape_truth.json")
    args = parser.parse_args(argv)
    if args.identities < 1:
        parser.error("--identities must be at least 1")

    import torch

    torch.set_num_threads(args.threads)
    from retinaface import Detector
    from retinaface.config import ConfigError, apply_overrides
    from retinaface.evaluation.mesh_accuracy import similarity_procrustes
    from retinaface.evaluation.mesh_eval import face_height
    from retinaface.evaluation.pose_truth import central_face, prior_face, render_face

    detector = Detector.from_pretrained("mobilenet0.25", device="cpu", mesh=True, mesh_steps=args.mesh_steps, mesh_start=args.mesh_init)
    fitter = detector.stages.mesh_fitter
    try:
        fitter.config = apply_overrides(fitter.config, args.fit)
    except ConfigError as exc:
        parser.error(str(exc))
    mean = prior_face(None)
    height = face_height()

    def aligned_error(shape: np.ndarray, truth: np.ndarray) -> float:
        scale, rotation, shift = similarity_procrustes(shape, truth)
        moved = scale * shape @ rotation.T + shift
        return float(100.0 * np.linalg.norm(moved - truth, axis=1).mean() / height)

    rows = []
    poses = [(0.0, 0.0, 0.0), (30.0, 0.0, 0.0), (-30.0, 10.0, 0.0), (0.0, -15.0, 10.0), (45.0, 0.0, 0.0)]
    for identity in range(args.identities):
        truth = prior_face(2000 + identity)
        for index, (yaw, pitch, roll) in enumerate(poses):
            rendered = render_face(truth, yaw, pitch, roll, size=384, face_px=150.0, noise=2.0, seed=index)
            face = central_face(detector, rendered.image)
            if face is None or face.mesh_model_vertices is None:
                continue
            rows.append({"identity": identity, "pose": [yaw, pitch, roll],
                         "fitted": aligned_error(face.mesh_model_vertices.astype(np.float64), truth),
                         "mean_face": aligned_error(mean, truth)})
    if not rows:
        print("error: the detector found none of the rendered faces", file=sys.stderr)
        return 2
    fitted = np.array([r["fitted"] for r in rows])
    baseline = np.array([r["mean_face"] for r in rows])
    summary = {"faces": len(rows), "median_fitted_pct": float(np.median(fitted)), "median_mean_face_pct": float(np.median(baseline)),
               "worse_than_mean_face": int((fitted > baseline).sum()), "largest_excess_pct": float((fitted - baseline).max()),
               "fit": dataclasses.asdict(fitter.config)}
    print(f"{len(rows)} faces ({args.identities} identities x {len(poses)} poses): shape error after similarity alignment, "
          f"% of the face height, median: fitted {summary['median_fitted_pct']:.2f}, mean face {summary['median_mean_face_pct']:.2f}; "
          f"the fit is farther from the truth than the mean face on {summary['worse_than_mean_face']} of {len(rows)} faces, "
          f"by at most {summary['largest_excess_pct']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
