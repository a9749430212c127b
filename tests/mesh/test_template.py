from collections import Counter

import numpy as np
import torch

from retinaface.mesh.template import load_template


def test_sizes_and_topology():
    t = load_template()
    assert t.vertices.shape == (468, 3) and t.faces.shape == (852, 3)
    assert t.colours.shape == (468, 3) and (t.colours >= 0).all() and (t.colours <= 1).all()
    assert set(t.faces.unique().tolist()) == set(range(468))  # every vertex is used
    faces = t.faces.tolist()
    assert all(len(set(f)) == 3 for f in faces)  # no degenerate triangle
    edges = [(a, b) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))]
    directed = set(edges)
    assert len(directed) == 3 * 852  # no directed edge twice: neighbours never disagree on orientation
    undirected = Counter(frozenset(e) for e in edges)
    assert set(undirected.values()) == {1, 2}  # a manifold: an edge borders one or two triangles
    # each interior edge is shared by exactly two triangles in opposite directions: consistent orientation
    assert all((b, a) in directed for a, b in directed if undirected[frozenset((a, b))] == 2)
    # the open edges close into four loops: the face's outline, the two eyes and the mouth
    boundary = {a: b for a, b in directed if (b, a) not in directed}
    assert len(boundary) == sum(1 for n in undirected.values() if n == 1)  # one open edge leaves each rim vertex
    loops, unseen = [], set(boundary)
    while unseen:
        start = vertex = unseen.pop()
        length = 1
        while (vertex := boundary[vertex]) != start:
            unseen.remove(vertex)
            length += 1
        loops.append(length)
    assert sorted(loops) == [16, 16, 20, 36]  # two eyes, the mouth, the outline
    assert 468 - len(undirected) + 852 == 2 - len(loops)  # Euler: a disc with three holes, no handles


def test_normals_face_the_camera():
    t = load_template()
    v = t.vertices
    for faces in (t.faces, t.hole_faces):
        a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
        normals = torch.linalg.cross(b - a, c - a)  # length = twice the area
        facing = normals[:, 2].clamp(min=0).sum() / normals[:, 2].abs().sum()
        assert facing > 0.95  # by area: only slivers at the silhouette and in the hole fans turn away


def test_landmarks_are_where_a_face_has_them():
    t = load_template()
    left_eye, right_eye, nose, left_mouth, right_mouth = t.landmarks(t.vertices).numpy()
    assert left_eye[0] < 0 < right_eye[0] and left_mouth[0] < 0 < right_mouth[0]
    assert min(left_eye[1], right_eye[1]) > nose[1] > max(left_mouth[1], right_mouth[1])
    assert (t.vertices[:, 2] > nose[2]).sum() < 5  # the nose tip is among the points nearest the camera
    np.testing.assert_allclose(t.landmark_weights.sum(dim=1).numpy(), np.ones(5), atol=1e-6)
