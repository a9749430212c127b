"""Export a RetinaFace model to ONNX (dynamic batch, height and width) and verify it against PyTorch.

  retinaface export --weights mobilenet0.25 --output weights/retinaface_mobilenet0.25.onnx
  python scripts/detect.py video.mp4 --backend onnxruntime --weights weights/retinaface_mobilenet0.25.onnx

The graph is the whole detector: uint8 BGR images [N, H, W, 3] and the four settings (score_threshold,
nms_threshold, pre_nms_top_k, max_detections) in, final detections out (image_ids, scores, boxes,
landmarks, mesh_coefficients); the format is described in retinaface.onnx_backend.export_onnx. The mesh
coefficients are computed at the kept anchors only; --dense-mesh computes them for every anchor first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import common


def main(argv: list[str] | None = None) -> int:
    parser = common.ArgumentParser(prog="retinaface export", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="mobilenet0.25", help="released name, .safetensors or checkpoint (default: %(default)s)")
    parser.add_argument("--output", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=common.int_at_least(13, 20), default=17, help="ONNX opset, 13..20 (default: %(default)s)")
    parser.add_argument("--dense-mesh", action="store_true", help="compute mesh coefficients for every anchor first (slower; same outputs)")
    parser.add_argument("--image", type=Path, help="real image for the check (default: the bundled sample photo)")
    args = parser.parse_args(argv)
    with common.command_session() as interruption:
        return _export(args, interruption)


def _export(args, interruption) -> int:
    from .. import load_model
    from ..outputs.guards import locked_outputs, refuse_overwriting_inputs
    from ..outputs.atomic import check_writable
    from ..media.images import read_image
    from ..export.onnx import export_onnx, verify_export
    from ..samples import ASTRONAUT
    from ..model.weights import resolve_weights

    try:
        weights = resolve_weights(args.weights)
        image = read_image(args.image or ASTRONAUT)  # before the export, so a bad --image costs nothing
        refuse_overwriting_inputs([("--output", args.output)], [weights, args.image])
        check_writable(args.output)
        with locked_outputs(args.output):
            model = load_model(weights)
            data = export_onnx(model, args.output, opset=args.opset, dense_mesh=args.dense_mesh)
    except common.REPORTED_ERRORS as exc:
        return common.report_error(exc)
    except KeyboardInterrupt:
        print(f"interrupted: {args.output} not written", file=sys.stderr)
        return interruption.exit_code
    except Exception as exc:  # the ONNX exporter's own errors (unsupported operator for this opset, ...)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        print(f"error: ONNX export failed ({type(exc).__name__}: {first})", file=sys.stderr)
        return 1
    report = verify_export(model, data, image)
    print(f"wrote {args.output} ({len(data) / 1e6:.2f} MB)")
    for name, error in report.items():
        if name == "count":
            print(f"  detections per image: {'the same' if error == 0 else 'different'} in onnxruntime and pytorch")
        else:
            print(f"  max |onnxruntime - pytorch| {name}: {error:.2e}")
    if max(report.values()) > 1e-3:
        print("error: the exported model disagrees with PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
