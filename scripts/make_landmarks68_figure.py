"""Build the documentation picture of the 68-point landmarks read off the fitted mesh.

  python scripts/make_landmarks68_figure.py [-o docs/images/landmarks68.jpg]

The public-domain astronaut sample with ``--mesh``: the detector's five landmarks (large dots) and the 68
iBUG / Multi-PIE points of the fitted mesh (small dots, every point numbered), enlarged 3x.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from retinaface import Detector
from retinaface.faces.drawing import LANDMARK_COLOURS
from retinaface.media.images import read_image
from retinaface.outputs.atomic import write_image
from retinaface.samples import ASTRONAUT

ZOOM = 3
GROUPS = ((0, 17, (0, 200, 255)), (17, 27, (0, 255, 0)), (27, 36, (255, 0, 255)), (36, 48, (255, 255, 0)), (48, 68, (80, 80, 255)))
"""Index ranges and BGR colours: jaw, brows, nose, eyes, lips."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/landmarks68.jpg"))
    args = parser.parse_args(argv)
    image = read_image(ASTRONAUT)
    (face,) = Detector.from_pretrained(device="cpu", mesh=True)(image)
    x1, y1, x2, y2 = face.box
    pad = 0.25 * (x2 - x1)
    left, top = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    right, bottom = int(min(image.shape[1], x2 + pad)), int(min(image.shape[0], y2 + pad))
    canvas = cv2.resize(image[top:bottom, left:right], None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_CUBIC)
    place = lambda p: (int(round((p[0] - left) * ZOOM)), int(round((p[1] - top) * ZOOM)))  # noqa: E731
    for start, end, colour in GROUPS:
        for index in range(start, end):
            point = place(face.landmarks68[index])
            cv2.circle(canvas, point, 3, colour, -1, cv2.LINE_AA)
            cv2.putText(canvas, str(index), (point[0] + 4, point[1] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour, 1, cv2.LINE_AA)
    for point, colour in zip(face.landmarks, LANDMARK_COLOURS):
        cv2.circle(canvas, place(point), 7, colour, 2, cv2.LINE_AA)
    write_image(args.output, canvas)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
