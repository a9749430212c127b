"""Fit 3D face meshes to the faces of a real photo (analysis by synthesis), all faces of an image at once.

Per face we optimise the face-shape prior's coefficients (mesh/prior.py: identity ~ N(0, 1), expression in
[0, 1]; they are the first entries of the mesh decoder's latent), the head rotation, the face's image
position and scale, and the light (the renderer's 9 illumination parameters). The objective is

    pixel_weight * L1(render, crop) over covered pixels / (W H)         (the RetinaFace paper's pixel loss)
  + landmark_weight * mean_l |project(landmark_l) - detected_l|^2 / box_size^2     (the five detector points)
  + identity_weight * mean(alpha^2) + expression_weight * mean(e)            (Gaussian / sparse priors)

The camera is a pinhole whose focal length is the renderer's default (3.6 NDC units of the face box, i.e.
``3.6 * sqrt(w h) / 2`` pixels) with the principal point at the box centre, so a fit converts exactly into
the detector's 144 mesh coefficients (:func:`renderer_coefficients`). It starts from a PnP pose of the five
landmarks against the prior's mean face (or from ``init``, a previous fit of the same face, e.g. the
previous video frame: its shape and light, posed again by PnP on this frame's landmarks), then runs Adam
for ``steps`` iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pytorch3d.transforms import axis_angle_to_matrix, matrix_to_axis_angle
from torch import Tensor
from torchvision.ops import roi_align

from .prior import FacePrior, load_prior
from .renderer import DEFAULT_DISTANCE, DEFAULT_FOCAL, interpolate_covered, lights_from_params, rasterize_zbuffer, shade_vertices, unbound
from .template import FaceTemplate, load_template

_FLIP = (1.0, -1.0, -1.0)  # model frame (y up, z to the camera) -> OpenCV camera axes (y down, z away)


@dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit_faces` (defaults: about 0.1-0.3 s per face on 2 CPU cores, see the README).

    - ``steps``: Adam iterations from a PnP start; ``warm_steps``: iterations when ``init`` is given
    - ``crop_size``: side of the square crop (pixels) each face is rendered into and compared with
    - ``crop_scale``: the crop is the face box enlarged by this factor about its centre (forehead and chin)
    - ``landmark_weight``, ``pixel_weight``, ``identity_weight``, ``expression_weight``: objective weights
      (the priors are strong on purpose: five landmarks and a small crop say little about a face's shape)
    - ``lr``: Adam step for rotation (radians) and log-scale; ``shape_lr_scale`` times it for the coefficients
      (Adam moves each of the 115 coefficients by about its step whatever the size of its gradient, so full
      steps walk the shape away from the mean face on weak evidence: on rendered prior faces with exact shape
      truth, scale 1 (with the landmarks on the shape too) left the fit farther from the truth than the mean
      face on 25 of 30 faces, 0.05 on none by more than 0.03 % of the face height; docs/mesh.md); warm
      starts use ``warm_lr_scale`` times these (full steps would shake a still face from frame to frame)
    - ``landmarks_move_shape``: whether the landmark term pulls on the shape coefficients too. Off by default:
      the detector's five points are where a detector puts them, not the mesh's landmark vertices (they sit
      at other depths, docs/mesh.md#head-pose), so matching them by shape bends a correct face; they place
      the head (rotation, position, scale) and the pixel term shapes it
    - ``min_face_size``: boxes with a shorter side (pixels) are not fitted (``valid`` is False)
    - ``focal``: focal length in the renderer's NDC units of the face box (3.6 = the renderer's default, a
      camera about two face heights away; 10 is closer to photos of people a few metres away)
    """

    steps: int = 20
    warm_steps: int = 2
    crop_size: int = 64
    crop_scale: float = 1.25
    lr: float = 0.03
    landmark_weight: float = 400.0
    pixel_weight: float = 1.0
    identity_weight: float = 0.5
    expression_weight: float = 0.2
    min_face_size: float = 10.0
    focal: float = 10.0
    shape_lr_scale: float = 0.05
    warm_lr_scale: float = 0.2
    landmarks_move_shape: bool = False


class FitState(NamedTuple):
    """What a fit needs to warm-start the next one, per face: ``coefficients`` ``Tensor[K, I + E]``,
    ``rotation`` ``Tensor[K, 3]`` (axis-angle, model frame), ``centre`` ``Tensor[K, 2]`` (image pixels of
    the model origin), ``scale`` ``Tensor[K]`` (pixels per template unit at the model origin's depth),
    ``illumination`` ``Tensor[K, 9]``."""

    coefficients: Tensor
    rotation: Tensor
    centre: Tensor
    scale: Tensor
    illumination: Tensor

    def index(self, rows: Tensor | list[int]) -> "FitState":
        return FitState(*(t[rows] for t in self))


class FaceFits(NamedTuple):
    """Result of :func:`fit_faces` for ``K`` faces (rows follow the input boxes).

    - ``vertices`` ``Tensor[K, V, 3]``: x, y in image pixels; z: depth in pixels relative to the model
      origin (positive away from the camera), in the template's vertex order
    - ``model_vertices`` ``Tensor[K, V, 3]``: the fitted shape in the prior's model frame (template units)
    - ``colours`` ``Tensor[K, V, 3]``: the model's albedo, RGB in [0, 1] (the template's colours; the prior
      has no texture model). :func:`sample_colours` gives the photo's colours at the vertices instead
    - ``rotation`` ``Tensor[K, 3, 3]``: head rotation in the model frame (column vectors)
    - ``state``: :class:`FitState`, to warm-start the same faces in the next frame
    - ``pixel_residual`` ``Tensor[K]``: mean L1 (per RGB channel, 0-1 scale) over the covered crop pixels, of
      the last step's render (the fit one Adam step before the returned one; the start itself with no step)
    - ``landmark_residual`` ``Tensor[K]``: mean distance (pixels) between the detected and fitted landmarks
    - ``valid`` ``Tensor[K]`` bool: False for faces not fitted (non-finite input, box too small); their
      other fields are zeros and must not be used
    """

    vertices: Tensor
    model_vertices: Tensor
    colours: Tensor
    rotation: Tensor
    state: FitState
    pixel_residual: Tensor
    landmark_residual: Tensor
    valid: Tensor


def focal_pixels(boxes: Tensor, focal: float = DEFAULT_FOCAL) -> Tensor:
    """Focal length ``Tensor[K]`` in pixels of the renderer's camera with ``focal`` (NDC units) for crops at ``boxes``."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return focal * (widths * heights).clamp(min=1e-6).sqrt() / 2


def project(model_vertices: Tensor, rotation: Tensor, centre: Tensor, scale: Tensor, focal: Tensor, principal: Tensor) -> Tensor:
    """Pinhole projection ``Tensor[K, V, 3]`` (x, y pixels; z camera depth in template units, > 0) of
    ``model_vertices`` ``Tensor[K, V, 3]`` rotated by ``rotation`` ``Tensor[K, 3, 3]``, for a camera with
    ``focal`` ``Tensor[K]`` pixels and ``principal`` point ``Tensor[K, 2]``, the model origin placed to appear
    at image point ``centre`` ``Tensor[K, 2]`` with ``scale`` ``Tensor[K]`` pixels per template unit there."""
    flip = model_vertices.new_tensor(_FLIP)
    camera_points = (model_vertices @ rotation.transpose(1, 2)) * flip
    distance = (focal / scale)[:, None]
    shift = (centre - principal) / scale[:, None]  # the origin's x, y in the camera frame (template units)
    depth = (camera_points[..., 2] + distance).clamp(min=1e-3 * distance)
    ratio = focal[:, None] / depth
    x = principal[:, None, 0] + (camera_points[..., 0] + shift[:, None, 0]) * ratio
    y = principal[:, None, 1] + (camera_points[..., 1] + shift[:, None, 1]) * ratio
    return torch.stack([x, y, depth], dim=-1)


def _pnp_start(model_landmarks: np.ndarray, landmarks: np.ndarray, box: np.ndarray, focal: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation vector (model frame), image centre and scale of the model origin for one face: PnP of the
    five landmarks (camera at the box centre with the fitting focal length), else a frontal guess."""
    import cv2

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    size = math.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1e-6))
    frontal = (np.zeros(3), np.array([cx, cy]), size / 2.0)  # the prior mean is ~2 units tall
    obj = model_landmarks * np.array(_FLIP)
    camera = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, landmarks.astype(np.float64), camera, None, flags=cv2.SOLVEPNP_SQPNP)
        if ok:
            rvec, tvec = cv2.solvePnPRefineLM(obj, landmarks.astype(np.float64), camera, None, rvec, tvec)
    except cv2.error:
        return frontal
    if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2, 0] <= 0:
        return frontal
    flip = np.diag(_FLIP)
    rotation = flip @ cv2.Rodrigues(rvec)[0] @ flip  # camera-frame rotation expressed in the model frame
    if rotation[2, 2] < 0.2 or np.degrees(np.arccos(np.clip(rotation[2, 2], -1, 1))) > 80:  # facing away / implausible
        return frontal
    centre = np.array([cx + focal * tvec[0, 0] / tvec[2, 0], cy + focal * tvec[1, 0] / tvec[2, 0]])
    axis_angle = cv2.Rodrigues(rotation)[0][:, 0]
    return axis_angle, centre, focal / tvec[2, 0]


def initial_state(
    prior: FacePrior, template: FaceTemplate, boxes: Tensor, landmarks: Tensor, focal: float = DEFAULT_FOCAL,
    coefficients: Tensor | None = None,
) -> FitState:
    """PnP start (see :func:`_pnp_start`) for every face, default light: the pose of the shape given by the
    prior ``coefficients`` ``Tensor[K, I + E]`` (default: zeros, the mean face)."""
    k = boxes.shape[0]
    if coefficients is None:
        coefficients = torch.zeros(k, prior.num_coefficients)
    shapes = prior.shapes(coefficients.float()) if k else prior.mean[None].expand(0, -1, -1)
    model_landmarks = template.landmarks(shapes).double().numpy()
    focal = focal_pixels(boxes, focal).double().numpy()
    starts = [_pnp_start(model, lm, box, f) for model, lm, box, f in zip(model_landmarks, landmarks.double().numpy(), boxes.double().numpy(), focal)]
    return FitState(
        coefficients=coefficients.float().clone(),
        rotation=torch.tensor(np.array([s[0] for s in starts]).reshape(k, 3), dtype=torch.float32),
        centre=torch.tensor(np.array([s[1] for s in starts]).reshape(k, 2), dtype=torch.float32),
        scale=torch.tensor([s[2] for s in starts], dtype=torch.float32),
        illumination=torch.zeros(k, 9),
    )


def _to_ndc(points: Tensor, crop_boxes: Tensor) -> Tensor:
    """Image pixels -> the renderer's NDC of each crop (x left, y up), keeping the depth."""
    x1, y1, x2, y2 = crop_boxes.unbind(-1)
    x = 1 - 2 * (points[..., 0] - x1[:, None]) / (x2 - x1)[:, None]
    y = 1 - 2 * (points[..., 1] - y1[:, None]) / (y2 - y1)[:, None]
    return torch.stack([x, y, points[..., 2]], dim=-1)


def fit_faces(
    image_rgb: Tensor,
    boxes: Tensor,
    landmarks: Tensor,
    *,
    config: FitConfig = FitConfig(),
    init: FitState | None = None,
    start: FitState | None = None,
    steps: int | None = None,
    prior: FacePrior | None = None,
    template: FaceTemplate | None = None,
) -> FaceFits:
    """Fit every face of one image.

    - ``image_rgb``: ``Tensor[3, H, W]`` RGB, float in [0, 1] or uint8 (0-255; e.g. a video frame's
      ``torch.from_numpy(rgb).permute(2, 0, 1)``: only the faces' region is then converted to float)
    - ``boxes``: ``Tensor[K, 4]`` x1 y1 x2 y2 pixels; ``landmarks``: ``Tensor[K, 5, 2]`` (detector order)
    - ``init``: :class:`FitState` for the same ``K`` faces (e.g. the previous frame's fit): their shape and
      light are kept and their pose is solved again by PnP of ``landmarks`` with that shape; its rows with
      non-finite values start from the mean face instead. ``steps`` overrides ``config.steps`` / ``config.warm_steps``.
    - ``start``: :class:`FitState` for the same ``K`` faces to start from as it is, pose included, instead of
      the PnP start (e.g. the detector's own mesh: :func:`retinaface.mesh.head_start.state_from_coefficients`);
      a cold start (``config.steps``, full steps). Not together with ``init``.
    """
    if init is not None and start is not None:
        raise ValueError("give init (a previous fit to warm-start from) or start (a state to begin at), not both")
    prior = prior or load_prior()
    template = template or load_template()
    boxes, landmarks = boxes.detach().float().cpu(), landmarks.detach().float().cpu().reshape(-1, 5, 2)
    image_rgb = image_rgb.detach().cpu()
    if image_rgb.dtype != torch.uint8:
        image_rgb = image_rgb.float()
    count, num_vertices = boxes.shape[0], prior.mean.shape[0]
    sizes = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    valid = torch.isfinite(boxes).all(1) & torch.isfinite(landmarks).flatten(1).all(1) & (sizes >= config.min_face_size)
    fits = _empty(count, num_vertices, prior.num_coefficients, valid)
    rows = torch.nonzero(valid).squeeze(1)
    if rows.numel() == 0:
        return fits
    boxes_v, landmarks_v = boxes[rows], landmarks[rows]
    if start is not None:
        state = start.index(rows)
    elif init is None:
        state = initial_state(prior, template, boxes_v, landmarks_v, config.focal)
    else:
        # shape and light carry over from the previous fit; the pose is solved again from this frame's
        # landmarks (with the previous shape), so the mesh follows a moving face at once
        warm = init.index(rows)
        usable = torch.stack([torch.isfinite(t.flatten(1) if t.dim() > 1 else t[:, None]).all(1) for t in warm]).all(0)
        coefficients = torch.where(usable[:, None], warm.coefficients.float(), 0.0)
        state = initial_state(prior, template, boxes_v, landmarks_v, config.focal, coefficients=coefficients)
        state = state._replace(illumination=torch.where(usable[:, None], warm.illumination.float(), state.illumination))
    steps = steps if steps is not None else (config.warm_steps if init is not None else config.steps)
    lr = config.lr * (config.warm_lr_scale if init is not None else 1.0)
    result = _optimise(image_rgb, boxes_v, landmarks_v, state, steps, config, prior, template, lr)
    for field, values in zip(FaceFits._fields, result):
        if field == "state":
            for tensor, value in zip(fits.state, values):
                tensor[rows] = value
        else:
            getattr(fits, field)[rows] = values
    return fits


def _empty(count: int, num_vertices: int, num_coefficients: int, valid: Tensor) -> FaceFits:
    zeros = torch.zeros
    state = FitState(zeros(count, num_coefficients), zeros(count, 3), zeros(count, 2), zeros(count), zeros(count, 9))
    return FaceFits(
        zeros(count, num_vertices, 3), zeros(count, num_vertices, 3), zeros(count, num_vertices, 3),
        torch.eye(3).repeat(count, 1, 1), state, zeros(count), zeros(count), valid,
    )


class _Constants(NamedTuple):
    """What every fit with one prior and template uses: the stacked shape basis ``Tensor[I + E, V * 3]``, the
    rendered triangles ``Tensor[F, 3]`` (surface and openings) and the template colours ``Tensor[V, 3]``."""

    basis: Tensor
    faces: Tensor
    colours: Tensor


_CONSTANTS: dict[tuple[int, int], tuple[FacePrior, FaceTemplate, _Constants]] = {}


def _constants(prior: FacePrior, template: FaceTemplate) -> _Constants:
    """:class:`_Constants` of ``prior`` and ``template``, built once per pair (the pair is kept alive with them,
    so the ids cannot be reused by other objects while cached)."""
    key = (id(prior), id(template))
    if key not in _CONSTANTS:
        if len(_CONSTANTS) >= 4:
            _CONSTANTS.pop(next(iter(_CONSTANTS)))
        basis = torch.cat([prior.identity, prior.expression]).flatten(1)
        _CONSTANTS[key] = (prior, template, _Constants(basis, template.render_faces, template.colours))
    return _CONSTANTS[key][2]


def _crops(image_rgb: Tensor, crop_boxes: Tensor, size: int) -> Tensor:
    """``Tensor[K, 3, size, size]``: bilinear samples (RoI Align, 2 x 2 per output pixel) of ``image_rgb`` (float
    in [0, 1], or uint8 0-255) in ``crop_boxes``, in [0, 1]. Only the part of the image under the boxes (and a
    pixel around it) is read and converted: RoI Align would otherwise copy the whole frame on every call."""
    height, width = image_rgb.shape[-2:]
    low = crop_boxes[:, :2].amin(0).floor() - 2
    high = crop_boxes[:, 2:].amax(0).ceil() + 2
    x0, y0 = int(low[0].clamp(0, width - 1)), int(low[1].clamp(0, height - 1))
    x1, y1 = int(high[0].clamp(x0 + 1, width)), int(high[1].clamp(y0 + 1, height))
    region = image_rgb[:, y0:y1, x0:x1]
    region = region.float() / 255 if region.dtype == torch.uint8 else region.contiguous()
    if (x0, y0, x1, y1) != (0, 0, width, height):
        # a region edge inside the image is at least 2 pixels from every sample, so RoI Align's border rule
        # (clamping to the edge) applies at the image's own edges only, exactly as on the whole image
        crop_boxes = crop_boxes - crop_boxes.new_tensor([x0, y0, x0, y0])
    rois = torch.cat([torch.zeros(len(crop_boxes), 1), crop_boxes], 1)
    return roi_align(region[None], rois, output_size=size, sampling_ratio=2, aligned=True)


def _optimise(image_rgb, boxes, landmarks, state, steps, config, prior, template, lr):
    count = boxes.shape[0]
    size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    focal = focal_pixels(boxes, config.focal)
    centre_xy = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * config.crop_scale / 2
    crop_boxes = torch.cat([centre_xy - half, centre_xy + half], dim=1)
    pixels = config.crop_size * config.crop_size
    # the crops as [K * S * S, 3] rows, to compare with the rendered colours of the covered pixels only
    crops = _crops(image_rgb, crop_boxes, config.crop_size).flatten(2).transpose(1, 2).reshape(count * pixels, 3)
    constants = _constants(prior, template)
    faces, basis = constants.faces, constants.basis
    albedo = constants.colours.expand(count, -1, -1)
    num_identity = prior.num_identity
    landmark_weights = template.landmark_weights

    # Variables, scaled so that one Adam step moves each by a similar visible amount.
    coefficients = state.coefficients.clone().requires_grad_(True)
    rotation = state.rotation.clone().requires_grad_(True)
    offset = ((state.centre - centre_xy) / size[:, None]).clone().requires_grad_(True)
    log_scale = (state.scale / size).log().clone().requires_grad_(True)
    illumination = state.illumination.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([
        {"params": [coefficients], "lr": lr * config.shape_lr_scale},
        {"params": [rotation, log_scale], "lr": lr},
        {"params": [offset], "lr": lr / 3},
        {"params": [illumination], "lr": lr * 5},
    ], foreach=True)  # one multi-tensor update instead of a dozen small operations per parameter

    def evaluate():
        shape = prior.mean + (coefficients @ basis).view(count, -1, 3)
        rot = axis_angle_to_matrix(rotation)  # what so3_exp_map returns, without its unused extras
        points = project(shape, rot, centre_xy + offset * size[:, None], log_scale.exp() * size, focal, centre_xy)
        return shape, rot, points

    def rendered_difference(shape, points):
        """Per covered crop pixel: its face and the L1 difference (summed over RGB) of render and crop."""
        ndc = _to_ndc(points, crop_boxes)
        lit = shade_vertices(shape, faces, albedo, lights_from_params(illumination))
        pix_to_face = rasterize_zbuffer(ndc.detach(), faces, config.crop_size)
        image_ids, pixel_ids, colours = interpolate_covered(ndc, faces, pix_to_face, lit)
        return image_ids, (colours - crops.index_select(0, image_ids * pixels + pixel_ids)).abs().sum(1)

    # the vertices the five landmarks are made of (35 of 468), to project them apart with the shape held
    landmark_vertices = torch.nonzero(landmark_weights.abs().sum(0) > 0).squeeze(1)
    landmark_columns = landmark_weights[:, landmark_vertices]

    def projected_landmarks(shape, rot, points):
        if config.landmarks_move_shape:
            return torch.einsum("lv,kvc->klc", landmark_weights, points[..., :2])
        held = project(shape.detach()[:, landmark_vertices], rot, centre_xy + offset * size[:, None], log_scale.exp() * size, focal, centre_xy)
        return torch.einsum("lv,kvc->klc", landmark_columns, held[..., :2])

    def losses(shape, rot, points):
        projected = projected_landmarks(shape, rot, points)
        landmark = ((projected - landmarks).square().sum(-1).mean(1) / size.square())
        prior_term = config.identity_weight * coefficients[:, :num_identity].square().mean(1) \
            + config.expression_weight * coefficients[:, num_identity:].abs().mean(1)
        image_ids, difference = rendered_difference(shape, points)
        pixel = torch.zeros(count).index_add(0, image_ids, difference) / pixels  # mean over the crop's pixels
        return config.landmark_weight * landmark + config.pixel_weight * pixel + prior_term, (image_ids, difference.detach())

    last_render = None
    for step in range(steps):
        shape, rot, points = evaluate()
        total, last_render = losses(shape, rot, points)
        optimiser.zero_grad()
        total.sum().backward()
        optimiser.step()
        with torch.no_grad():  # expression weights live in [0, 1]; keep the pose within sane bounds
            coefficients[:, num_identity:].clamp_(0.0, 1.0)
            coefficients[:, :num_identity].clamp_(-4.0, 4.0)
            log_scale.clamp_(math.log(0.05), math.log(5.0))

    with torch.no_grad():
        shape, rot, points = evaluate()
        # the pixel residual of the last render, the last step's (one Adam step before the returned fit): a render
        # for the residual alone would add 50 % to a warm-started fit's rendering (two steps). No step: the start's
        image_ids, difference = last_render if last_render is not None else rendered_difference(shape, points)
        covered = torch.bincount(image_ids, minlength=count).clamp(min=1)
        pixel_residual = torch.zeros(count).index_add(0, image_ids, difference / 3) / covered  # mean over RGB and covered pixels
        projected = torch.einsum("lv,kvc->klc", landmark_weights, points[..., :2])
        landmark_residual = (projected - landmarks).norm(dim=-1).mean(1)
        distance = focal / (log_scale.exp() * size)
        depth_pixels = (points[..., 2] - distance[:, None]) * (log_scale.exp() * size)[:, None]
        vertices = torch.cat([points[..., :2], depth_pixels[..., None]], dim=-1)
        colours = albedo.clone()
        state = FitState(coefficients.detach().clone(), rotation.detach().clone(), (centre_xy + offset * size[:, None]).detach(),
                         (log_scale.exp() * size).detach(), illumination.detach().clone())
    return vertices, shape, colours, rot, state, pixel_residual, landmark_residual, torch.ones(count, dtype=torch.bool)


def sample_colours(image_rgb: Tensor, points: Tensor) -> Tensor:
    """Bilinear RGB ``Tensor[K, V, 3]`` of ``image_rgb`` ``Tensor[3, H, W]`` at pixel ``points`` ``Tensor[K, V, 2]``."""
    height, width = image_rgb.shape[-2:]
    grid = torch.stack([(points[..., 0] + 0.5) / width * 2 - 1, (points[..., 1] + 0.5) / height * 2 - 1], dim=-1)
    sampled = F.grid_sample(image_rgb[None].expand(1, -1, -1, -1), grid.reshape(1, -1, 1, 2), align_corners=False, padding_mode="border")
    return sampled[0, :, :, 0].T.reshape(points.shape[0], points.shape[1], 3)


def renderer_coefficients(fits: FaceFits, boxes: Tensor, *, focal: float = FitConfig.focal, latent_dim: int = 128) -> Tensor:
    """The fits as the detector's ``Tensor[K, 144]`` mesh coefficients (latent = prior coefficients padded
    with zeros, camera in the renderer's bounded parameterisation for crops at ``boxes``, illumination), so the
    mesh branch (with the prior-trained decoder) renders them. Translations beyond the renderer's bounds
    (half a template unit, 90 degrees per rotation axis) are clipped."""
    boxes = boxes.float()
    focal_ndc, focal = focal, focal_pixels(boxes, focal)
    centre_xy = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = focal / fits.state.scale.clamp(min=1e-6)
    offset = (fits.state.centre - centre_xy) / fits.state.scale.clamp(min=1e-6)[:, None]  # camera frame, template units
    limit = 0.999
    camera = torch.cat([
        torch.atanh((offset[:, 0:1] / 0.5).clamp(-limit, limit)),
        torch.atanh((-offset[:, 1:2] / 0.5).clamp(-limit, limit)),
        unbound((distance[:, None] / DEFAULT_DISTANCE).log()),
        torch.atanh((matrix_to_axis_angle(fits.rotation) / (math.pi / 2)).clamp(-limit, limit)),
        unbound(torch.full((len(boxes), 1), math.log(focal_ndc / DEFAULT_FOCAL))),
    ], dim=1)
    latent = F.pad(fits.state.coefficients, (0, latent_dim - fits.state.coefficients.shape[1]))
    return torch.cat([latent, camera, fits.state.illumination], dim=1)
