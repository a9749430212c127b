import math

import pytest
import torch

from retinaface.mesh.renderer import camera_from_params, lights_from_params, project, rasterize_pytorch3d, rasterize_zbuffer, render, sanitize
from retinaface.mesh.template import load_template


@pytest.fixture(scope="module")
def template():
    return load_template()


def _scene(batch, seed=0, spread=0.3):
    torch.manual_seed(seed)
    t = load_template()
    vertices = t.vertices[None].repeat(batch, 1, 1) + 0.02 * torch.randn(batch, t.num_vertices, 3)
    colours = (t.colours[None].repeat(batch, 1, 1) + 0.1 * torch.rand(batch, t.num_vertices, 3)).clamp(0, 1)
    return vertices, colours, torch.randn(batch, 7) * spread, torch.randn(batch, 9) * spread


def test_zbuffer_matches_pytorch3d_rasteriser(template):
    vertices, _, camera, _ = _scene(6, spread=0.5)
    ndc = project(vertices, camera_from_params(camera))
    ours = rasterize_zbuffer(ndc, template.render_faces, 64)
    reference = rasterize_pytorch3d(ndc, template.render_faces, 64)
    assert (ours >= 0).any()
    assert (ours == reference).float().mean() > 0.999  # ties on shared edges may differ, nothing else


def test_pixels_and_vertex_gradients_match_pytorch3d_renderer(template):
    from pytorch3d.renderer import (
        BlendParams,
        HardGouraudShader,
        Materials,
        MeshRasterizer,
        MeshRenderer,
        PointLights,
        RasterizationSettings,
        TexturesVertex,
    )
    from pytorch3d.structures import Meshes

    vertices, colours, camera, illumination = _scene(2, seed=1)
    size = 48
    faces = template.render_faces
    weights = torch.rand(2, 3, size, size)

    ours_vertices = vertices.clone().requires_grad_()
    ours = render(ours_vertices, colours, faces, camera, illumination, image_size=size)
    (ours.image * weights).sum().backward()

    cameras = camera_from_params(camera)
    lights = lights_from_params(illumination)
    renderer = MeshRenderer(
        rasterizer=MeshRasterizer(
            cameras=cameras,
            raster_settings=RasterizationSettings(image_size=size, blur_radius=0.0, faces_per_pixel=1, perspective_correct=False),
        ),
        shader=HardGouraudShader(
            cameras=cameras,
            lights=PointLights(location=lights.location, diffuse_color=lights.colour, ambient_color=lights.ambient, specular_color=torch.zeros(2, 3)),
            materials=Materials(ambient_color=((1, 1, 1),), diffuse_color=((1, 1, 1),), specular_color=((0, 0, 0),)),
            blend_params=BlendParams(background_color=(0.0, 0.0, 0.0)),
        ),
    )
    ref_vertices = vertices.clone().requires_grad_()
    meshes = Meshes(verts=list(ref_vertices), faces=[faces] * 2, textures=TexturesVertex(list(colours)))
    reference = renderer(meshes)[..., :3].permute(0, 3, 1, 2)
    (reference * weights).sum().backward()

    assert (ours.image - reference).abs().max() < 3e-4  # float32: the two projections round differently (about 1e-4)
    assert ours.mask.mean() > 0.2
    scale = ref_vertices.grad.abs().max()
    assert scale > 0
    assert (ours_vertices.grad - ref_vertices.grad).abs().max() < 1e-3 * scale


def test_zero_parameters_render_the_template_centred_and_upright(template):
    batch = 1
    zeros7, zeros9 = torch.zeros(batch, 7), torch.zeros(batch, 9)
    out = render(template.vertices[None], template.colours[None], template.render_faces, zeros7, zeros9, image_size=64)
    rows, cols = torch.nonzero(out.mask[0, 0], as_tuple=True)
    assert abs(cols.float().mean() - 31.5) < 3 and abs(rows.float().mean() - 31.5) < 4
    assert 0.35 < out.mask.mean() < 0.8  # fills the crop like a face box
    eyes = template.landmarks(out.ndc)[0]
    # image-left eye (template x < 0) appears on the left: larger NDC x means further left in PyTorch3D
    assert eyes[0, 0] > eyes[1, 0] and eyes[0, 1] > eyes[2, 1]  # and above the nose
    # frontal light, zero parameters: ambient 0.5 + light 0.5 * cos(~0), so the nose tip shows its own colour
    nose = int(template.landmark_weights[2].argmax())
    col = int(round(float((1 - out.ndc[0, nose, 0]) * 32 - 0.5)))
    row = int(round(float((1 - out.ndc[0, nose, 1]) * 32 - 0.5)))
    assert torch.allclose(out.image[0, :, row, col], template.colours[nose], atol=0.08)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1e9])
def test_degenerate_parameters_do_not_produce_nan(template, bad):
    vertices, colours, camera, illumination = _scene(3)
    camera[0, 2] = bad  # distance
    camera[1, 6] = -bad if math.isfinite(bad) else bad  # focal
    illumination[2, :] = bad
    camera, bad_rows = sanitize(camera)
    illumination, bad_light_rows = sanitize(illumination)
    assert bad_rows + bad_light_rows == (2 + 1 if not math.isfinite(bad) else 0)
    camera.requires_grad_()
    out = render(vertices, colours, load_template().render_faces, camera, illumination, image_size=32)
    out.image.sum().backward()
    assert torch.isfinite(out.image).all() and torch.isfinite(camera.grad).all()
