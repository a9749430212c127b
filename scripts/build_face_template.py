#!/usr/bin/env python
"""Build mesh/assets/face_template.npz: the 468-vertex, 852-triangle face template.

Run once, in a throwaway environment (mediapipe 0.10.14 needs numpy<2), not in the project's:

    python3 -m venv /tmp/mpenv && /tmp/mpenv/bin/pip install "mediapipe==0.10.14" "numpy<2"
    /tmp/mpenv/bin/python scripts/build_face_template.py

Topology: mediapipe's FACEMESH_TESSELATION (Apache-2.0). Its source lists the edges in closed triples
(a, b), (b, c), (c, a); the frozenset mediapipe builds at run time loses that order, so we parse the
source file's literal instead. Positions and colours: mediapipe's face-mesh model run once on the
public-domain astronaut photo in datasets/samples. Eye and mouth openings are closed with extra
triangles (stored separately) so renders have no see-through holes.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def ordered_edges(source: str, name: str) -> list[tuple[int, int]]:
    """The edge literal assigned to ``name`` in mediapipe's face_mesh_connections.py, in source order."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            call = node.value  # frozenset([...])
            return [tuple(pair) for pair in ast.literal_eval(call.args[0])]
    raise KeyError(name)


def triangles_from_triples(edges: list[tuple[int, int]]) -> np.ndarray:
    if len(edges) % 3:
        raise ValueError("the tesselation edge list is not a list of triples")
    triangles = []
    for (a, b), (b2, c), (c2, a2) in zip(edges[0::3], edges[1::3], edges[2::3]):
        if (b, c, a) != (b2, c2, a2):
            raise ValueError(f"edges {(a, b)}, {(b2, c)}, {(c2, a2)} do not close a triangle")
        triangles.append((a, b, c))
    return np.asarray(triangles, dtype=np.int64)


def loop_from_edges(edges: list[tuple[int, int]]) -> list[int]:
    """Vertex order of a closed contour given as unordered edge pairs (mediapipe lists eyelids in two chains)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = next(iter(neighbours))
    loop, previous = [start], None
    while True:
        current = loop[-1]
        following = [n for n in neighbours[current] if n != previous]
        if not following or following[0] == start:
            break
        previous = current
        loop.append(following[0])
    return loop


def main() -> int:
    import cv2
    import mediapipe as mp
    from mediapipe.python.solutions import face_mesh_connections

    source = Path(face_mesh_connections.__file__).read_text()
    triangles = triangles_from_triples(ordered_edges(source, "FACEMESH_TESSELATION"))

    photo_path = REPO / "datasets" / "samples" / "astronaut.jpg"
    image = cv2.imread(str(photo_path))
    height, width = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as model:
        result = model.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not result.multi_face_landmarks:
        print("error: mediapipe found no face in the sample photo", file=sys.stderr)
        return 1
    points = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
    uvs = points[:, :2].astype(np.float32)

    # Model space: x right, y up, z towards the camera; centred, long side of the x-y extent = 2.
    pixels = points * [width, height, width]
    xyz = np.stack([pixels[:, 0], -pixels[:, 1], -pixels[:, 2]], axis=1)
    xyz -= (xyz.max(axis=0) + xyz.min(axis=0)) / 2
    xyz /= np.abs(xyz[:, :2]).max()

    # Per-vertex colour: the photo averaged over a 5x5 window, RGB in [0, 1].
    blurred = cv2.blur(image, (5, 5)).astype(np.float32) / 255.0
    cols = np.clip(np.round(pixels[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(pixels[:, 1]).astype(int), 0, height - 1)
    colours = blurred[rows, cols][:, ::-1].copy()

    # Orient triangles so their normals face the camera (+z), as the renderer culls nothing but lights by normal.
    a, b, c = (xyz[triangles[:, k]] for k in range(3))
    if np.cross(b - a, c - a)[:, 2].mean() < 0:
        triangles = triangles[:, [0, 2, 1]]

    def fill(contour_edges: list[tuple[int, int]]) -> np.ndarray:
        loop = loop_from_edges(contour_edges)
        if len(loop) != len({v for e in contour_edges for v in e}):
            raise ValueError("an opening's contour is not one closed loop")
        centre = xyz[loop].mean(axis=0)
        # a fan around the contour point nearest the opening's centre keeps the slivers few
        anchor = int(np.argmin(np.linalg.norm(xyz[loop] - centre, axis=1)))
        loop = loop[anchor:] + loop[:anchor]
        fan = np.array([(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)], dtype=np.int64)
        fa, fb, fc = (xyz[fan[:, k]] for k in range(3))
        if np.cross(fb - fa, fc - fa)[:, 2].mean() < 0:
            fan = fan[:, [0, 2, 1]]
        return fan

    eye_names = ("FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE")
    # FACEMESH_LIPS holds the outer and the inner lip contour; the opening is bounded by the inner one
    # (mediapipe's inner-lip vertex indices).
    inner_lip = {78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191}
    lips = [e for e in ordered_edges(source, "FACEMESH_LIPS") if e[0] in inner_lip and e[1] in inner_lip]
    hole_faces = np.concatenate([fill(ordered_edges(source, n)) for n in eye_names] + [fill(lips)])

    # Five landmarks in the detector's order: image-left eye, image-right eye, nose tip, image-left and
    # image-right mouth corner. Eye centres average the eye contour; others are single vertices.
    weights = np.zeros((5, len(xyz)), dtype=np.float32)
    eyes = [sorted({v for e in ordered_edges(source, n) for v in e}) for n in eye_names]
    eyes.sort(key=lambda verts: xyz[verts, 0].mean())
    for row, verts in enumerate(eyes):
        weights[row, verts] = 1.0 / len(verts)
    weights[2, 1] = 1.0  # mediapipe vertex 1: nose tip
    corners = sorted((61, 291), key=lambda v: xyz[v, 0])  # mouth corners
    weights[3, corners[0]] = 1.0
    weights[4, corners[1]] = 1.0

    output = REPO / "mesh" / "assets" / "face_template.npz"
    np.savez_compressed(
        output,
        vertices=xyz.astype(np.float32),
        faces=triangles,
        hole_faces=hole_faces,
        colours=colours.astype(np.float32),
        uvs=uvs,
        landmark_weights=weights,
        provenance=np.array(
            "topology: mediapipe 0.10.14 FACEMESH_TESSELATION (Apache-2.0), parsed from the source literal; "
            "positions and colours: mediapipe face mesh run on datasets/samples/astronaut.jpg "
            "(NASA, public domain, via scikit-image); eye and mouth openings filled by fans (hole_faces); "
            "built by scripts/build_face_template.py"
        ),
    )
    print(f"wrote {output}: {len(xyz)} vertices, {len(triangles)} triangles, {len(hole_faces)} hole triangles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
