"""Differentiable rendering of coloured face meshes with camera and light parameters from the detector.

Parameterisation of the 16 per-face render parameters (kept bounded so that any network output,
including a freshly initialised one, gives a sane picture; zeros render the template filling the crop):

- camera ``P_cam`` (7): ``[tx, ty, tz, rx, ry, rz, f]``
  - rotation vector ``(pi / 2) * tanh(r)`` (face pose; at most 90 degrees about each axis),
  - translation ``(0.5 tanh(tx), 0.5 tanh(ty))`` in template units (the template spans [-1, 1]),
  - distance ``4 exp(2 tanh(tz / 2))`` from the face centre, so the camera is never behind the face,
  - focal length ``3.6 exp(2 tanh(f / 2))`` in NDC units (smooth bounds, not clamps: a clamped value
    has zero gradient, so a head pushed past it could never come back): at the default distance the template's
    half-width of 0.9 projects to about 0.8 of the crop's half-width.
- illumination ``P_ill`` (9): point-light location ``(0, 0, 6) + 4 tanh(l)`` in template space (in front
  of the face by default), light colour ``0.5 (1 + tanh(c))`` and ambient colour ``0.5 (1 + tanh(a))``
  (each in [0, 1]; zeros give 0.5 + 0.5 at a face point looking at the light, i.e. the template colours).

Shading is Lambertian and per vertex (Gouraud): ``rgb = albedo * (ambient + light * max(0, n . l))``.
Rasterisation (which triangle covers each pixel) is computed without gradients: by PyTorch3D on CUDA and
by a vectorised bounding-box z-buffer on CPU, where PyTorch3D's rasteriser takes about 0.5 s for 16 faces
at 112 x 112 (it has no binning on CPU). Barycentric coordinates are then recomputed differentiably from
the projected vertices, so gradients reach vertices, colours, camera and light. Silhouettes carry no
gradient (hard rasterisation), as with PyTorch3D's hard shaders.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pytorch3d.renderer import PerspectiveCameras
from pytorch3d.structures import Meshes
from pytorch3d.transforms import so3_exp_map
from torch import Tensor

from .coefficients import pose_rotation_vector

DEFAULT_DISTANCE = 4.0
DEFAULT_FOCAL = 3.6
_LOG_RANGE = 2.0
_EPS = 1e-8


class Lights(NamedTuple):
    """Per-face point light: ``location`` ``Tensor[B, 3]`` (template space), ``colour`` and ``ambient`` ``Tensor[B, 3]``."""

    location: Tensor
    colour: Tensor
    ambient: Tensor


def sanitize(params: Tensor, limit: float = 10.0) -> tuple[Tensor, int]:
    """Replace NaN/inf by 0 and clamp to ``[-limit, limit]``; returns the cleaned tensor and how many rows
    had non-finite values (callers warn with the count)."""
    bad_rows = int((~torch.isfinite(params)).any(dim=-1).sum())
    return torch.nan_to_num(params, nan=0.0, posinf=limit, neginf=-limit).clamp(-limit, limit), bad_rows


def face_rotation(camera: Tensor) -> Tensor:
    """Rotation matrices ``Tensor[B, 3, 3]`` (column-vector convention, template space) of ``camera`` ``Tensor[B, 7]``."""
    return so3_exp_map(pose_rotation_vector(camera))


def _soft_bound(value: Tensor) -> Tensor:
    """``2 tanh(x / 2)``: about ``x`` near 0 (slope 1), within (-2, 2), never a zero gradient."""
    return _LOG_RANGE * torch.tanh(value / _LOG_RANGE)


def unbound(log_ratio: Tensor) -> Tensor:
    """Inverse of :func:`_soft_bound`: the camera parameter giving ``log(distance / 4)`` or
    ``log(focal / 3.6)`` = ``log_ratio`` (ratios beyond the bound map to its edge)."""
    return _LOG_RANGE * torch.atanh((log_ratio / _LOG_RANGE).clamp(-0.999, 0.999))


def camera_from_params(camera: Tensor, aspect: Tensor | None = None) -> PerspectiveCameras:
    """PyTorch3D cameras (NDC, square image) for ``camera`` ``Tensor[B, 7]`` (see the module docstring).

    ``aspect`` ``Tensor[B]`` is the width / height of the box each square crop was resampled from; the
    focal lengths become ``f / sqrt(aspect)`` and ``f * sqrt(aspect)`` so a face rendered into the square
    crop is stretched exactly like the photo's face in it.

    Template space has x right, y up, z towards the viewer; PyTorch3D's view space has x left, y up,
    z away from the camera, hence the axis flip below.
    """
    translation_xy = 0.5 * torch.tanh(camera[:, 0:2])
    distance = DEFAULT_DISTANCE * torch.exp(_soft_bound(camera[:, 2]))
    rotation = face_rotation(camera)
    focal = DEFAULT_FOCAL * torch.exp(_soft_bound(camera[:, 6]))
    flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0], device=camera.device, dtype=camera.dtype))
    # PyTorch3D maps row vectors: X_view = X_world @ R + T
    R = rotation.transpose(1, 2) @ flip
    T = torch.stack([-translation_xy[:, 0], translation_xy[:, 1], distance], dim=1)
    focal_xy = focal[:, None].expand(-1, 2)
    if aspect is not None:
        root = aspect.clamp(0.1, 10.0).sqrt()
        focal_xy = torch.stack([focal / root, focal * root], dim=1)
    return PerspectiveCameras(focal_length=focal_xy, R=R, T=T, device=camera.device)


def lights_from_params(illumination: Tensor) -> Lights:
    """:class:`Lights` for ``illumination`` ``Tensor[B, 9]`` (see the module docstring)."""
    default = torch.tensor([0.0, 0.0, 6.0], device=illumination.device, dtype=illumination.dtype)
    return Lights(
        location=default + 4.0 * torch.tanh(illumination[:, 0:3]),
        colour=0.5 * (1 + torch.tanh(illumination[:, 3:6])),
        ambient=0.5 * (1 + torch.tanh(illumination[:, 6:9])),
    )


def project(vertices: Tensor, cameras: PerspectiveCameras) -> Tensor:
    """Template-space ``Tensor[B, V, 3]`` -> ``Tensor[B, V, 3]`` as (x_ndc, y_ndc, view depth)."""
    view = cameras.get_world_to_view_transform().transform_points(vertices)
    depth = view[..., 2:3].clamp(min=1e-3)  # the camera is in front by construction; guard anyway
    focal = cameras.focal_length[:, None, :]
    return torch.cat([view[..., :2] * focal / depth, view[..., 2:3]], dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals ``Tensor[B, V, 3]`` of meshes ``Tensor[B, V, 3]`` sharing ``faces``
    ``Tensor[F, 3]``: PyTorch3D's ``Meshes.verts_normals_padded`` (each face's ``(v2 - v1) x (v0 - v1)``
    added to its three corners, then normalised), without building a ``Meshes`` per call."""
    corners = vertices[:, faces]  # [B, F, 3, 3]
    face_normals = torch.linalg.cross(corners[:, :, 2] - corners[:, :, 1], corners[:, :, 0] - corners[:, :, 1], dim=-1)
    summed = torch.zeros_like(vertices).index_add(1, faces.flatten(), face_normals.repeat_interleave(3, dim=1))
    return torch.nn.functional.normalize(summed, eps=1e-6, dim=-1)


def shade_vertices(vertices: Tensor, faces: Tensor, albedo: Tensor, lights: Lights) -> Tensor:
    """Lambertian per-vertex colours ``Tensor[B, V, 3]`` (area-weighted vertex normals, :func:`vertex_normals`)."""
    normals = vertex_normals(vertices, faces)
    to_light = torch.nn.functional.normalize(lights.location[:, None, :] - vertices, dim=-1)
    lambert = (normals * to_light).sum(-1, keepdim=True).clamp(min=0.0)
    return albedo * (lights.ambient[:, None, :] + lights.colour[:, None, :] * lambert)


def _pixel_coordinates(ndc: Tensor, size: int) -> Tensor:
    """NDC (x left, y up, PyTorch3D) -> continuous (column, row) pixel coordinates, centres at integers."""
    return torch.stack([(1 - ndc[..., 0]) * size / 2 - 0.5, (1 - ndc[..., 1]) * size / 2 - 0.5], dim=-1)


def _planes(tri_xy: Tensor, tri_values: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Each triangle's linear (screen-space barycentric) interpolation of ``tri_values`` ``Tensor[..., 3, C]``
    over its pixel corners ``tri_xy`` ``Tensor[..., 3, 2]``, as ``(origin, value, d_dx, d_dy)``: the value at
    pixel ``p`` is ``value + d_dx * (p_x - origin_x) + d_dy * (p_y - origin_y)`` (``origin`` ``[..., 2]`` is
    the first corner, the others ``[..., C]``). Offsets from a corner keep small triangles far from the crop's
    origin as precise as offsets near it. Degenerate triangles use an area of ``_EPS``."""
    origin = tri_xy[..., 0, :]
    b, c = tri_xy[..., 1, :] - origin, tri_xy[..., 2, :] - origin
    area = b[..., 0] * c[..., 1] - b[..., 1] * c[..., 0]
    area = torch.where(area.abs() < _EPS, torch.full_like(area, _EPS), area)[..., None]
    first = tri_values[..., 0, :]
    d1, d2 = tri_values[..., 1, :] - first, tri_values[..., 2, :] - first
    return origin, first, (d1 * c[..., 1:2] - d2 * b[..., 1:2]) / area, (d2 * b[..., 0:1] - d1 * c[..., 0:1]) / area


@torch.no_grad()
def rasterize_zbuffer(ndc: Tensor, faces: Tensor, size: int) -> Tensor:
    """Nearest triangle per pixel, ``Tensor[B, size, size]`` (int64, -1 for background), by enumerating the
    pixels inside each triangle's bounding box and keeping the smallest interpolated depth."""
    batch = ndc.shape[0]
    num_faces = faces.shape[0]
    corners = ndc[:, faces]  # [B, F, 3, 3]
    tri_xy = _pixel_coordinates(corners, size)  # [B, F, 3, 2]
    tri_z = corners[..., 2]  # [B, F, 3]
    low = tri_xy.amin(dim=2).ceil().clamp(0, size - 1).long()
    high = tri_xy.amax(dim=2).floor().clamp(-1, size - 1).long()
    extent = (high - low + 1).clamp(min=0)
    # per triangle, as planes over the pixels: the barycentric weights of corners 1 and 2, and the depth
    weights = torch.eye(3, dtype=ndc.dtype, device=ndc.device)[1:].T  # [3, 2]: corner -> weight 1, weight 2
    values = torch.cat([weights.expand(*tri_z.shape, 2), tri_z[..., None]], dim=-1)  # [B, F, 3, 3]
    origin, first, d_dx, d_dy = _planes(tri_xy, values)
    raw_area = (tri_xy[..., 1, 0] - tri_xy[..., 0, 0]) * (tri_xy[..., 2, 1] - tri_xy[..., 0, 1]) \
        - (tri_xy[..., 1, 1] - tri_xy[..., 0, 1]) * (tri_xy[..., 2, 0] - tri_xy[..., 0, 0])
    usable = (raw_area.abs() > _EPS) & (tri_z > 0).all(-1) & (extent > 0).all(-1)
    counts = torch.where(usable, extent[..., 0] * extent[..., 1], 0).flatten()
    pix_to_face = torch.full((batch * size * size,), -1, dtype=torch.long, device=ndc.device)
    total = int(counts.sum())
    if total == 0:
        return pix_to_face.view(batch, size, size)
    owner = torch.repeat_interleave(counts)  # the triangle (b * F + f) of each candidate pixel
    boxes = torch.stack([counts.cumsum(0) - counts, extent[..., 0].flatten(), low[..., 0].flatten(), low[..., 1].flatten()], dim=1)
    boxes = boxes.index_select(0, owner)
    offset = torch.arange(total, device=ndc.device) - boxes[:, 0]
    # row and column within the box; float division is exact here (offsets < size^2, widths <= size)
    row = torch.div(offset.to(ndc.dtype), boxes[:, 1].to(ndc.dtype), rounding_mode="floor").long()
    rows, cols = boxes[:, 3] + row, boxes[:, 2] + offset - row * boxes[:, 1]
    plane = torch.cat([origin, first, d_dx, d_dy], dim=-1).flatten(0, 1).index_select(0, owner)  # [P, 11]
    dx, dy = (cols.to(ndc.dtype) - plane[:, 0])[:, None], (rows.to(ndc.dtype) - plane[:, 1])[:, None]
    at = plane[:, 2:5] + plane[:, 5:8] * dx + plane[:, 8:11] * dy  # [P, 3]: weight 1, weight 2, depth
    keep = torch.nonzero((at[:, 0] >= 0) & (at[:, 1] >= 0) & (at[:, 0] + at[:, 1] <= 1)).squeeze(1)
    owner, depth = owner.index_select(0, keep), at[:, 2].index_select(0, keep)
    image = torch.div(owner, num_faces, rounding_mode="floor")
    pixel = image * (size * size) + rows.index_select(0, keep) * size + cols.index_select(0, keep)
    nearest = torch.full((batch * size * size,), float("inf"), device=ndc.device, dtype=depth.dtype)
    nearest.scatter_reduce_(0, pixel, depth, reduce="amin")
    face = torch.where(depth <= nearest.index_select(0, pixel), owner - image * num_faces, -1)
    pix_to_face.scatter_reduce_(0, pixel, face, reduce="amax", include_self=True)
    return pix_to_face.view(batch, size, size)


@torch.no_grad()
def rasterize_pytorch3d(ndc: Tensor, faces: Tensor, size: int) -> Tensor:
    """Same result as :func:`rasterize_zbuffer`, with PyTorch3D's rasteriser (fast on CUDA)."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes

    meshes = Meshes(verts=list(ndc), faces=[faces] * len(ndc))
    pix_to_face, _, _, _ = rasterize_meshes(meshes, image_size=size, blur_radius=0.0, faces_per_pixel=1, perspective_correct=False)
    pix_to_face = pix_to_face[..., 0]
    start = (torch.arange(len(ndc), device=ndc.device) * faces.shape[0]).view(-1, 1, 1)
    return torch.where(pix_to_face >= 0, pix_to_face - start, -1)


def interpolate_covered(ndc: Tensor, faces: Tensor, pix_to_face: Tensor, vertex_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Differentiably interpolate ``vertex_values`` ``Tensor[B, V, C]`` at the covered pixels only: returns
    ``(image_ids, pixel_ids, values)``, ``Tensor[P]`` each and ``Tensor[P, C]``, where ``pixel_ids`` index
    the flattened ``size x size`` image (row-major) and ``values`` are what :func:`interpolate` puts there."""
    batch, size = pix_to_face.shape[0], pix_to_face.shape[-1]
    num_faces = faces.shape[0]
    flat = pix_to_face.flatten()
    covered = torch.nonzero(flat >= 0).squeeze(1)
    image_ids, pixel_ids = covered // (size * size), covered % (size * size)
    # each triangle's linear interpolation (a plane over its pixels), gathered per covered pixel
    origin, first, d_dx, d_dy = _planes(_pixel_coordinates(ndc[:, faces], size), vertex_values[:, faces])
    channels = vertex_values.shape[-1]
    plane = torch.cat([origin, first, d_dx, d_dy], dim=-1).flatten(0, 1)[image_ids * num_faces + flat[covered]]
    dx = ((pixel_ids % size).to(plane.dtype) - plane[:, 0])[:, None]
    dy = ((pixel_ids // size).to(plane.dtype) - plane[:, 1])[:, None]
    values = plane[:, 2 : 2 + channels] + plane[:, 2 + channels : 2 + 2 * channels] * dx + plane[:, 2 + 2 * channels :] * dy
    return image_ids, pixel_ids, values


def interpolate(ndc: Tensor, faces: Tensor, pix_to_face: Tensor, vertex_values: Tensor) -> tuple[Tensor, Tensor]:
    """Differentiably interpolate ``vertex_values`` ``Tensor[B, V, C]`` over covered pixels.

    Returns ``image`` ``Tensor[B, C, S, S]`` (0 where uncovered) and ``mask`` ``Tensor[B, 1, S, S]``.
    """
    batch, size = pix_to_face.shape[0], pix_to_face.shape[-1]
    image_ids, pixel_ids, values = interpolate_covered(ndc, faces, pix_to_face, vertex_values)
    image = vertex_values.new_zeros((batch, size * size, vertex_values.shape[-1]))
    image = image.index_put((image_ids, pixel_ids), values)
    return image.view(batch, size, size, -1).permute(0, 3, 1, 2), (pix_to_face >= 0)[:, None].to(vertex_values.dtype)


class RenderedFaces(NamedTuple):
    """``image`` ``Tensor[B, 3, S, S]`` RGB (0 outside the face), ``mask`` ``Tensor[B, 1, S, S]``,
    ``ndc`` ``Tensor[B, V, 3]`` projected vertices (x, y in NDC; view depth)."""

    image: Tensor
    mask: Tensor
    ndc: Tensor


def render(
    vertices: Tensor,
    colours: Tensor,
    faces: Tensor,
    camera: Tensor,
    illumination: Tensor,
    *,
    image_size: int = 112,
    aspect: Tensor | None = None,
) -> RenderedFaces:
    """Render ``B`` meshes (``vertices``/``colours`` ``Tensor[B, V, 3]``, shared ``faces`` ``Tensor[F, 3]``)
    with per-face ``camera`` ``Tensor[B, 7]`` and ``illumination`` ``Tensor[B, 9]`` into square images
    (``aspect``: see :func:`camera_from_params`)."""
    cameras = camera_from_params(camera, aspect)
    ndc = project(vertices, cameras)
    lit = shade_vertices(vertices, faces, colours, lights_from_params(illumination))
    raster = rasterize_pytorch3d if vertices.is_cuda else rasterize_zbuffer
    pix_to_face = raster(ndc.detach(), faces, image_size)
    image, mask = interpolate(ndc, faces, pix_to_face, lit)
    return RenderedFaces(image, mask, ndc)
