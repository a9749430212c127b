"""The fit's fast paths give what the plain computations give: crops read from the faces' region only,
8-bit frames, vertex normals without PyTorch3D's Meshes, interpolation at the covered pixels only."""

import pytest
import torch
from pytorch3d.structures import Meshes
from torchvision.ops import roi_align

from retinaface.mesh.photo_fit import FitConfig, _crops, fit_faces
from retinaface.mesh.renderer import camera_from_params, interpolate, interpolate_covered, project, rasterize_zbuffer, vertex_normals
from retinaface.mesh.template import load_template


@pytest.mark.parametrize("boxes", [
    [[40.0, 30.0, 90.5, 95.25], [120.2, 10.0, 150.0, 44.0]],   # inside the image
    [[-12.0, -8.5, 30.0, 40.0], [170.0, 100.0, 215.0, 140.0]],  # over the top-left and bottom-right edges
    [[-60.0, -60.0, -20.0, -20.0]],                              # entirely outside
])
def test_crops_from_the_region_equal_roi_align_on_the_whole_image(boxes):
    image = torch.rand(3, 120, 200)
    boxes = torch.tensor(boxes)
    whole = roi_align(image[None], torch.cat([torch.zeros(len(boxes), 1), boxes], 1), output_size=16, sampling_ratio=2, aligned=True)
    assert torch.allclose(_crops(image, boxes, 16), whole, atol=1e-5)
    as_bytes = (image * 255).round().to(torch.uint8)
    expected = roi_align(as_bytes.float()[None] / 255, torch.cat([torch.zeros(len(boxes), 1), boxes], 1), output_size=16, sampling_ratio=2, aligned=True)
    assert torch.allclose(_crops(as_bytes.permute(1, 2, 0).contiguous().permute(2, 0, 1), boxes, 16), expected, atol=1e-5)


def test_fit_of_an_8_bit_frame_equals_the_fit_of_its_float_copy():
    generator = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (90, 160, 3), dtype=torch.uint8, generator=generator)
    boxes = torch.tensor([[50.0, 20.0, 100.0, 80.0]])
    landmarks = torch.tensor([[[65.0, 42.0], [85.0, 42.0], [75.0, 52.0], [67.0, 64.0], [83.0, 64.0]]])
    config = FitConfig(steps=2)
    from_bytes = fit_faces(frame.permute(2, 0, 1), boxes, landmarks, config=config)
    from_floats = fit_faces(frame.permute(2, 0, 1).float() / 255, boxes, landmarks, config=config)
    assert torch.equal(from_bytes.vertices, from_floats.vertices)
    assert torch.equal(from_bytes.pixel_residual, from_floats.pixel_residual)


def test_vertex_normals_equal_pytorch3d_and_interpolation_at_covered_pixels_equals_the_image():
    template = load_template()
    faces = template.render_faces
    generator = torch.Generator().manual_seed(3)
    vertices = template.vertices[None].repeat(2, 1, 1) + 0.02 * torch.randn(2, len(template.vertices), 3, generator=generator)
    reference = Meshes(verts=list(vertices), faces=[faces] * 2).verts_normals_padded()
    assert torch.allclose(vertex_normals(vertices, faces), reference, atol=1e-5)

    ndc = project(vertices, camera_from_params(torch.randn(2, 7, generator=generator) * 0.3))
    pix_to_face = rasterize_zbuffer(ndc, faces, 48)
    colours = torch.rand(2, len(template.vertices), 3, generator=generator)
    image, mask = interpolate(ndc, faces, pix_to_face, colours)
    image_ids, pixel_ids, values = interpolate_covered(ndc, faces, pix_to_face, colours)
    assert len(values) == int(mask.sum()) > 100
    assert torch.equal(image.flatten(2).transpose(1, 2)[image_ids, pixel_ids], values)
    assert (image * (1 - mask)).abs().max() == 0
