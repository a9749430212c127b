"""Build the README picture of the face workflows from the public-domain astronaut sample.

  python scripts/make_workflow_figure.py [-o datasets/samples/face_workflows.png]

Panels: detection, ArcFace 112x112 crop, an edited FFHQ-style crop, that edit pasted back with feathered
edges, blur, pixelate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from retinaface import Detector
from retinaface.faces.align import align_face, paste_back
from retinaface.faces.anonymize import anonymize
from retinaface.faces.drawing import draw_faces
from retinaface.media.images import read_image
from retinaface.outputs.atomic import write_image
from retinaface.samples import ASTRONAUT

PANEL = 176
REGION = (slice(0, 300), slice(75, 375))  # the head and shoulders of the 512x512 photo


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    panel = panel.copy()
    cv2.rectangle(panel, (0, PANEL - 20), (PANEL, PANEL), (0, 0, 0), -1)
    cv2.putText(panel, text, (5, PANEL - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("datasets/samples/face_workflows.png"))
    args = parser.parse_args(argv)
    image = read_image(ASTRONAUT)
    (face,) = Detector.from_pretrained("mobilenet0.25", device="cpu")(image)
    region = lambda picture: cv2.resize(picture[REGION], (PANEL, PANEL), interpolation=cv2.INTER_AREA)  # noqa: E731
    arcface = align_face(image, face.landmarks, style="arcface112")
    ffhq = align_face(image, face.landmarks, style="ffhq", size=256)
    edited = cv2.stylization(ffhq.image, sigma_s=40, sigma_r=0.3)
    panels = [
        _label(region(draw_faces(image, [face])), "detect"),
        _label(cv2.resize(arcface.image, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST), "crop: arcface112"),
        _label(cv2.resize(edited, (PANEL, PANEL), interpolation=cv2.INTER_AREA), "edited ffhq crop"),
        _label(region(paste_back(image, edited, ffhq.transform, feather=0.15)), "paste_back"),
        _label(region(anonymize(image, [face.box], method="blur")), "--blur"),
        _label(region(anonymize(image, [face.box], method="pixelate")), "--pixelate"),
    ]
    write_image(args.output, np.concatenate(panels, axis=1))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
