"""WIDER FACE val benchmark with the official protocol (AP easy / medium / hard).

Score an existing prediction folder (any detector, official format: <pred>/<event>/<image>.txt):
  python scripts/benchmark.py --predictions PRED_DIR --gt-dir wider_face_split/ [--json ap.json]

Run our detector over WIDER_val/images/<event>/*.jpg, write predictions, score them and plot PR curves:
  python scripts/benchmark.py --wider-root WIDER_val --gt-dir wider_face_split/ [--scale mxnet --flip]

Several processes, each on its own device, split the images (the prediction folder and the APs equal a
single process's):
  torchrun --nproc_per_node=N scripts/benchmark.py --wider-root WIDER_val --gt-dir wider_face_split/

--gt-dir holds wider_face_val.mat and wider_{easy,medium,hard}_val.mat from the official eval tools.
Prediction runs are resumable: images whose prediction file exists are skipped (--overwrite redoes them);
the folder's settings.json records the detector settings, and a folder made with other settings is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import common
from ..config import InferenceConfig
from ..evaluation.wider_benchmark import WIDER_SCORE_THRESHOLD


def parse_args(argv):
    parser = common.ArgumentParser(
        prog="retinaface benchmark", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gt-dir", type=Path, required=True, help="folder with the official WIDER val .mat files")
    parser.add_argument("--predictions", type=Path, help="prediction folder to score, or to write with --wider-root (default: runs/wider_val/<weights>-<scale>)")
    parser.add_argument("--wider-root", type=Path, help="WIDER_val folder (with images/); runs the detector first")
    parser.add_argument("--json", type=Path, help="write the APs (and speed, with --wider-root) to this JSON file")
    parser.add_argument("--plot", type=Path, help="PR-curve PNG (default with --wider-root: <predictions>/../pr_curves.png)")
    parser.add_argument("--weights", default="mobilenet0.25", help="released weights name or file (default: %(default)s)")
    parser.add_argument("--scale", choices=("original", "mxnet"), default="original", help="original size, or short side 1600 / long side <= 2150 (default: %(default)s)")
    parser.add_argument("--scales", default="1", help="comma-separated multi-scale factors on top of --scale, e.g. 0.5,1,1.5 (default: %(default)s)")
    parser.add_argument("--flip", action="store_true", help="also detect on the mirrored image and merge")
    parser.add_argument("--score-threshold", type=common.float_in(0.0, 1.0), default=WIDER_SCORE_THRESHOLD, help="keep detections above this score (default: %(default)s)")
    parser.add_argument("--nms-threshold", type=common.float_in(0.0, 1.0, low_open=True), default=InferenceConfig.nms_threshold, help="(default: %(default)s)")
    parser.add_argument("--device", type=common.device, default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="redo images whose prediction file already exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.predictions is None and args.wider_root is None:
        parser.error("give --predictions (score a folder) and/or --wider-root (run the detector)")
    try:
        args.scales = tuple(float(v) for v in args.scales.split(","))
        assert all(0 < v <= 8 for v in args.scales)
    except (ValueError, AssertionError):
        parser.error(f"--scales must be numbers in (0, 8] separated by commas, got {args.scales!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with common.command_session() as interruption:
        return _benchmark(args, interruption)


def _predict_distributed(args, gt) -> tuple[object, object, object] | int:
    """Run the detector over this process's share of WIDER val (all of it without torchrun).

    Returns ``(run, detector, shard)`` with, on rank 0, every process's bookkeeping combined; on the other
    ranks the exit code once they have reported their share."""
    from .. import Detector
    from ..utils.distributed import current_shard, gather_to_main, shard_device, start_process_group, wait_for_all
    from ..inference.tta import TestTimeAugmentation
    from ..evaluation.wider_benchmark import PredictionRun, claim_prediction_folder, predict_wider

    shard = current_shard()
    device = shard_device(shard, str(args.device))
    start_process_group(shard, device)
    # boxes are all WIDER scores: no second look at rolled faces (the protocol keeps hundreds of low-score boxes)
    detector = Detector.from_pretrained(args.weights, device=device, score_threshold=args.score_threshold, nms_threshold=args.nms_threshold,
                                        refine_landmarks=False)
    settings = {
        "weights": str(Path(args.weights).resolve()) if Path(args.weights).is_file() else args.weights,
        "scale": args.scale, "scales": list(args.scales), "flip": args.flip,
        "score_threshold": args.score_threshold, "nms_threshold": args.nms_threshold,
    }
    # Every process checks the folder (so that all of them stop on a foreign one); rank 0 records the settings
    # before any process writes a prediction.
    claim_prediction_folder(args.predictions, settings, overwrite=args.overwrite, write=shard.is_main)
    wait_for_all(shard)
    tta = TestTimeAugmentation(detector, scale_mode=args.scale, scale_factors=args.scales, flip=args.flip)
    run = predict_wider(tta, args.wider_root, gt, args.predictions, overwrite=args.overwrite, progress=not args.no_progress, shard=shard)
    if run.interrupted:  # the other processes were interrupted too (torchrun forwards the signal): no gathering
        return run, detector, shard
    runs = gather_to_main(shard, run)
    if not shard.is_main:
        print(f"rank {shard.rank}: predictions: {run.written} written, {run.reused} reused on {detector.device}")
        return 0
    return PredictionRun.combined(runs), detector, shard


def _benchmark(args, interruption) -> int:
    from .. import InputError
    from ..utils.distributed import current_shard, end_process_group
    from ..outputs.guards import locked_outputs, refuse_overwriting_inputs
    from ..outputs.atomic import atomic_write, check_writable
    from ..evaluation.wider_benchmark import plot_pr_curves
    from ..evaluation.wider_eval import SETTINGS, evaluate_folder, load_ground_truth

    report: dict = {}
    shard = None
    try:
        shard = current_shard()
        if not shard.is_main and args.wider_root is None:
            return 0  # scoring a folder is one process's job
        gt = load_ground_truth(args.gt_dir)
        if args.wider_root is not None:
            tag = f"{Path(str(args.weights)).stem}-{args.scale}" + ("-flip" if args.flip else "") + (
                "-ms" + "_".join(f"{s:g}" for s in args.scales) if args.scales != (1.0,) else ""
            )
            if args.predictions is None:
                args.predictions = Path("runs") / "wider_val" / tag / "predictions"
            if args.plot is None:
                args.plot = args.predictions.parent / "pr_curves.png"
        # every output checked before the (long) work, so no result is lost at the end
        inputs = [args.gt_dir / name for name in ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat", "wider_hard_val.mat")]
        if Path(args.weights).is_file():
            inputs.append(Path(args.weights))
        if args.predictions.exists() and not args.predictions.is_dir():
            raise InputError(f"--predictions {args.predictions} is a file, not a folder")
        if args.wider_root is None and args.predictions.is_dir():
            inputs += [p for p in args.predictions.rglob("*.txt")]
        refuse_overwriting_inputs([("--json", args.json), ("--plot", args.plot)], inputs)
        for path in (args.json, args.plot):
            if path is not None:
                check_writable(path)
        if args.wider_root is not None:
            check_writable(args.predictions / ".probe")
        # One lock per run: under torchrun only rank 0 holds them; the others write their own images' files.
        locks = (args.json, args.plot, args.predictions if args.wider_root is not None else None) if shard.is_main else ()
        with locked_outputs(*locks):
            if args.wider_root is not None:
                predicted = _predict_distributed(args, gt)
                if isinstance(predicted, int):
                    return predicted
                run, detector, _ = predicted
                speed = run.speed_summary()
                report["speed"] = {**speed, "device": str(detector.device), "scale": args.scale, "scales": list(args.scales), "flip": args.flip}
                report["prediction_run"] = {"written": run.written, "reused": run.reused, "missing": len(run.missing), "unreadable": len(run.unreadable)}
                print(
                    f"predictions: {run.written} written, {run.reused} reused, {len(run.missing)} images missing, "
                    f"{len(run.unreadable)} unreadable -> {args.predictions}"
                )
                if run.milliseconds:
                    print(f"speed: {speed['ms_median']:.1f} ms/image median, {speed['ms_mean']:.1f} mean on {detector.device} ({tag}, detection only)")
                if run.interrupted:
                    print("interrupted: the predictions written are kept; rerun the same command to continue", file=sys.stderr)
                    return interruption.exit_code
            result = evaluate_folder(args.predictions, args.gt_dir)

            if result.missing_predictions:
                print(f"warning: {len(result.missing_predictions)} of {result.images} images have no prediction file (scored as no detections)", file=sys.stderr)
            if result.nonfinite_predictions:
                print(
                    f"warning: dropped {len(result.nonfinite_predictions)} prediction rows holding NaN or infinity "
                    f"(first: {result.nonfinite_predictions[0]})", file=sys.stderr,
                )
            print(f"{'setting':<8} {'AP':>8} {'faces':>7}")
            for s in SETTINGS:
                print(f"{s:<8} {result.ap[s]:>8.4f} {result.faces[s]:>7}")
            report.update(result.to_dict())
            if args.json is not None:
                atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
                print(f"wrote {args.json}")
            if args.plot is not None:
                plot_pr_curves(result, args.plot)
                print(f"wrote {args.plot}")
    except common.REPORTED_ERRORS as exc:
        return common.report_error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return interruption.exit_code
    finally:
        if shard is not None:
            end_process_group(shard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
