"""Hallucinated faces: what the detector has learned, by gradient ascent on the pixels of noise.

  retinaface hallucinate                                  # the face score, 8 images, into runs/hallucinate
  retinaface hallucinate --runs 20 --output faces/
  retinaface hallucinate --target context.1:5 --target backbone.2:17 --minimize
  retinaface hallucinate --mesh                           # also draw the face (and its mesh) found in each image

TARGET is 'score': the face probability of the anchor at the centre location of pyramid level --level (slot
--anchor), or LAYER:CHANNEL: one channel of a feature map at its centre location. LAYER is backbone.L or
fpn.L (the L-th output of the backbone / feature pyramid, L = 0, 1, 2 fine to coarse), context.L (the SSH
context module of level L), or any module name of the model whose output is one feature map (backbone.stage2,
context.1.branch5, ...); an unknown layer's error lists the levels' channel counts.

Each step ascends (--minimize: descends) the target on a randomly rotated (--rotation), mirrored (--no-flip
to stop) and shifted (--shift) view of each image; pixels stay within 0-255. The output folder holds one
PNG per image (<target>/<target>-NN.png), a contact sheet per target (<target>-sheet.png; with --mesh also
<target>-mesh-sheet.png), with several targets overview.png (their sheets one below the other; with --mesh
also overview-mesh.png), and hallucinations.json with every image's target value before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import common
from ..evaluation.hallucinate import HallucinationConfig as Defaults


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(
        prog="retinaface hallucinate", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", action="append", metavar="TARGET", help="'score' or LAYER:CHANNEL; repeat for several (default: score)")
    parser.add_argument("--level", type=int, default=Defaults.level, help="pyramid level of the score target (default: %(default)s)")
    parser.add_argument("--anchor", type=int, default=Defaults.anchor, help="anchor slot at the score's location, 0 = smallest (default: %(default)s)")
    parser.add_argument("--minimize", action="store_true", help="descend instead of ascend the target")
    parser.add_argument("--runs", type=common.int_at_least(1), default=Defaults.runs, help="images per target, seeds --seed, --seed+1, ... (default: %(default)s)")
    parser.add_argument("--steps", type=common.int_at_least(0), default=Defaults.steps, help="gradient steps per image (default: %(default)s)")
    parser.add_argument("--size", type=common.int_at_least(16, 2048), default=Defaults.size, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=common.int_at_least(0), default=Defaults.seed, help="seed of the first image (default: %(default)s)")
    parser.add_argument("--learning-rate", type=common.float_in(0.0, 255.0, low_open=True), default=Defaults.learning_rate, help="RMS pixel change per step, grey levels (default: %(default)s)")
    parser.add_argument("--noise", type=common.float_in(0.0, 128.0), default=Defaults.noise_std, help="standard deviation of the starting noise, grey levels (default: %(default)s)")
    parser.add_argument("--rotation", type=common.float_in(0.0, 180.0), default=Defaults.max_rotation_deg, help="random rotation of each step's view within +-this many degrees (default: %(default)s)")
    parser.add_argument("--shift", type=common.int_at_least(0, 64), default=Defaults.max_shift, help="random shift of each step's view within +-this many pixels (default: %(default)s)")
    parser.add_argument("--no-flip", action="store_true", help="no random left-right mirroring of the views")
    parser.add_argument("--batch-size", type=common.int_at_least(1), default=Defaults.batch_size, help="images optimised together (default: %(default)s)")
    parser.add_argument("--columns", type=common.int_at_least(1), default=Defaults.columns, help="images per row of the contact sheets (default: about square)")
    parser.add_argument("--threads", type=common.int_at_least(0, 1024), default=Defaults.threads, help="PyTorch CPU threads; 0 = one per core (default: %(default)s: faster on a busy machine)")
    parser.add_argument("--mesh", action="store_true", help="detect the faces in each image, fit their meshes and draw them (needs pytorch3d)")
    parser.add_argument("--output", type=Path, default=Path("runs/hallucinate"), help="output folder (default: %(default)s)")
    parser.add_argument("--weights", default="mobilenet0.25", help="released weights name or file (default: %(default)s)")
    parser.add_argument("--device", type=common.device, default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def config_of(args: argparse.Namespace) -> Defaults:
    """The :class:`~retinaface.evaluation.hallucinate.HallucinationConfig` the options describe."""
    return Defaults(
        size=args.size, steps=args.steps, runs=args.runs, seed=args.seed, level=args.level, anchor=args.anchor,
        minimize=args.minimize, learning_rate=args.learning_rate, noise_std=args.noise, max_rotation_deg=args.rotation,
        flip=not args.no_flip, max_shift=args.shift, batch_size=args.batch_size, threads=args.threads or None,
        columns=args.columns,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with common.command_session() as interruption:
        return _hallucinate(args, interruption)


def _hallucinate(args: argparse.Namespace, interruption) -> int:
    from ..utils.threads import torch_threads

    try:
        with torch_threads(args.threads or None):  # the mesh fits of --mesh too
            return _run(args)
    except common.REPORTED_ERRORS as exc:  # bad targets, weights, outputs: one error line
        return common.report_error(exc)
    except ImportError as exc:  # --mesh without pytorch3d / torch-geometric
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: the targets finished so far are in {args.output}", file=sys.stderr)
        return interruption.exit_code


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.hallucinate import (
        check_target, config_record, hallucinate, parse_target, progress_bar, save_results, stack_sheets,
    )
    from ..inference.detector import resolve_device
    from ..model.weights import load_model
    from ..outputs.atomic import atomic_write, check_writable, write_image

    started = time.perf_counter()
    config = config_of(args)
    device = resolve_device(args.device)
    model = load_model(args.weights, device=device, mesh=False).fuse_for_inference()
    targets = [parse_target(text, level=config.level, anchor=config.anchor) for text in (args.target or ["score"])]
    for target in targets:  # every target checked before the long work
        check_target(model, target, config.size)
    json_path = check_writable(args.output / "hallucinations.json")
    detector = None
    if args.mesh:
        from .. import Detector

        detector = Detector.from_pretrained(args.weights, mesh=True, device=device)

    report = {
        "weights": args.weights, "device": str(device), "threads": torch.get_num_threads(),
        "config": config_record(config), "targets": [],
    }
    batches = -(-config.runs // config.batch_size)
    sheets: list[list] = []

    def write_report() -> None:
        report["seconds"] = time.perf_counter() - started
        atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))

    with progress_bar(len(targets) * batches * config.steps, enabled=not args.no_progress) as bar:
        for target in targets:
            bar.set_postfix_str(target.name)
            result = hallucinate(model, target, config, on_step=lambda: bar.update(1))
            saved = save_results(result, args.output, detector=detector, columns=config.columns)
            report["targets"].append(saved.record)
            sheets.append(saved.sheets)
            write_report()  # after each target, so that an interrupted run keeps what it finished
            bar.write(_summary_line(saved.record, args.output))
    if len(targets) > 1:  # every target's sheet, one below the other
        report["overviews"] = ["overview.png", "overview-mesh.png"][:len(sheets[0])]
        for i, name in enumerate(report["overviews"]):
            write_image(args.output / name, stack_sheets([kept[i] for kept in sheets]))
        write_report()
    print(f"{sum(len(t['images']) for t in report['targets'])} images in {report['seconds']:.1f} s on {device} "
          f"({torch.get_num_threads()} threads) -> {json_path}")
    return 0


def _summary_line(record: dict, folder: Path) -> str:
    """``score (face probability, max): before median 0.0012 -> after min 0.998 median 1 -> sheet``."""
    import numpy as np

    before = np.median([image["before"] for image in record["images"]])
    after = [image["after"] for image in record["images"]]
    found = ""
    if "faces" in record["images"][0]:
        found = f", a face found in {sum(1 for image in record['images'] if image['faces'])} of {len(after)}"
    return (
        f"{record['target']} ({record['value']}, {'min' if record['minimize'] else 'max'}): before median {before:.3g} -> "
        f"after min {min(after):.3g} median {np.median(after):.3g} max {max(after):.3g}{found}; {folder / record['sheets'][0]}"
    )


if __name__ == "__main__":
    sys.exit(main())
