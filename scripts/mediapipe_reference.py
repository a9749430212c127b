#!/usr/bin/env python
"""Reference face meshes for the accuracy benchmark, from mediapipe FaceMesh (the independent judge).

Runs ONLY in a throwaway environment, never in the project's (mediapipe 0.10.14 needs numpy<2), and is
called by scripts/bench_mesh_accuracy.py:

    python3 -m venv /tmp/mpenv && /tmp/mpenv/bin/pip install mediapipe==0.10.14 "numpy<2" opencv-python-headless
    /tmp/mpenv/bin/python scripts/mediapipe_reference.py request.json answer.json

request.json: {"images": [{"path": ..., "boxes": [[x1, y1, x2, y2], ...]}], "context": 1.8, "crop_size": 256}
answer.json:  {"images": [{"path": ..., "points": [[[x, y, z] x 468] or null per box]}]} in image pixels
(z: mediapipe's relative depth, scaled like x; smaller = nearer the camera).

Each face is cut out as a square ``context`` times its box's longer side, centred on the box (outside the
image: black), resized to ``crop_size`` pixels, and given to FaceMesh (static images, up to 3 faces,
no iris refinement). Of the faces it finds in the crop, the one whose landmarks' centre is nearest the
crop's centre is taken, if that centre lies inside the detector's box; else the face has no reference.
Only NumPy, OpenCV and mediapipe are imported here. Nothing this script produces may become training
data, fitting targets or part of the product: it is the judge.
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np


def crop_face(image: np.ndarray, box, context: float, size: int) -> tuple[np.ndarray, float, float, float]:
    """Square crop resized to ``size``; returns it and (x0, y0, scale) with image = x0 + crop / scale."""
    x1, y1, x2, y2 = box
    side = context * max(x2 - x1, y2 - y1)
    x0, y0 = (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2
    scale = size / side
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    crop = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop, x0, y0, scale


def main() -> int:
    import mediapipe as mp

    request_path, answer_path = sys.argv[1:3]
    with open(request_path) as f:
        request = json.load(f)
    context, size = float(request.get("context", 1.8)), int(request.get("crop_size", 256))
    answer = {"images": [], "mediapipe": mp.__version__}
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=3, refine_landmarks=False,
                                         min_detection_confidence=0.3) as model:
        for item in request["images"]:
            image = cv2.imread(item["path"], cv2.IMREAD_COLOR)
            if image is None:
                print(f"error: cannot read {item['path']}", file=sys.stderr)
                return 2
            per_face = []
            for box in item["boxes"]:
                crop, x0, y0, scale = crop_face(image, box, context, size)
                result = model.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
                best = None
                for landmarks in result.multi_face_landmarks or []:
                    pts = np.array([[p.x, p.y, p.z] for p in landmarks.landmark], dtype=np.float64) * size
                    distance = np.linalg.norm(pts[:, :2].mean(axis=0) - size / 2)
                    if best is None or distance < best[0]:
                        best = (distance, pts)
                if best is None:
                    per_face.append(None)
                    continue
                pts = best[1]
                image_pts = np.stack([x0 + pts[:, 0] / scale, y0 + pts[:, 1] / scale, pts[:, 2] / scale], axis=1)
                cx, cy = image_pts[:, :2].mean(axis=0)
                inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
                per_face.append(np.round(image_pts, 3).tolist() if inside else None)
            answer["images"].append({"path": item["path"], "points": per_face})
    with open(answer_path, "w") as f:
        json.dump(answer, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
