#!/usr/bin/env python
"""Mesh and head-pose accuracy on real photos against mediapipe FaceMesh (the independent judge).

For every detected face of at least --min-size px (box's longer side) that mediapipe also finds, summarised
per photo and per face size (24-60 px, at least 60 px):
NME (mean 2-D vertex distance / sqrt(box area)) of (a) the template placed in the box by the mesh path
with zero coefficients (the baseline) and (b) what Detector(mesh=True) outputs now; whether (b) beats (a);
and the error of our five-landmark PnP pose against the pose of the reference points (similarity
Procrustes of the template onto them, see retinaface/mesh_accuracy.py).

mediapipe runs in a throwaway environment, never in the project's:
    python3 -m venv /tmp/mpenv && /tmp/mpenv/bin/pip install mediapipe==0.10.14 "numpy<2" opencv-python-headless
Its answers are cached in runs/mesh_accuracy_reference.json, so reruns do not need it.

Turned heads (yaw beyond 30 degrees or roll beyond 15 by the reference's pose) are reported as a group of
their own. Roll: copies of the photos turned in-plane by each --turn angle (written to runs/turned_photos/,
scored like the photos). Yaw: none of the default photos shows a head turned beyond 30 degrees, so the
photos' faces of at least 60 px are drawn again turned by each --repose yaw (the prior's mean face textured
with the photo, hair and background left in place; written to runs/reposed_photos/) and scored against
mediapipe as a group of their own, outside the photos' figures; and prior faces rendered at yaw 35-60
degrees (retinaface/evaluation/pose_truth.py, identities the pose model was not built from) are scored
against their exact truth (true vertex pixels and angles) instead of mediapipe (--rendered-identities 0
leaves them out). The jaw-and-chin contour and lip vertices' NME are reported next
to the whole mesh's.

Small faces with a full-size reference: the upright photos' faces of at least 60 px are scored again on
copies shrunk by each --shrink factor (written to runs/shrunk_photos/), against mediapipe's answer at full
resolution, beside mediapipe's own answer on the copy (how far the judge itself moves when faces get small).
The 24-60 px group above holds the photos' naturally small faces, farther, blurrier and more often turned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from retinaface.cli.common import float_in

REPO = Path(__file__).resolve().parent.parent
SIZE_GROUPS = ((24.0, 60.0), (60.0, float("inf")))
"""Face sizes reported apart (box's longer side, px): small faces and the rest."""
SHARED_DATA = Path(os.environ.get("RETINAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))


def default_photos() -> list[Path]:
    import matplotlib.cbook

    return [SHARED_DATA / "images" / "crowd.jpg", REPO / "datasets" / "samples" / "astronaut.jpg",
            Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", type=Path, default=default_photos(),
                        help="photos to score (default: crowd.jpg from the shared data, the astronaut sample and "
                             "matplotlib's grace_hopper.jpg, a public-domain U.S. Navy portrait shipped in its wheel)")
    parser.add_argument("--mediapipe-python", default="/tmp/mpenv/bin/python", help="interpreter of the throwaway mediapipe environment")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "mesh_accuracy_reference.json")
    parser.add_argument("--json", type=Path, default=REPO / "runs" / "bench_mesh_accuracy.json")
    parser.add_argument("--min-size", type=float, default=SIZE_GROUPS[0][0], help="smallest face scored, box's longer side in px (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mesh-steps", type=int, default=None, help="fitting steps (default: the Detector's)")
    parser.add_argument("--mesh-init", choices=("pnp", "head"), default=None, help="where the fits start (default: the Detector's)")
    parser.add_argument("--fit", nargs="+", default=[], metavar="KEY=VALUE",
                        help="FitConfig fields to change (retinaface.mesh.photo_fit), e.g. shape_lr_scale=1")
    parser.add_argument("--weights", default="mobilenet0.25", help="detector weights (default: %(default)s)")
    parser.add_argument("--no-refine", action="store_true", help="fit to the detector's first landmarks, without the closer look")
    parser.add_argument("--turn", type=float, nargs="*", default=[-25.0, 25.0],
                        help="in-plane turns (degrees, clockwise) of the photos scored as well (default: -25 25; none: upright only)")
    parser.add_argument("--shrink", type=float_in(0.0, 1.0, low_open=True, high_open=True), nargs="*", default=[0.5],
                        help="factors the upright photos are shrunk by to score their faces of at least 60 px again as small faces "
                             "(default: 0.5; none: skip)")
    parser.add_argument("--repose", type=float, nargs="*", default=[-40.0, 40.0],
                        help="yaws (degrees) the photos' faces of at least 60 px are re-posed by (turned heads built from the "
                             "photos, scored as a group of their own; default: -40 40; none: skip)")
    parser.add_argument("--rendered-identities", type=int, default=2,
                        help="prior identities rendered at yaw 35-60 degrees besides the mean face, scored against exact truth (default: %(default)s; 0: none)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.photos if not p.is_file()]
    if missing:
        print(f"error: photo not found: {', '.join(missing)}", file=sys.stderr)
        return 2

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from retinaface import Detector
    from retinaface.config import ConfigError, apply_overrides
    from retinaface.evaluation.mesh_accuracy import (
        evaluate_photos, evaluate_rendered, evaluate_shrunk, is_turned, summarize, write_reposed_photos, write_turned_photos,
    )

    detector = Detector.from_pretrained(args.weights, device="cpu", mesh=True, mesh_steps=args.mesh_steps, mesh_start=args.mesh_init,
                                        refine_landmarks=False if args.no_refine else None)
    fitter = detector.stages.mesh_fitter
    try:
        fitter.config = apply_overrides(fitter.config, args.fit)
    except ConfigError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    try:
        photos = list(args.photos) + (write_turned_photos(args.photos, args.turn, REPO / "runs" / "turned_photos") if args.turn else [])
        rows, counts = evaluate_photos(detector, photos, python=args.mediapipe_python, cache=args.cache, min_size=args.min_size)
        # drawings made from the photos: a group of their own, outside the photos' figures and counts
        reposed_paths = write_reposed_photos(detector, args.photos, args.repose, REPO / "runs" / "reposed_photos") if args.repose else []
        reposed = evaluate_photos(detector, reposed_paths, python=args.mediapipe_python, cache=args.cache,
                                  min_size=args.min_size, central_only=True)[0] if reposed_paths else []
        shrunk = evaluate_shrunk(detector, args.photos, args.shrink, REPO / "runs" / "shrunk_photos", python=args.mediapipe_python,
                                 cache=args.cache) if args.shrink else []
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rendered = []
    if args.rendered_identities:
        yaws = [sign * y for y in (35.0, 45.0, 60.0) for sign in (1, -1)]
        rendered = evaluate_rendered(detector, [(y, p, 0.0) for y in yaws for p in (-15.0, 0.0, 15.0)],
                                     identities=[None] + [1000 + k for k in range(args.rendered_identities)])
    seconds = time.perf_counter() - start

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    print(f"{'image':<14} {'box px':>6} {'NME tmpl':>8} {'NME mesh':>8} {'ours y/p/r':>18} {'ref y/p/r':>18} {'pose err':>8}")
    for r in rows:
        ours = "-" if r.pose is None else "/".join(f"{a:.0f}" for a in r.pose)
        ref = "/".join(f"{a:.0f}" for a in r.reference_pose)
        print(f"{r.image:<14} {r.size:6.0f} {r.nme_template:8.3f} {r.nme_mesh:8.3f} {ours:>18} {ref:>18} {fmt(r.pose_angle_error, '.1f'):>8}")
    summary = {**summarize(rows), **counts, "min_size": args.min_size, "seconds": round(seconds, 2)}
    per_image = {}
    for name in dict.fromkeys(r.image for r in rows):
        per_image[name] = summarize([r for r in rows if r.image == name])
    per_size = {
        (f"{low:g}-{high:g} px" if high != float("inf") else f">= {low:g} px"): summarize([r for r in rows if low <= r.size < high])
        for low, high in SIZE_GROUPS
    }
    turned = {"upright (photos)": summarize([r for r in rows if not is_turned(r.reference_pose)]),
              "turned (photos)": summarize([r for r in rows if is_turned(r.reference_pose)]),
              "turned (rendered, exact truth)": summarize(rendered)}
    if args.repose:
        turned["turned (photo faces re-posed, yaw " + ", ".join(f"{y:+g}" for y in args.repose) + ")"] = summarize(reposed)
    for r in rendered:
        ours = "-" if r.pose is None else "/".join(f"{a:.0f}" for a in r.pose)
        ref = "/".join(f"{a:.0f}" for a in r.reference_pose)
        print(f"{r.image:<14} {r.size:6.0f} {r.nme_template:8.3f} {r.nme_mesh:8.3f} {ours:>18} {ref:>18} {fmt(r.pose_angle_error, '.1f'):>8}")
    print()
    for name, s in {**per_image, **per_size, **turned, "all": summary}.items():
        if not s["faces"]:
            print(f"{name:<14} faces   0")
            continue
        print(f"{name:<14} faces {s['faces']:3d}  median NME template {fmt(s['median_nme_template'])}  mesh "
              f"{fmt(s['median_nme_mesh'])}  better than template {fmt(s['better_than_template'], '.0%')}  "
              f"median pose error {fmt(s['median_pose_angle_error'], '.1f')} deg (geodesic), "
              f"{fmt(s['median_pose_mean_abs_error'], '.1f')} deg (mean |d yaw, pitch, roll|)  NME jaw {fmt(s['median_nme_jaw'])} "
              f"({fmt(s['median_nme_jaw'] / s['median_nme_mesh'], '.2f')}x), lips {fmt(s['median_nme_lips'])} "
              f"({fmt(s['median_nme_lips'] / s['median_nme_mesh'], '.2f')}x)  mesh pose error {fmt(s['median_mesh_pose_angle_error'], '.1f')} deg"
              + ("" if s["median_nme_oracle"] is None else f"  mean face placed by the answer: NME {fmt(s['median_nme_oracle'])}, jaw "
                 f"{fmt(s['median_nme_oracle_jaw'])} ({fmt(s['median_nme_oracle_jaw'] / s['median_nme_oracle'], '.2f')}x)"))
    shrunk_summary = {}
    for factor in args.shrink or []:
        group = [r for r in shrunk if r.factor == factor and SIZE_GROUPS[0][0] <= r.size < SIZE_GROUPS[0][1]]  # now 24-60 px
        judged = [r.nme_judge for r in group if r.nme_judge is not None]
        shrunk_summary[f"x{factor:g}"] = small = {
            "faces_24_60_px": len(group),
            "median_size": float(np.median([r.size for r in group])) if group else None,
            "median_nme_mesh": float(np.median([r.nme_mesh for r in group])) if group else None,
            "median_nme_full": float(np.median([r.nme_full for r in group])) if group else None,
            "median_nme_judge": float(np.median(judged)) if judged else None,
        }
        print(f"shrunk x{factor:<6g} faces {len(group):3d} of 24-60 px (median {fmt(small['median_size'], '.0f')} px)  median NME mesh "
              f"{fmt(small['median_nme_mesh'])} against mediapipe at full size (the same faces at full size "
              f"{fmt(small['median_nme_full'])}); mediapipe on the copy against itself at full size {fmt(small['median_nme_judge'])}")
    print(f"{counts['detected']} faces detected, {counts['large']} >= {args.min_size:g} px, {counts['no_reference']} without a mediapipe reference")
    print(f"Detector(mesh=True): {counts['detector_seconds']:.2f} s for {len(photos)} photos, "
          f"{counts['detector_seconds'] / max(counts['detected'], 1):.3f} s per detected face ({args.threads} threads)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "per_image": per_image, "per_size": per_size, "turned": turned,
                                     "shrunk": shrunk_summary, "faces": [asdict(r) for r in rows], "rendered": [asdict(r) for r in rendered],
                                     "reposed_faces": [asdict(r) for r in reposed],
                                     "shrunk_faces": [asdict(r) for r in shrunk]}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
