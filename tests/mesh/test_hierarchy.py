import numpy as np

from retinaface.mesh.hierarchy import barycentric_on_nearest_triangle, build_hierarchy, load_hierarchy
from retinaface.mesh.template import load_template


def test_barycentric_exact_cases():
    vertices = np.array([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [2, 2, 0]])
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    points = np.array([[0.5, 0.5, 1.0], [2, 2, 0], [-1.0, 0, 0]])  # above face 0; a corner; outside
    w = barycentric_on_nearest_triangle(points, vertices, faces)
    np.testing.assert_allclose(w[0], [0.5, 0.25, 0.25, 0])
    np.testing.assert_allclose(w[1], [0, 0, 0, 1])
    np.testing.assert_allclose(w[2], [1, 0, 0, 0])  # clamped onto the nearest vertex


def test_cached_hierarchy_matches_a_rebuild_and_is_well_formed():
    t = load_template()
    cached = load_hierarchy()
    rebuilt = build_hierarchy(t.vertices.numpy(), t.faces.numpy())
    assert [len(level.vertices) for level in cached.levels] == [len(level.vertices) for level in rebuilt.levels]
    assert len(cached.up) == len(rebuilt.up) == len(cached.down) == len(cached.levels) - 1 >= 2
    for a, b in zip(cached.up, rebuilt.up):
        np.testing.assert_allclose(a, b, atol=1e-6)
    sizes = [len(level.vertices) for level in cached.levels]
    assert sizes[0] == 468 and 100 <= sizes[1] <= 140 and 20 <= sizes[2] <= 40
    for i, (down, up) in enumerate(zip(cached.down, cached.up)):
        fine, coarse = cached.levels[i], cached.levels[i + 1]
        assert down.shape == (len(coarse.vertices), len(fine.vertices))
        np.testing.assert_allclose(down.sum(axis=1), 1.0)
        np.testing.assert_allclose(up.sum(axis=1), 1.0)
        assert (up >= 0).all()
        # interpolating the coarse surface lands close to the fine vertices (x-y extent is 2)
        error = np.linalg.norm(up @ coarse.vertices - fine.vertices, axis=1)
        assert error.mean() < 0.05 and error.max() < 0.35
