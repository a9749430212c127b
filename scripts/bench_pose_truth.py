#!/usr/bin/env python
"""Head pose against exact truth: prior faces rendered at known poses, and photos turned in-plane by known angles.

  python scripts/bench_pose_truth.py                       # the default grid, plain detect.py and --mesh landmarks
  python scripts/bench_pose_truth.py --identities 4 --sizes 80 200

Rendered faces (retinaface/evaluation/pose_truth.py): the prior's mean face and identities drawn from its 60
modes (seeds 1000 and up; scripts/build_pose_landmarks.py experiments with seeds 0 and up), with
the template's colours, at every yaw x pitch x roll of the grid, on the optical axis of the pinhole camera the
pose assumes; the released detector (mobilenet0.25) finds the face and its pose is compared with the angles
the face was turned by. Photos: each face of at least --photo-min-size px of the given photos (default: the
shared crowd.jpg and the astronaut sample) in a window centred on it, turned clockwise by each --roll angle:
the roll must change by that angle, yaw and pitch not at all. Photo faces re-posed (--repose): the same
windows, each face drawn again as the prior's mean face textured with the photo, turned by known yaws and
pitches (retinaface.evaluation.pose_truth.repose_photo_face); the pose must change by the turn. With --judge
(a mediapipe interpreter, e.g. /tmp/mpenv/bin/python) mediapipe FaceMesh's pose is scored on the same
drawings, to show how much of each turn the pictures carry to an independent face mesh.

Two landmark sources, the ones the pose is solved from: "plain" (detect.py without --mesh: the detector's
landmarks, looked at again upright for faces rolled beyond 10 degrees) and "mesh" (detect.py --mesh: the
refined landmarks; the mesh fit does not move them, so the fit is skipped here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RETINAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yaw", type=_floats, default=[0, 15, 30, 45, 60], help="yaw angles, comma-separated (default: 0,15,30,45,60)")
    parser.add_argument("--pitch", type=_floats, default=[-30, -15, 0, 15, 30], help="pitch angles (default: -30,-15,0,15,30)")
    parser.add_argument("--roll", type=_floats, default=[-30, 0, 30], help="roll angles (default: -30,0,30); also the photos' turns")
    parser.add_argument("--identities", type=int, default=2, help="prior identities besides the mean face (default: %(default)s)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[160.0], help="rendered face widths in px (default: 160)")
    parser.add_argument("--modes", nargs="+", choices=("plain", "mesh"), default=["plain", "mesh"])
    parser.add_argument("--photos", type=Path, nargs="*", default=None,
                        help="photos to turn in-plane (default: the shared crowd.jpg and datasets/samples/astronaut.jpg)")
    parser.add_argument("--photo-min-size", type=float, default=40.0, help="smallest photo face turned, box's longer side px (default: %(default)s)")
    parser.add_argument("--repose", type=_floats, default=[-30, -20, -10, 10, 20, 30],
                        help="re-pose the photo faces by these yaws (at pitch 0) and pitches (at yaw 0), plus yaw and "
                             "pitch +-20 together; empty to skip (default: -30,-20,-10,10,20,30)")
    parser.add_argument("--judge", default=None, help="python of a throwaway environment with mediapipe 0.10.14: "
                        "also score mediapipe's pose on the re-posed faces")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=REPO / "runs" / "bench_pose_truth.json")
    args = parser.parse_args(argv)
    photos = args.photos if args.photos is not None else [p for p in (SHARED_DATA / "images" / "crowd.jpg", REPO / "datasets" / "samples" / "astronaut.jpg") if p.is_file()]

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from retinaface import Detector
    from retinaface.evaluation.pose_truth import (AXES, judge_drawings, photo_roll_rows, pose_grid, rendered_rows, reposed_rows,
                                                  summarize)
    from retinaface.media.images import read_image

    poses = pose_grid(args.yaw, args.pitch, args.roll)
    identities = [None] + [1000 + k for k in range(args.identities)]
    lights = ((0.3, 0.4, 1.0), (-0.4, 0.2, 1.0), (0.0, -0.3, 1.0))
    report: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "modes": {}}

    def line(name: str, s: dict) -> str:
        if not s["scored"]:
            return f"  {name:<30} faces {s['faces']:4d}  scored 0"
        per_axis = "  ".join(f"{a} {s[f'median_{a}']:5.2f} ({s[f'bias_{a}']:+5.1f})" for a in AXES)
        return f"  {name:<30} faces {s['faces']:4d}  scored {s['scored']:4d}  median |error| (median signed) deg: {per_axis}  geodesic {s['median_geodesic']:5.2f}"

    turns = [(a, 0.0, 0.0) for a in args.repose] + [(0.0, a, 0.0) for a in args.repose]
    turns += [(y, p, 0.0) for y in (-20.0, 20.0) for p in (-20.0, 20.0)] if args.repose else []
    drawings: list = []  # the first mode's re-posed faces, for --judge

    def by_turn(rows: list) -> dict[str, list]:
        groups = {"photos re-posed: all": rows,
                  "photos re-posed: yaw only": [r for r in rows if r.turn[0] != 0 and r.turn[1:] == (0, 0)],
                  "photos re-posed: pitch only": [r for r in rows if r.turn[1] != 0 and r.turn[0] == r.turn[2] == 0]}
        for turn in dict.fromkeys(r.turn for r in rows):
            groups["photos re-posed: " + "/".join(f"{a:+g}" for a in turn)] = [r for r in rows if r.turn == turn]
        return groups

    for mode in args.modes:
        detector = Detector.from_pretrained("mobilenet0.25", device="cpu", refine_landmarks=True if mode == "mesh" else None)
        start = time.perf_counter()
        rows = rendered_rows(detector, poses, identities=identities, sizes=args.sizes, lights=lights)
        photo_rows, repose_rows = [], []
        for path in photos:
            image = read_image(path)
            boxes = np.array([f.box for f in detector(image) if max(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= args.photo_min_size]).reshape(-1, 4)
            photo_rows += photo_roll_rows(detector, image, boxes, [a for a in args.roll if a != 0] + [-15.0, 15.0], name=path.name)
            if turns:
                repose_rows += reposed_rows(detector, image, boxes, turns, name=path.name,
                                            on_drawing=drawings.append if mode == args.modes[0] and args.judge else None)
        seconds = time.perf_counter() - start
        print(f"{mode} ({'detect.py' if mode == 'plain' else 'detect.py --mesh: refined landmarks'}), {seconds:.0f} s")
        groups = {"rendered: all": rows}
        for axis_index, axis in enumerate(AXES):
            for value in sorted({r.truth[axis_index] for r in rows}):
                groups[f"rendered: {axis} {value:+g}"] = [r for r in rows if r.truth[axis_index] == value]
        groups["photos turned: all"] = photo_rows
        groups.update(by_turn(repose_rows) if repose_rows else {})
        summaries = {name: summarize(group) for name, group in groups.items()}
        for name, s in summaries.items():
            print(line(name, s))
        report["modes"][mode] = {"summary": summaries, "seconds": round(seconds, 1),
                                 "rows": [{"label": r.label, "truth": r.truth, "estimate": r.estimate, "size": r.size} for r in rows + photo_rows + repose_rows]}
    if drawings:
        with tempfile.TemporaryDirectory() as scratch:
            judge_rows = judge_drawings(drawings, python=args.judge, folder=Path(scratch))
        summaries = {name: summarize(group) for name, group in by_turn(judge_rows).items()}
        print(f"mediapipe FaceMesh on the re-posed faces of {args.modes[0]} (its own unturned estimate, turned, is the truth)")
        for name, s in summaries.items():
            print(line(name, s))
        report["judge"] = {"summary": summaries}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
