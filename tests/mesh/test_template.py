import numpy as np
import torch

from retinaface.mesh.template import load_template


def test_sizes_and_topology():
    t = load_template()
    assert t.vertices.shape == (468, 3) and t.faces.shape == (852, 3)
    assert t.colours.shape == (468, 3) and (t.colours >= 0).all() and (t.colours <= 1).all()
    assert set(t.faces.unique().tolist()) == set(range(468))  # every vertex is used
    # each interior edge is shared by exactly two triangles in opposite directions: consistent orientation
    directed = {(int(a), int(b)) for f in t.faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert len(directed) == 3 * 852  # no directed edge twice
    assert not any((b, a) in directed and (a, b) == (b, a) for a, b in directed)


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
