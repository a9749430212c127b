#!/usr/bin/env python
"""Write the demo clip: three moving copies of the public-domain astronaut photo (1280x720, 30 fps, 3 s)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path, help="video file to write (.mp4 or .avi)")
    parser.add_argument("--frames", type=int, default=90, help="number of frames (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate (default: %(default)s)")
    args = parser.parse_args(argv)
    from retinaface.errors import InputError
    from retinaface.outputs.atomic import check_writable
    from retinaface.samples import write_demo_video

    try:
        check_writable(args.output)
        path = write_demo_video(args.output, num_frames=args.frames, fps=args.fps)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({args.frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
