
import pytest
import torch
from pytorch3d.transforms import so3_exp_map

from retinaface.mesh.photo_fit import FitConfig, _to_ndc, fit_faces, focal_pixels, project, renderer_coefficients
from retinaface.mesh.prior import load_prior
from retinaface.mesh.renderer import camera_from_params, interpolate, lights_from_params, rasterize_zbuffer, shade_vertices
from retinaface.mesh.renderer import project as render_project
from retinaface.mesh.branch import split_coefficients
from retinaface.mesh.template import load_template

SIZE = 160
CONFIG = FitConfig(steps=20)


def synthetic_photo(seed: int = 0):
    """Two prior faces with known shape and pose rendered side by side into one SIZE x 2*SIZE photo."""
    prior, template = load_prior(), load_template()
    generator = torch.Generator().manual_seed(seed)
    coefficients = prior.sample(2, generator)
    coefficients[:, : prior.num_identity] *= 0.7
    rotation = torch.tensor([[0.1, 0.35, 0.05], [-0.15, -0.3, -0.1]])  # up to ~20 degrees of yaw
    centre = torch.tensor([[SIZE / 2, SIZE / 2], [1.5 * SIZE, SIZE / 2 + 5]])
    scale = torch.tensor([45.0, 50.0])
    shapes = prior.shapes(coefficients)
    boxes = torch.tensor([[c[0] - 0.9 * s, c[1] - 1.0 * s, c[0] + 0.9 * s, c[1] + 1.0 * s] for c, s in zip(centre.tolist(), scale.tolist())])
    points = project(shapes, so3_exp_map(rotation), centre, scale, focal_pixels(boxes, CONFIG.focal), (boxes[:, :2] + boxes[:, 2:]) / 2)
    image = torch.full((3, SIZE, 2 * SIZE), 0.3)
    whole = torch.tensor([[0.0, 0.0, 2.0 * SIZE, SIZE]])
    for k in range(2):  # render each face over the whole (square-padded) frame, then composite
        ndc = _to_ndc(points[k : k + 1], torch.tensor([[0.0, -SIZE / 2, 2.0 * SIZE, 1.5 * SIZE]]))
        faces = template.render_faces
        lit = shade_vertices(shapes[k : k + 1], faces, template.colours[None], lights_from_params(torch.zeros(1, 9)))
        raster = rasterize_zbuffer(ndc, faces, 2 * SIZE)
        rendered, mask = interpolate(ndc, faces, raster, lit)
        rendered, mask = rendered[0, :, SIZE // 2 : SIZE // 2 + SIZE], mask[0, :, SIZE // 2 : SIZE // 2 + SIZE]
        image = image * (1 - mask) + rendered
    landmarks = template.landmarks(points[..., :2])
    del whole
    return image.clamp(0, 1), boxes, landmarks, points, rotation, shapes


@pytest.fixture(scope="module")
def photo():
    return synthetic_photo()


def rotation_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    relative = so3_exp_map(a).transpose(1, 2) @ so3_exp_map(b)
    return torch.rad2deg(torch.acos(((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))


def test_fit_recovers_pose_and_beats_the_mean_face_start(photo):
    image, boxes, landmarks, truth_points, truth_rotation, _ = photo
    start = fit_faces(image, boxes, landmarks, config=CONFIG, steps=0)
    fitted = fit_faces(image, boxes, landmarks, config=CONFIG)
    assert fitted.valid.all()
    size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    start_error = (start.vertices[..., :2] - truth_points[..., :2]).norm(dim=-1).mean(1) / size
    fit_error = (fitted.vertices[..., :2] - truth_points[..., :2]).norm(dim=-1).mean(1) / size
    assert (fit_error <= start_error + 1e-4).all(), (start_error, fit_error)
    assert (fit_error < 0.03).all()
    assert (rotation_error(fitted.state.rotation, truth_rotation) < 6).all()
    # the landmarks place the head and do not bend the shape, so they are met up to the shape's own
    # difference from the true face (about 1 % of these 100 px faces)
    assert (fitted.landmark_residual < 1.5).all()  # pixels
    assert torch.isfinite(fitted.pixel_residual).all() and (fitted.pixel_residual < 0.1).all()


def test_landmarks_place_the_head_but_do_not_bend_the_shape(photo):
    image, boxes, landmarks, *_ = photo
    # landmarks alone (no pixel term, no priors): only they could move the shape coefficients
    alone = dict(steps=5, pixel_weight=0.0, identity_weight=0.0, expression_weight=0.0)
    held = fit_faces(image, boxes, landmarks, config=FitConfig(**alone, landmarks_move_shape=False))
    bent = fit_faces(image, boxes, landmarks, config=FitConfig(**alone, landmarks_move_shape=True))
    assert torch.equal(held.state.coefficients, torch.zeros_like(held.state.coefficients))
    assert bent.state.coefficients.abs().max() > 1e-3
    start = fit_faces(image, boxes, landmarks, config=CONFIG, steps=0)
    assert not torch.equal(held.state.rotation, start.state.rotation)  # the pose still follows them


def test_warm_start_keeps_shape_and_light_and_follows_the_landmarks(photo):
    image, boxes, landmarks, *_ = photo
    first = fit_faces(image, boxes, landmarks, config=CONFIG, steps=5)
    assert first.state.coefficients.abs().max() > 0  # the fit moved away from the mean face
    again = fit_faces(image, boxes, landmarks, config=CONFIG, init=first.state, steps=0)
    assert torch.equal(again.state.coefficients, first.state.coefficients)
    assert torch.equal(again.state.illumination, first.state.illumination)
    torch.testing.assert_close(again.model_vertices, first.model_vertices)
    size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    # the same landmarks pose the same shape again, close to where the 5 steps of pixel fitting left it
    drift = (again.vertices[..., :2] - first.vertices[..., :2]).norm(dim=-1).mean(1) / size
    assert (drift < 0.02).all(), drift
    # the next frame's face moved by (3, -2) px: the warm-started mesh moves with its landmarks at once
    shift = torch.tensor([3.0, -2.0])
    moved = fit_faces(image, boxes + shift.repeat(2), landmarks + shift, config=CONFIG, init=first.state, steps=0)
    motion = (moved.vertices[..., :2] - again.vertices[..., :2]).mean(1)
    torch.testing.assert_close(motion, shift.expand_as(motion), atol=0.05, rtol=0)


def test_fits_convert_exactly_into_the_renderers_coefficients(photo):
    image, boxes, landmarks, *_ = photo
    fits = fit_faces(image, boxes, landmarks, config=CONFIG, steps=3)
    coefficients = split_coefficients(renderer_coefficients(fits, boxes, focal=CONFIG.focal))
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ndc = render_project(fits.model_vertices, camera_from_params(coefficients.camera, widths / heights))
    x = boxes[:, None, 0] + (1 - ndc[..., 0]) / 2 * widths[:, None]
    y = boxes[:, None, 1] + (1 - ndc[..., 1]) / 2 * heights[:, None]
    assert torch.allclose(torch.stack([x, y], -1), fits.vertices[..., :2], atol=0.02)
    assert torch.equal(coefficients.latent[:, : fits.state.coefficients.shape[1]], fits.state.coefficients)


def test_empty_nan_and_tiny_faces_are_not_fitted(photo):
    image, boxes, landmarks, *_ = photo
    empty = fit_faces(image, torch.zeros(0, 4), torch.zeros(0, 5, 2), config=CONFIG)
    assert empty.vertices.shape == (0, 468, 3) and empty.valid.shape == (0,)
    bad_landmarks = landmarks.clone()
    bad_landmarks[0, 2, 0] = float("nan")
    tiny = torch.tensor([[10.0, 10.0, 16.0, 17.0]])
    fits = fit_faces(image, torch.cat([boxes, tiny]), torch.cat([bad_landmarks, landmarks[:1] * 0 + 12]), config=CONFIG, steps=2)
    assert fits.valid.tolist() == [False, True, False]
    assert torch.isfinite(fits.vertices).all() and torch.isfinite(fits.pixel_residual).all()
    # a non-finite warm start falls back to PnP for that face
    first = fit_faces(image, boxes, landmarks, config=CONFIG, steps=0)
    state = first.state._replace(scale=torch.tensor([float("nan"), float(first.state.scale[1])]))
    again = fit_faces(image, boxes, landmarks, config=CONFIG, init=state, steps=0)
    assert torch.allclose(again.vertices, first.vertices, atol=1e-3)


def test_warm_started_fits_of_a_still_face_barely_move(photo):
    image, boxes, landmarks, *_ = photo
    fits = fit_faces(image, boxes, landmarks, config=CONFIG)
    size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    motions = []
    for _ in range(4):
        again = fit_faces(image, boxes, landmarks, config=CONFIG, init=fits.state)
        motions.append((again.vertices[..., :2] - fits.vertices[..., :2]).norm(dim=-1).mean(1) / size)
        fits = again
    # the fit keeps converging a little, then settles: well under a pixel per frame for these ~90 px faces
    assert (torch.stack(motions) < 0.01).all() and (motions[-1] < 0.003).all(), motions
