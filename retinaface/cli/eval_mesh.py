"""Measure the mesh coefficients head against the true render parameters of a synthetic split.

  python scripts/eval_mesh_head.py runs/synthetic-train/final.safetensors runs/synthetic/val
  python scripts/eval_mesh_head.py mobilenet0.25 runs/synthetic/val --at-true-boxes --json mesh.json

Detections (score >= --score-threshold) are matched one-to-one to true faces by IoU; for each matched face
it reports the head rotation error and light direction error (degrees), the pixel L1 of the predicted
render against the image crop and, on splits rendered with the prior-trained decoder (shape truth in
render_params.json), the vertex error of the head's decoded shape against the true shape in % of the face
height, each next to the all-zero coefficients (for the shape: the mean face). --at-true-boxes reads the
head at each true face's box instead (the head alone, whatever the detector finds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import common


def main(argv: list[str] | None = None) -> int:
    parser = common.ArgumentParser(
        prog="retinaface eval-mesh", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("weights", help="released weights name, .safetensors file or training checkpoint")
    parser.add_argument("split", type=Path, help="synthetic split folder holding images/ and render_params.json")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--at-true-boxes", action="store_true", help="read the head at the true faces' boxes (the per-anchor head at their best anchors)")
    parser.add_argument("--test-offset", type=common.float_in(0.0, 0.5, high_open=True), default=None, metavar="F",
                        help="read the RoI mesh head four times per face, at copies of the box moved by F of its side right, left, down "
                             "and up, and average (0 <= F < 0.5; 0: once, at the box; default: the weights' own mesh_roi_test_offset)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if not (args.split / "render_params.json").is_file():
        print(f"error: {args.split / 'render_params.json'} not found; give a split written by make_synthetic.py", file=sys.stderr)
        return 2

    from ..outputs.atomic import atomic_write
    from ..evaluation.mesh_eval import evaluate_at_boxes, evaluate_detections, format_summary
    from ..model.weights import load_model

    try:
        model = load_model(args.weights, device=args.device, mesh_roi_test_offset=args.test_offset)
        if args.at_true_boxes:
            errors = evaluate_at_boxes(model, args.split, max_images=args.max_images)
        else:
            errors = evaluate_detections(
                model, args.split, score_threshold=args.score_threshold, iou_threshold=args.iou_threshold, max_images=args.max_images
            )
    except common.REPORTED_ERRORS as exc:
        return common.report_error(exc)
    summary = errors.summary()
    print(format_summary(summary))
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
