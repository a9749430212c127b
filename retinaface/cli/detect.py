"""Detect faces (box, score, five landmarks) in an image, a folder of images, a video or a camera.

Writes an annotated copy and a JSON Lines file with one record per image or frame:
  {"source", "frame", "width", "height", "faces": [{"box": [x1, y1, x2, y2], "score", "landmarks": [[x, y] x 5],
                                                   "roll", "pose": {"yaw", "pitch", "roll"} (degrees) or null}]}
Poses: yaw > 0 face turned to the image's right, pitch > 0 looking up, roll > 0 clockwise in the image;
null (with "pose_reason") for faces too small, cut off or degenerate. "roll" is the eye line's angle in the
image (any angle). Videos add "track_id" per face; --crops adds a "crop" with its transform.
With --mesh the landmarks are refined by a second look at each face (an enlarged crop, and for stills its
mirror image too; --refine-landmarks alone does just that), then each face's 3D mesh is fitted (from a start, --mesh-init: the
detector's own mesh or the mean face posed by PnP of the five landmarks; then --mesh-steps steps of analysis by synthesis against the photo with a face-shape prior) and each face also gets "mesh_coefficients"
(144), "mesh_vertices" ([x, y, depth] x 468, image pixels, mediapipe face-mesh vertex order) and
"mesh_residual" ({"pixel_l1", "landmark_px"}: how well the fit explains the photo; null when not fitted).

Examples:
  python scripts/detect.py photo.jpg
  python scripts/detect.py video.mp4 --output annotated.mp4 --json faces.jsonl
  python scripts/detect.py photos/ --no-draw --json faces.jsonl
  python scripts/detect.py photo.jpg --mesh                # overlay a 3D face mesh fitted to each face
  python scripts/detect.py 0            # webcam 0, Ctrl+C to stop
  python scripts/detect.py scan.jpg --rotations            # faces turned 90/180/270 degrees too
  python scripts/detect.py group.jpg --scales 0.5,1,2 --flip   # image pyramid for small faces
  python scripts/detect.py photo.jpg --crops crops/ --crop-style arcface112
  python scripts/detect.py clip.mp4 --blur --keep-largest   # anonymise all but the presenter, audio kept
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import common
from ..config import DEFAULT_MESH_START, MESH_STARTS, InferenceConfig, RefineConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.ArgumentParser(
        prog="retinaface detect", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="image file, folder of images, video file, or camera index (e.g. 0)")
    parser.add_argument("--output", "-o", type=Path, help="annotated image/video/folder (default: ./<name>_faces.<ext>); never one of the inputs")
    parser.add_argument("--json", type=Path, help="JSON Lines output (default: next to --output, .jsonl)")
    parser.add_argument("--weights", default="mobilenet0.25", help="released weights name or .safetensors/.pt path (default: %(default)s)")
    parser.add_argument("--score-threshold", type=common.float_in(0.0, 1.0), default=InferenceConfig.score_threshold, help="minimum face score (default: %(default)s)")
    parser.add_argument("--nms-threshold", type=common.float_in(0.0, 1.0, low_open=True), default=InferenceConfig.nms_threshold, help="NMS IoU threshold (default: %(default)s)")
    parser.add_argument("--max-size", type=common.int_at_least(0, 100_000), default=None, help="downscale so the long side is at most this many pixels for detection; results stay in original pixels; 0 = original size (default: 640 for videos and cameras, original size for images)")
    parser.add_argument("--device", type=common.device, default="auto", help="cpu, cuda, cuda:1, ... (default: auto = CUDA if available)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                        help="engine of the network: onnxruntime runs on the CPU (meshes are fitted in PyTorch either way); "
                             "auto = onnxruntime for videos, cameras and folders on the CPU (and for .onnx weights), PyTorch otherwise (default: %(default)s)")
    parser.add_argument("--batch-size", type=common.int_at_least(1, 1024), default=1, help="frames/images per forward pass (default: %(default)s)")
    parser.add_argument("--mesh", action="store_true", help="fit a 3D face mesh to each face: overlay the meshes and add mesh coefficients, vertices and fit residuals to the JSON")
    parser.add_argument("--refine-landmarks", action=argparse.BooleanOptionalAction, default=None,
                        help="look at each face again in an enlarged crop turned upright (for stills also its mirror image) and average the landmarks: "
                             "steadier landmarks and head poses for small faces, at the cost of one more network pass per image "
                             f"(default: on with --mesh; otherwise only faces rolled more than {RefineConfig.first_look_rolls[0]:g} degrees "
                             "are looked at again, upright)")
    parser.add_argument("--mesh-steps", type=common.int_at_least(0, 10_000), default=None, help="optimisation steps per mesh fit (default: 20; 0 = the start below, unfitted)")
    parser.add_argument("--mesh-init", choices=MESH_STARTS, default=None,
                        help="where each face's mesh fit starts: 'head', the detector's own mesh (shape, pose and light from its mesh head); "
                             f"'pnp', the mean face posed by PnP of the five landmarks (default: {DEFAULT_MESH_START}). "
                             "A video's tracked faces start from their previous frame's fit either way")
    views = parser.add_argument_group("views")
    views.add_argument("--rotations", action="store_true", help="also detect in the image turned 90, 180 and 270 degrees and merge (4x the time)")
    views.add_argument("--scales", type=_floats, default=(1.0,), help="image pyramid: comma-separated resize factors, e.g. 0.5,1,2 (default: 1)")
    views.add_argument("--flip", action="store_true", help="also detect in the mirrored image and merge")
    views.add_argument("--max-pixels", type=common.float_in(0.0, 100_000.0), default=36.0, help="megapixels the network sees at most per view; larger images are downscaled with a warning; 0 = no bound (default: %(default)s, a 12000x8000 photo then peaks at 2.8 GB instead of 5.3 GB)")
    faces = parser.add_argument_group("face workflows")
    faces.add_argument("--track", action="store_true", help="videos/animations: add a track_id per face (implied by --smooth, --blur, --pixelate)")
    faces.add_argument("--smooth", action="store_true", help="videos/animations: smooth each track's box and landmarks (One-Euro filter), before meshes and poses follow them")
    faces.add_argument("--crops", type=Path, metavar="DIR", help="write each face's aligned crop into DIR; the JSON records its path and transform")
    faces.add_argument("--mesh-export", type=Path, metavar="DIR", help="with --mesh: write each face's fitted mesh into DIR as a PLY file with vertex colours (centimetres, head-centred, y up, z towards the viewer; the JSON records its path)")
    faces.add_argument("--crop-style", choices=("arcface112", "ffhq"), default="arcface112", help="crop: ArcFace 112x112 template or FFHQ-style 512x512 (default: %(default)s)")
    hide = faces.add_mutually_exclusive_group()
    hide.add_argument("--blur", action="store_true", help="anonymise: blur every face (the output shows no boxes)")
    hide.add_argument("--pixelate", action="store_true", help="anonymise: pixelate every face")
    faces.add_argument("--anonymize-strength", type=common.float_in(0.0, 100.0, low_open=True), default=1.0, help="blur sigma / block size as a multiple of a sixth of the face size (default: %(default)s)")
    faces.add_argument("--keep-largest", action="store_true", help="leave the largest face in each frame unanonymised")
    faces.add_argument("--keep-track-ids", type=_ints, default=(), help="leave these track ids unanonymised, e.g. 0,3 (see track_id in a first run's JSON)")
    faces.add_argument("--carry-frames", type=common.int_at_least(0, 10_000), default=2, help="keep covering a tracked face missed for up to this many frames (default: %(default)s)")
    folders = parser.add_argument_group("folders (several processes: torchrun --nproc_per_node=N scripts/detect.py FOLDER ...)")
    folders.add_argument("--decode-workers", type=common.int_at_least(0, 64), default=2, help="threads decoding images ahead of the network; 0 = one after the other (default: %(default)s)")
    folders.add_argument("--resume", action="store_true", help="continue an interrupted folder run: keep its records (<json>.parts/; refused if they were made with other options) and detect only the missing images")
    parser.add_argument("--no-draw", action="store_true", help="write only the JSON Lines file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.mesh_export is not None and not args.mesh:
        parser.error("--mesh-export needs --mesh")
    if args.mesh_steps is not None and not args.mesh:
        parser.error("--mesh-steps needs --mesh")
    if args.mesh_init is not None and not args.mesh:
        parser.error("--mesh-init needs --mesh")
    if any(not f > 0 for f in args.scales):
        parser.error("--scales must be positive numbers")
    if (args.keep_largest or args.keep_track_ids) and not (args.blur or args.pixelate):
        parser.error("--keep-largest and --keep-track-ids need --blur or --pixelate")
    return args


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


UNRECORDED_OPTIONS = {"input", "output", "json", "no_draw", "no_progress", "device", "batch_size", "decode_workers", "resume"}
"""Options that change no record (where things go, how fast, whether to resume); every other option does."""


def record_settings(args: argparse.Namespace, max_size: int) -> dict[str, object]:
    """The options that made the records, ``{"--option": value}``, recorded with resumable part files: a
    ``--resume`` continues only with the same ones. Weights files by their full path, ``--max-size`` as used."""
    settings = {f"--{name.replace('_', '-')}": value for name, value in vars(args).items() if name not in UNRECORDED_OPTIONS}
    weights = Path(args.weights)
    settings.update({"--weights": str(weights.resolve()) if weights.is_file() else args.weights, "--max-size": max_size})
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with common.command_session() as interruption:
        return _detect(args, interruption)


def _detect(args: argparse.Namespace, interruption) -> int:
    from .. import Detector
    from ..inference.detector import choose_backend
    from ..runner.pipeline import VIDEO_MAX_SIZE, DetectOptions, classify_source, detect
    from ..utils.distributed import current_shard, end_process_group, shard_device, start_process_group
    from ..inference.views import MultiViewDetector
    from ..config import REFINE_PRESETS, SmoothConfig
    from ..faces.workflow import FaceWorkflow, WorkflowConfig

    try:
        shard = current_shard()
        device = shard_device(shard, args.device)
        start_process_group(shard, device)
        kind = classify_source(args.input)
        moving = kind in ("video", "camera")
        max_size = args.max_size
        if max_size is None:
            max_size = VIDEO_MAX_SIZE if moving else 0
        backend = choose_backend(args.backend, weights=args.weights, device=device, long_run=moving or kind == "folder")
        detector = Detector.from_pretrained(
            args.weights, device=device, score_threshold=args.score_threshold,
            nms_threshold=args.nms_threshold, max_size=max_size or None, backend=backend, mesh=args.mesh,
            mesh_steps=args.mesh_steps, mesh_start=args.mesh_init, refine_landmarks=args.refine_landmarks,
            refine=REFINE_PRESETS["video" if moving else "photo"], smooth=SmoothConfig() if args.smooth else None,
            mesh_head=args.mesh,  # without --mesh no output reads the head's coefficients
        )
        views = MultiViewDetector(
            detector, rotations=args.rotations, scale_factors=args.scales, flip=args.flip,
            max_pixels=round(args.max_pixels * 1e6) or None,
        )
        workflow = FaceWorkflow(WorkflowConfig(
            track=args.track or args.smooth, crops_dir=args.crops, crop_style=args.crop_style, meshes_dir=args.mesh_export,
            anonymize="blur" if args.blur else "pixelate" if args.pixelate else None,
            anonymize_strength=args.anonymize_strength, keep_largest=args.keep_largest,
            keep_track_ids=tuple(args.keep_track_ids), carry_frames=args.carry_frames,
        ))
        summary = detect(views, args.input, DetectOptions(
            output=args.output, json_path=args.json, draw=not args.no_draw,
            batch_size=args.batch_size, include_mesh=args.mesh, progress=not args.no_progress, workflow=workflow,
            protected=[args.weights] if Path(args.weights).is_file() else [],
            decode_workers=args.decode_workers, resume=args.resume, shard=shard, settings=record_settings(args, max_size),
        ))
        end_process_group(shard)
    except common.REPORTED_ERRORS as exc:
        return common.report_error(exc)
    except ImportError as exc:  # an optional media package missing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. out of memory on the device
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before any output was opened
        print("interrupted: nothing written", file=sys.stderr)
        return interruption.exit_code

    unit = "frames" if summary.kind in ("video", "camera", "animation") else "images"
    written = ", ".join(str(p) for p in (summary.output, summary.json_path) if p is not None) or "nothing"
    rank = f"rank {shard.rank}: " if shard.distributed else ""
    print(
        f"{rank}{summary.faces} faces in {summary.frames} {unit} ({summary.frames_per_second:.1f} {unit}/s on "
        f"{detector.device}, {backend}); wrote {written}"
    )
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable files (listed above); the JSON covers the others", file=sys.stderr)
    if summary.interrupted:
        done = "outputs hold the frames processed so far" if summary.frames else "nothing written, earlier files kept"
        print(f"interrupted: {done}", file=sys.stderr)
        return interruption.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
