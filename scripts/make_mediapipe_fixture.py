#!/usr/bin/env python
"""Write the small mediapipe FaceMesh reference that the mesh regression tests read.

  python scripts/make_mediapipe_fixture.py --mediapipe-python /tmp/mpenv/bin/python [-o tests/data/mediapipe_faces.json]

For the faces the released detector finds in two public-domain portraits (the astronaut sample, NASA; and
matplotlib's grace_hopper.jpg, U.S. Navy), mediapipe FaceMesh 0.10.14 (Apache-2.0) gives 468 points per
face; the file keeps them (x, y image pixels, z mediapipe's depth; 0.1 px) with the detection box the
crop was taken around. mediapipe runs in a throwaway environment only (see scripts/bench_mesh_accuracy.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def portraits() -> dict[str, Path]:
    import matplotlib.cbook

    return {"astronaut.jpg": REPO / "datasets" / "samples" / "astronaut.jpg",
            "grace_hopper.jpg": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mediapipe-python", default="/tmp/mpenv/bin/python")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "tests" / "data" / "mediapipe_faces.json")
    args = parser.parse_args(argv)
    import numpy as np

    from retinaface import Detector
    from retinaface.evaluation.mesh_accuracy import mediapipe_references
    from retinaface.media.images import read_image
    from retinaface.outputs.atomic import atomic_write

    detector = Detector.from_pretrained(device="cpu")
    photos = portraits()
    found = {name: detector(read_image(path)) for name, path in photos.items()}
    references = mediapipe_references([(photos[name], np.array([f.box for f in faces]).reshape(-1, 4)) for name, faces in found.items()],
                                      python=args.mediapipe_python)
    record = {"source": "mediapipe FaceMesh 0.10.14 (Apache-2.0), static image mode, on public-domain portraits", "photos": [
        {"name": name, "faces": [{"box": [round(float(v), 1) for v in face.box], "points": np.round(points, 1).tolist()}
                                 for face, points in zip(faces, refs) if points is not None]}
        for (name, faces), refs in zip(found.items(), references)
    ]}
    atomic_write(args.output, lambda tmp: Path(tmp).write_text(json.dumps(record, separators=(",", ":")) + "\n"))
    print(f"wrote {args.output}: {sum(len(p['faces']) for p in record['photos'])} faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
