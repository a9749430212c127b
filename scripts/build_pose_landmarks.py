#!/usr/bin/env python
"""Where the detector's five landmarks sit in 3-D on rendered prior faces (an experiment; pose.py does not use it).

  python scripts/build_pose_landmarks.py                 # writes runs/pose_landmarks.npz
  python scripts/build_pose_landmarks.py --check         # only prints the points and their residuals

Finding (2026-12-06): used as the pose model, these points cut the pitch error on rendered faces but made real
photos worse against mediapipe (astronaut 7.3 -> 21.4 degrees geodesic, Grace Hopper 7.5 -> 15.6). Shallower
points make PnP read a larger turn from the same landmark motion, and so also from each face's own placement
of its landmarks (a nose landmark a little off the eyes' midline reads as a turn). Real photo faces re-posed
by known turns (bench_pose_truth.py) respond even less to nods than these renders, so the detector's landmarks
carry little of a nod, and no choice of five points recovers it (docs/mesh.md). pose.py keeps the prior's
landmark vertices.

The points are where the released detector (mobilenet0.25) puts its five landmarks on faces of known shape
and pose: faces of the ICT-derived prior (identity seeds 0 .. --identities-1; scripts/bench_pose_truth.py scores the mean face and
the seeds 1000 and up, never these) with the template's colours, rendered
(retinaface/evaluation/pose_truth.py) at --views random poses each (yaw within +-60, pitch and roll within
+-30 degrees, face widths 100-240 px, three lights). Each view's camera and head rotation are known, so every
landmark is triangulated: the 3-D point in the head frame (x right, y up, z towards the camera, template
units, the prior's upright frame) whose projections best match that landmark in all views (robust least
squares), from the plain detector's landmarks and from the refined ones (detect.py --mesh) together; the
left and right points are then made mirror images of each other (a face and its detector are left-right
symmetric: the mean of each point and its partner's mirror image, x negated). Nothing
here is fitted to angles: the points are the landmarks' own 3-D positions, and pose stays a PnP against them.
The output is derived from the ICT Face Model (MIT licence, mesh/assets/NOTICE.ict): do not commit it
without that notice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "runs" / "pose_landmarks.npz"


def collect(identities: int, views: int, seed: int, image_size: int = 448):
    """Per view: the head rotation (head frame), camera distance, focal length, image size and the five
    landmarks of the plain and the refined detector (``None`` when not found)."""
    from retinaface import Detector
    from retinaface.evaluation.pose_truth import best_face, prior_face, render_face, turn

    plain = Detector.from_pretrained("mobilenet0.25", device="cpu")
    refined = Detector.from_pretrained("mobilenet0.25", device="cpu", refine_landmarks=True)
    rng = np.random.default_rng(seed)
    lights = ((0.3, 0.4, 1.0), (-0.4, 0.2, 1.0), (0.0, -0.3, 1.0))
    records = []
    for identity in range(identities):
        vertices = prior_face(identity)
        for view in range(views):
            yaw, pitch, roll = rng.uniform(-60, 60), rng.uniform(-30, 30), rng.uniform(-30, 30)
            face_px = float(np.exp(rng.uniform(np.log(100), np.log(240))))
            rendered = render_face(vertices, yaw, pitch, roll, size=image_size, face_px=face_px, light=lights[view % 3],
                                   noise=2.0, seed=view)
            centre = np.array([image_size / 2.0, image_size / 2.0])
            found = [best_face(d(rendered.image), centre) for d in (plain, refined)]
            records.append({"rotation": turn(yaw, pitch, roll), "distance": rendered.distance, "focal": float(image_size),
                            "centre": centre, "landmarks": [None if f is None else np.asarray(f.landmarks, np.float64) for f in found]})
    return records


def triangulate(records, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The five head-frame points ``ndarray[5, 3]`` minimising the robust reprojection error over all views,
    and each landmark's median reprojection error in pixels."""
    from scipy.optimize import least_squares

    points, residuals = [], []
    for k in range(5):
        rotations, distances, focals, centres, observed = [], [], [], [], []
        for record in records:
            for landmarks in record["landmarks"]:
                if landmarks is None:
                    continue
                rotations.append(record["rotation"])
                distances.append(record["distance"])
                focals.append(record["focal"])
                centres.append(record["centre"])
                observed.append(landmarks[k])
        rotations, distances = np.array(rotations), np.array(distances)
        focals, centres, observed = np.array(focals), np.array(centres), np.array(observed)

        def project(x: np.ndarray) -> np.ndarray:
            turned = rotations @ x
            camera = np.stack([turned[:, 0], -turned[:, 1], distances - turned[:, 2]], axis=1)
            return focals[:, None] * camera[:, :2] / camera[:, 2:] + centres

        def residual(x: np.ndarray) -> np.ndarray:
            return (project(x) - observed).ravel()

        solution = least_squares(residual, start[k], loss="soft_l1", f_scale=2.0)
        points.append(solution.x)
        residuals.append(float(np.median(np.linalg.norm(project(solution.x) - observed, axis=1))))
    return np.array(points), np.array(residuals)


MIRROR_PARTNER = (1, 0, 2, 4, 3)
"""Each landmark's mirror partner in the detector's order (the eyes swap, the nose stays, the mouth corners swap)."""


def symmetric(points: np.ndarray) -> np.ndarray:
    """``ndarray[5, 3]``: the mean of each point and the mirror image (x negated) of its partner."""
    mirrored = points[list(MIRROR_PARTNER)] * np.array([-1.0, 1.0, 1.0])
    return (points + mirrored) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=6, help="prior identities besides the mean face (default: %(default)s)")
    parser.add_argument("--views", type=int, default=40, help="random poses per face (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="print the points without writing the asset")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from retinaface.faces.pose import head_model_vertices
    from retinaface.mesh.template import load_template

    records = collect(args.identities, args.views, args.seed)
    found = sum(lm is not None for r in records for lm in r["landmarks"])
    start = load_template().landmark_weights.double().numpy() @ head_model_vertices()
    raw, residuals = triangulate(records, start)
    points = symmetric(raw)
    names = ("image-left eye", "image-right eye", "nose tip", "image-left mouth corner", "image-right mouth corner")
    print(f"{len(records)} views, {found} landmark sets (plain and refined)")
    for name, old, new, sym, res in zip(names, start, raw, points, residuals):
        print(f"  {name:<25} template vertices {np.round(old, 3)} -> detector's {np.round(new, 3)} (symmetric {np.round(sym, 3)})  "
              f"median reprojection {res:.2f} px")
    if args.check:
        return 0
    provenance = (f"scripts/build_pose_landmarks.py --identities {args.identities} --views {args.views} --seed {args.seed}: "
                  "the released mobilenet0.25 detector's five landmarks (plain and refined) triangulated on faces of the "
                  "ICT-derived face prior rendered at known poses; ICT Face Model, MIT licence (NOTICE.ict)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, points=points.astype(np.float64), residual_px=residuals, provenance=np.array(provenance))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
