"""Hallucinated faces: activation maximisation of one output of the detector, starting from noise.

Gradient ascent on the input pixels until a chosen output responds strongly shows what the network has
learned to look for. Two kinds of :class:`Target`:

- the face score (``softmax`` face probability of the classification head) of the anchor at the centre
  location of one pyramid level; the ascent climbs its logit, ``log(p / (1 - p))``, which has the same
  maximiser but no vanishing gradient near 0 and 1;
- one channel of an internal feature map (a backbone stage, the FPN or an SSH context module) at the centre
  location of that map.

Every step looks at a randomly transformed view of the image (rotation, horizontal flip, shift: one
``grid_sample`` whose gradient autograd maps back onto the untransformed pixels), so that what emerges
does not depend on one exact pixel grid; the pixels stay in the 0-255 range the model expects.

Images are ``Tensor[N, 3, H, W]`` float BGR 0-255 inside, ``ndarray[H, W, 3]`` uint8 BGR outside (as
OpenCV reads and writes them). All defaults live in :class:`HallucinationConfig`.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..utils.threads import torch_threads
from ..model.retinaface import RetinaFace

PYRAMID_MODULES = ("backbone", "fpn", "context")
"""Modules whose feature maps are addressed by level: ``backbone.L`` and ``fpn.L`` (the ``L``-th of the
module's outputs) and ``context.L`` (the SSH module of level ``L``)."""


@dataclass(frozen=True)
class HallucinationConfig:
    """Settings of one hallucination run; every default of ``retinaface hallucinate`` is read from here."""

    size: int = 128
    """Side of the square images, pixels."""
    steps: int = 128
    """Gradient steps per image. The face score needs fewer (in a trial at 64 steps all 20 images scored
    above 0.999); 128 give crisper pictures, and 20 images still take well under two minutes on two CPU
    cores (docs/hallucinations.md)."""
    runs: int = 8
    """Images per target, each from its own seed (``seed``, ``seed + 1``, ...)."""
    seed: int = 0
    level: int = 1
    """Pyramid level of the score target (1: stride 16, anchors of 64 and 128 px: a face filling half of a
    128 px image)."""
    anchor: int = 0
    """Anchor slot of the score target at its location (0: the smallest anchor size of the level)."""
    minimize: bool = False
    """Descend instead of ascend: what the output responds to least."""
    learning_rate: float = 2.0
    """Root mean square change of an image per step, in grey levels (0-255): the step is the gradient
    divided by its RMS over the image (:func:`normalised`), so pixels the target is indifferent to stay near
    their start instead of being amplified into noise as a per-pixel optimiser such as Adam would."""
    noise_std: float = 8.0
    """Standard deviation (grey levels) of the Gaussian noise around the model's mean colour that each image
    starts from."""
    max_rotation_deg: float = 30.0
    """Each step rotates the view by a uniform random angle in ``[-max_rotation_deg, max_rotation_deg]``."""
    flip: bool = True
    """Each step mirrors the view left-right with probability 1/2."""
    max_shift: int = 4
    """Each step shifts the view by a uniform random integer in ``[-max_shift, max_shift]`` pixels per axis."""
    batch_size: int = 20
    """Images optimised together (one network pass per step for all of them)."""
    columns: int | None = None
    """Images per row of the contact sheets (``None``: about as many rows as columns)."""
    threads: int | None = 1
    """PyTorch CPU threads (``None``: PyTorch's default, one per core). One, because the convolutions of a
    few 128 px images are too small to share well between threads that wait for each other: on the busy
    2-core machine of docs/hallucinations.md a step for 20 images took 0.14 s with one thread and 0.6 s with
    two, and a face's mesh fit (``--mesh``) 0.4 s against 4.5 s."""


@dataclass(frozen=True)
class Target:
    """What to maximise: the face score of an anchor, or one channel of a feature map.

    ``layer`` is ``None`` for the score (then ``level`` and ``anchor`` say which anchor), else a layer name
    (see :func:`layer_names`) with ``channel``.
    """

    layer: str | None = None
    channel: int = 0
    level: int = HallucinationConfig.level
    anchor: int = HallucinationConfig.anchor

    @property
    def is_score(self) -> bool:
        return self.layer is None

    @property
    def name(self) -> str:
        """The target as given on the command line: ``score`` or ``LAYER:CHANNEL``."""
        return "score" if self.is_score else f"{self.layer}:{self.channel}"

    def slug(self, minimize: bool = False) -> str:
        """File-name form: ``score-level1-anchor0``, ``context.1-c5``; ``-min`` appended for descents."""
        base = f"score-level{self.level}-anchor{self.anchor}" if self.is_score else f"{self.layer}-c{self.channel}"
        return base + ("-min" if minimize else "")

    @property
    def value_name(self) -> str:
        """What :meth:`TargetReader.value` reports for this target."""
        return "face probability" if self.is_score else "activation"


def parse_target(text: str, *, level: int = HallucinationConfig.level, anchor: int = HallucinationConfig.anchor) -> Target:
    """``"score"`` or ``"LAYER:CHANNEL"`` as a :class:`Target` (``InputError`` for another form; whether the
    layer and channel exist is checked by :func:`check_target`)."""
    text = text.strip()
    if text == "score":
        return Target(level=level, anchor=anchor)
    layer, colon, channel = text.rpartition(":")
    if not colon or not layer or not re.fullmatch(r"\d+", channel):
        raise InputError(f"target {text!r} is neither 'score' nor LAYER:CHANNEL with a channel number (e.g. context.1:5)")
    return Target(layer=layer, channel=int(channel))


# --- reading a target from the network --------------------------------------------------------------


class _Captured(Exception):
    """Raised by a forward hook to stop the network once the wanted feature map is computed."""


def _pick_output(output: object, index: int | None) -> object:
    """``output`` itself (``index`` ``None``) or its ``index``-th element (list, tuple or dict values)."""
    if index is None:
        return output
    items = list(output.values()) if isinstance(output, dict) else output
    if not isinstance(items, (list, tuple)) or not 0 <= index < len(items):
        return None
    return items[index]


def _layer_address(model: nn.Module, layer: str) -> tuple[str, int | None] | None:
    """``(module name, output index)`` that ``layer`` names: a module of ``model.named_modules()`` itself
    (index ``None``), or ``PARENT.K``, the ``K``-th output of a module returning several; ``None`` if neither."""
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return layer, None
    parent, dot, index = layer.rpartition(".")
    if dot and parent in modules and index.isdigit():
        return parent, int(index)
    return None


def layer_names(model: RetinaFace) -> list[str]:
    """The feature maps addressed by pyramid level (``backbone.0``, ..., ``fpn.0``, ..., ``context.0``, ...);
    any module name of ``model.named_modules()`` whose output is one feature map is accepted too."""
    levels = len(model.anchor_generator.strides)
    return [f"{module}.{level}" for module in PYRAMID_MODULES for level in range(levels)]


@contextlib.contextmanager
def captured_output(model: nn.Module, layer: str, *, stop: bool = False) -> Iterator[dict[str, object]]:
    """Within the block, each forward of ``model`` stores ``layer``'s output in the yielded dict's
    ``"output"`` (``None`` when ``layer`` does not address an output). ``stop=True`` ends the forward right
    there (raising ``_Captured``, which the caller catches): nothing after the layer is computed."""
    address = _layer_address(model, layer)
    store: dict[str, object] = {"output": None}
    if address is None:
        yield store
        return
    module_name, index = address

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        store["output"] = _pick_output(output, index)
        if stop:
            raise _Captured

    handle = dict(model.named_modules())[module_name].register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def network_input(model: RetinaFace, images: Tensor) -> Tensor:
    """``images`` ``Tensor[N, 3, H, W]`` BGR 0-255 as the network's input, differentiably.

    The model's :class:`~retinaface.transform.ImagePreprocessor` resizes images beyond its ``max_size`` and
    subtracts its BGR mean in place (not differentiable); for same-size images it does not resize, its
    result is ``images - pixel_mean``, which is what this returns. ``InputError`` for a size it would resize.
    """
    height, width = images.shape[-2:]
    if model.preprocessor.scale_for(height, width) != 1.0:
        raise InputError(f"{width}x{height} images are resized by the model (max_size {model.preprocessor.max_size}); use a smaller --size")
    return images - model.preprocessor.pixel_mean


def feature_maps(model: RetinaFace, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor | None]:
    """The output of each of ``layers`` for ``images`` (``Tensor[N, 3, H, W]`` BGR 0-255), ``None`` for a
    name that addresses no single ``Tensor[N, C, h, w]``; one full forward pass."""
    with contextlib.ExitStack() as stack:
        stores = {layer: stack.enter_context(captured_output(model, layer)) for layer in layers}
        model.head_outputs(network_input(model, images), dense_mesh=False)
    found = {}
    for layer, store in stores.items():
        output = store["output"]
        found[layer] = output if isinstance(output, Tensor) and output.dim() == 4 else None
    return found


def centre_anchor_index(model: RetinaFace, height: int, width: int, level: int, anchor: int) -> int:
    """Index into the ``A`` anchors of a ``height x width`` input of anchor slot ``anchor`` at the centre
    location ``(h // 2, w // 2)`` of pyramid level ``level`` (feature map ``h x w``).

    Anchors are ordered level, row, column, slot (:class:`~retinaface.anchors.AnchorGenerator`), so the
    index is ``sum(h_l * w_l for l < level) * S + (row * w + column) * S + anchor`` with ``S`` slots per location.
    """
    shapes = model.anchor_generator.feature_shapes(height, width)
    slots = model.anchor_generator.num_anchors_per_location
    rows, columns = shapes[level]
    before = sum(h * w for h, w in shapes[:level]) * slots
    return before + ((rows // 2) * columns + columns // 2) * slots + anchor


def check_target(model: RetinaFace, target: Target, size: int) -> dict[str, object]:
    """Raise ``InputError`` (one sentence naming the choices) unless ``target`` exists for ``size`` px images;
    return where it is read: ``{"anchor_index", "anchor_box"}`` (cx, cy, w, h pixels) for the score,
    ``{"channels", "map_size", "location"}`` (``[row, column]`` of the centre) for a channel."""
    levels = len(model.anchor_generator.strides)
    if target.is_score:
        if not 0 <= target.level < levels:
            raise InputError(f"level {target.level} does not exist: the model has {levels} pyramid levels (0..{levels - 1})")
        slots = model.anchor_generator.num_anchors_per_location
        if not 0 <= target.anchor < slots:
            raise InputError(f"anchor {target.anchor} does not exist: each location has {slots} anchors (0..{slots - 1})")
        index = centre_anchor_index(model, size, size, target.level, target.anchor)
        box = model.anchor_generator.for_image_size(size, size)[index]
        return {"anchor_index": index, "anchor_box": [float(v) for v in box]}
    probe = torch.full((1, 3, size, size), 0.0, device=_device(model)) + model.preprocessor.pixel_mean
    named = layer_names(model)
    with torch.no_grad():
        maps = feature_maps(model, probe, [target.layer, *named])
    found = maps[target.layer]
    if found is None:
        listing = ", ".join(f"{name} ({maps[name].shape[1]} ch)" for name in named)
        raise InputError(
            f"unknown layer {target.layer!r}; choose one of {listing}, or a module name of model.named_modules() "
            "whose output is one feature map (e.g. backbone.stage2)"
        )
    channels = int(found.shape[1])
    if not 0 <= target.channel < channels:
        raise InputError(f"channel {target.channel} is out of range for layer {target.layer} ({channels} channels: 0..{channels - 1})")
    rows, columns = int(found.shape[2]), int(found.shape[3])
    return {"channels": channels, "map_size": [rows, columns], "location": [rows // 2, columns // 2]}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def centre_weights(rows: int, columns: int, location: Sequence[int]) -> Tensor:
    """``Tensor[rows, columns]`` Gaussian weights centred on ``location`` (row, column), standard deviation a
    quarter of the map's longer side, summing to 1."""
    sigma = max(rows, columns) / 4.0
    ys = (torch.arange(rows, dtype=torch.float32) - location[0]).square()
    xs = (torch.arange(columns, dtype=torch.float32) - location[1]).square()
    weights = torch.exp(-(ys[:, None] + xs[None, :]) / (2.0 * sigma**2))
    return weights / weights.sum()


class TargetReader:
    """``reader(images)`` -> ``Tensor[N]``: the objective of ``target`` for ``images`` ``Tensor[N, 3, H, W]``
    (BGR 0-255), differentiable: the face logit ``l_face - l_background`` of the centre anchor, or the
    channel's activation at the centre location. :meth:`value` turns it into the reported value (the face
    probability, as :func:`~retinaface.postprocess.face_probability` computes it, or the activation itself).
    For a channel, only the part of the network up to its layer is run.

    ``reader(images, ascent=True)`` is what a step climbs: the same, except for a channel that is exactly 0
    at the centre (a ReLU's floor, as the SSH outputs ``context.L`` often are on noise), where the gradient
    is zero and no ascent could start: there it is the channel's :func:`centre_weights` mean over the map,
    which pulls the channel's response elsewhere towards the centre until it switches on there.
    """

    def __init__(self, model: RetinaFace, target: Target, size: int) -> None:
        self.model = model
        self.target = target
        self.where = check_target(model, target, size)
        if not target.is_score:
            self.weights = centre_weights(*self.where["map_size"], self.where["location"]).to(_device(model))

    def __call__(self, images: Tensor, *, ascent: bool = False) -> Tensor:
        batch = network_input(self.model, images)
        if self.target.is_score:
            outputs, _ = self.model.head_outputs(batch, dense_mesh=False)
            logits = outputs.class_logits[:, self.where["anchor_index"]].float()
            return logits[:, 1] - logits[:, 0]
        with captured_output(self.model, self.target.layer, stop=True) as store:
            try:
                self.model.head_outputs(batch, dense_mesh=False)
            except _Captured:
                pass
        row, column = self.where["location"]
        channel = store["output"][:, self.target.channel].float()  # [N, h, w]
        centre = channel[:, row, column]
        if not ascent:
            return centre
        return torch.where(centre == 0, (channel * self.weights).sum(dim=(1, 2)), centre)

    def value(self, objective: Tensor) -> Tensor:
        """Reported value of an objective ``Tensor[N]``: probability for the score, activation otherwise."""
        return torch.sigmoid(objective) if self.target.is_score else objective

    @torch.no_grad()
    def values(self, images: Tensor) -> Tensor:
        """:meth:`value` of ``images`` ``Tensor[N, 3, H, W]`` without a graph, ``Tensor[N]`` on the CPU."""
        return self.value(self(images)).cpu()


# --- the random views (regularisers) ----------------------------------------------------------------


def view_matrices(angles_deg: Tensor, flips: Tensor, shifts: Tensor, height: int, width: int) -> Tensor:
    """``affine_grid`` matrices ``Tensor[N, 2, 3]`` of views that mirror (``flips`` ``Tensor[N]`` bool),
    then rotate counter-clockwise as seen on screen by ``angles_deg`` ``Tensor[N]`` about the image centre,
    then shift by ``shifts`` ``Tensor[N, 2]`` (x, y pixels; +x right, +y down).

    Content at offset ``q`` from the centre moves to ``R F q + s``; the view's pixel at offset ``p`` therefore
    reads the image at ``F R^-1 (p - s)``, with ``R^-1 (x, y) = (x cos a - y sin a, x sin a + y cos a)``
    (y down), which is what the matrices encode in ``affine_grid``'s [-1, 1] coordinates
    (``align_corners=False``: the grid's ends are the images' outer pixel edges).
    """
    angles = torch.deg2rad(angles_deg.float())
    cos, sin = torch.cos(angles), torch.sin(angles)
    mirror = 1.0 - 2.0 * flips.float()
    sx, sy = shifts[:, 0].float(), shifts[:, 1].float()
    aspect = height / width
    row_x = torch.stack([mirror * cos, -mirror * sin * aspect, -mirror * (sx * cos - sy * sin) * 2.0 / width], dim=1)
    row_y = torch.stack([sin / aspect, cos, -(sx * sin + sy * cos) * 2.0 / height], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def transform_views(images: Tensor, matrices: Tensor) -> Tensor:
    """``images`` ``Tensor[N, C, H, W]`` resampled (bilinear, edges reflected) through ``matrices``
    ``Tensor[N, 2, 3]`` of :func:`view_matrices`. Differentiable: the gradient of a loss on the views lands,
    through the same interpolation weights, on the image pixels each view pixel came from."""
    grid = F.affine_grid(matrices.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_view_parameters(generators: Sequence[torch.Generator], config: HallucinationConfig) -> tuple[Tensor, Tensor, Tensor]:
    """One random view per image, each drawn from that image's own generator (so an image's views do not
    depend on the others in its batch): angles ``Tensor[N]`` (degrees), flips ``Tensor[N]`` bool, shifts
    ``Tensor[N, 2]`` (integer pixels), within the limits of ``config``."""
    angles, flips, shifts = [], [], []
    for generator in generators:
        draw = torch.rand(2, generator=generator)
        angles.append((2.0 * draw[0] - 1.0) * config.max_rotation_deg)
        flips.append(bool(config.flip) and bool(draw[1] < 0.5))
        shifts.append(torch.randint(-config.max_shift, config.max_shift + 1, (2,), generator=generator))
    return torch.stack(angles), torch.tensor(flips), torch.stack(shifts)


# --- the ascent -------------------------------------------------------------------------------------


def starting_noise(generators: Sequence[torch.Generator], size: int, mean_bgr: Tensor, std: float) -> Tensor:
    """``Tensor[N, 3, size, size]`` BGR 0-255: the model's mean colour ``mean_bgr`` (``Tensor[3, 1, 1]``)
    plus Gaussian noise of standard deviation ``std`` grey levels, one image per generator, clamped to 0-255."""
    noise = torch.stack([torch.randn(3, size, size, generator=generator) for generator in generators])
    return (mean_bgr.cpu() + std * noise).clamp(0.0, 255.0)


@dataclass
class Hallucinations:
    """The images of one target and the target's value on them.

    - ``images``: ``ndarray[N, H, W, 3]`` uint8 BGR
    - ``seeds``: each image's seed; ``before``/``after``: the target's value (see :attr:`Target.value_name`)
      on the starting noise and on the final (uint8) image
    - ``where``: where the target is read (:func:`check_target`)
    """

    target: Target
    minimize: bool
    images: np.ndarray
    seeds: list[int]
    before: list[float]
    after: list[float]
    where: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def ascend(
    reader: TargetReader, start: Tensor, generators: Sequence[torch.Generator], config: HallucinationConfig,
    *, on_step: Callable[[], None] | None = None,
) -> Tensor:
    """Normalised gradient ascent (:func:`normalised`) on the pixels of ``start`` ``Tensor[N, 3, H, W]``
    (BGR 0-255) for ``config.steps`` steps, each on a random view of every image
    (:func:`random_view_parameters`, one generator per image), raising the target (lowering it with
    ``config.minimize``); pixels are clamped to 0-255 after each step. Returns the final images (float)."""
    device = _device(reader.model)
    images = start.to(device).clone().requires_grad_(True)
    sign = -1.0 if config.minimize else 1.0
    height, width = images.shape[-2:]
    for _ in range(config.steps):
        matrices = view_matrices(*random_view_parameters(generators, config), height, width).to(device)
        objective = reader(transform_views(images, matrices), ascent=not config.minimize)
        (gradient,) = torch.autograd.grad(objective.sum(), images)  # images are independent: each its own term
        with torch.no_grad():
            images += sign * config.learning_rate * normalised(gradient)
            images.clamp_(0.0, 255.0)
        if on_step is not None:
            on_step()
    return images.detach()


def normalised(gradient: Tensor) -> Tensor:
    """``gradient`` ``Tensor[N, ...]`` divided by each image's root mean square (so a step of size ``lr``
    changes an image by ``lr`` grey levels RMS, however steep its objective), zero where it is all zero."""
    rms = gradient.flatten(1).square().mean(dim=1).sqrt()
    return gradient / rms.clamp_min(1e-12).view(-1, *[1] * (gradient.dim() - 1))


def hallucinate(
    model: RetinaFace, target: Target, config: HallucinationConfig = HallucinationConfig(),
    *, on_step: Callable[[], None] | None = None,
) -> Hallucinations:
    """``config.runs`` images for ``target`` (seeds ``config.seed + i``), optimised ``config.batch_size`` at a
    time; ``on_step`` is called after each step of each batch. ``model`` should be in eval mode (BatchNorm
    with its running statistics, so that the images of a batch do not interact); it runs with
    ``config.threads`` CPU threads."""
    model.requires_grad_(False)
    with torch_threads(config.threads):
        return _hallucinate(model, target, config, on_step)


def _hallucinate(model: RetinaFace, target: Target, config: HallucinationConfig, on_step: Callable[[], None] | None) -> Hallucinations:
    reader = TargetReader(model, target, config.size)
    device = _device(model)
    seeds = [config.seed + i for i in range(config.runs)]
    images, before, after = [], [], []
    started = time.perf_counter()
    for first in range(0, len(seeds), config.batch_size):
        chunk = seeds[first:first + config.batch_size]
        generators = [torch.Generator().manual_seed(seed) for seed in chunk]
        start = starting_noise(generators, config.size, model.preprocessor.pixel_mean, config.noise_std).round()
        before += reader.values(start.to(device)).tolist()
        final = ascend(reader, start, generators, config, on_step=on_step).round()
        after += reader.values(final).tolist()
        images.append(final.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return Hallucinations(
        target=target, minimize=config.minimize, images=np.concatenate(images), seeds=seeds, before=before, after=after,
        where=reader.where, seconds=time.perf_counter() - started,
    )


# --- pictures ---------------------------------------------------------------------------------------


def _fitted_text_scale(text: str, width: int, scale: float) -> float:
    """``scale``, reduced so that ``text`` fits in ``width`` pixels."""
    (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return scale if text_width <= width else scale * width / text_width


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], title: str = "", *, columns: int | None = None) -> np.ndarray:
    """One ``ndarray[H', W', 3]`` uint8 BGR picture of ``images`` (``ndarray[h, w, 3]`` uint8 BGR, same size)
    in a grid of ``columns`` (default: about square), each with its label beneath, ``title`` on top."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    height, width = images[0].shape[:2]
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    font, scale, gap = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, width / 320), 4
    (_, text_height), baseline = cv2.getTextSize("0.9->1", font, scale, 1)
    line = text_height + baseline + 2 * gap
    top = line if title else 0
    sheet = np.full((top + rows * (height + line) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    if title:
        cv2.putText(sheet, title, (gap, gap + text_height), font, _fitted_text_scale(title, sheet.shape[1] - 2 * gap, scale),
                    (0, 0, 0), 1, cv2.LINE_AA)
    for i, (image, label) in enumerate(zip(images, labels)):
        y = top + gap + (i // columns) * (height + line)
        x = gap + (i % columns) * (width + gap)
        sheet[y:y + height, x:x + width] = image
        cv2.putText(sheet, label, (x, y + height + gap + text_height), font, _fitted_text_scale(label, width, scale),
                    (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def stack_sheets(sheets: Sequence[np.ndarray]) -> np.ndarray:
    """Contact sheets (``ndarray[h_i, w_i, 3]`` uint8) one below the other on white, left-aligned."""
    width = max(sheet.shape[1] for sheet in sheets)
    return np.concatenate([np.pad(sheet, ((0, 0), (0, width - sheet.shape[1]), (0, 0)), constant_values=255) for sheet in sheets])


def value_labels(result: Hallucinations) -> list[str]:
    """``"0.001->0.998"`` (before -> after) for each image of ``result``."""
    return [f"{b:.3g}->{a:.3g}" for b, a in zip(result.before, result.after)]


def sheet_title(result: Hallucinations) -> str:
    """One line saying what a sheet shows: the target, where it is read, and ascent or descent."""
    where = result.where
    if result.target.is_score:
        cx, cy, side = where["anchor_box"][0], where["anchor_box"][1], where["anchor_box"][2]
        place = f"level {result.target.level}, {side:g} px anchor at ({cx:g}, {cy:g})"
    else:
        place = f"centre {tuple(where['location'])} of {where['map_size'][0]}x{where['map_size'][1]}"
    return f"{'min' if result.minimize else 'max'} {result.target.name}: {place}"


def meshed(detector, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[list]]:
    """Each image (``ndarray[H, W, 3]`` uint8 BGR) with the faces ``detector`` (a ``Detector``, ideally with
    ``mesh=True``) finds in it drawn: mesh first, then box, score and landmarks; and those faces."""
    from ..faces.drawing import draw_faces
    from ..faces.mesh_overlay import draw_meshes

    pictures, found = [], []
    for image in images:
        faces = detector(image)
        pictures.append(draw_faces(draw_meshes(image, faces), faces))
        found.append(faces)
    return pictures, found


def centre_face(faces: Sequence, size: int):
    """The face among ``faces`` whose box contains the centre of a ``size`` px image, highest score first;
    ``None`` if none does."""
    middle = size / 2.0
    inside = [f for f in faces if f.box[0] <= middle <= f.box[2] and f.box[1] <= middle <= f.box[3]]
    return max(inside, key=lambda f: f.score, default=None)


def result_record(result: Hallucinations, files: Sequence[str], sheets: Sequence[str], faces: Sequence[Sequence] | None = None) -> dict:
    """The JSON record of one target: what and where, its contact sheets, and per image its file, seed and
    value before and after (with ``faces``: how many faces were found and the best one's score and box)."""
    images = []
    for i, (name, seed, before, after) in enumerate(zip(files, result.seeds, result.before, result.after)):
        entry: dict[str, object] = {"file": name, "seed": seed, "before": before, "after": after}
        if faces is not None:
            best = max(faces[i], key=lambda f: f.score, default=None)
            entry["faces"] = len(faces[i])
            entry["best_face"] = None if best is None else {"score": float(best.score), "box": [float(v) for v in best.box]}
        images.append(entry)
    return {
        "target": result.target.name, "minimize": result.minimize, "value": result.target.value_name,
        **({"level": result.target.level, "anchor": result.target.anchor} if result.target.is_score else {"channel": result.target.channel}),
        **result.where, "seconds": result.seconds, "sheets": list(sheets), "images": images,
    }


@dataclass
class SavedTarget:
    """What :func:`save_results` wrote for one target: its JSON ``record`` (paths relative to the folder)
    and its contact ``sheets`` (``ndarray[H, W, 3]`` uint8 BGR: the images, and with a detector the faces found)."""

    record: dict
    sheets: list[np.ndarray]


def save_results(result: Hallucinations, folder: Path, *, detector=None, columns: int | None = None) -> SavedTarget:
    """Write ``result`` under ``folder`` (atomically, file by file): ``<slug>/<slug>-NN.png`` per image and
    ``<slug>-sheet.png`` (``columns`` images per row); with ``detector``, also each image with the faces it
    finds drawn (``<slug>/<slug>-NN-mesh.png``, ``<slug>-mesh-sheet.png``)."""
    from ..outputs.atomic import write_image

    slug = result.target.slug(result.minimize)
    files = [f"{slug}/{slug}-{i:02d}.png" for i in range(len(result.images))]
    for name, image in zip(files, result.images):
        write_image(folder / name, image)
    names = [f"{slug}-sheet.png"]
    sheets = [contact_sheet(list(result.images), value_labels(result), sheet_title(result), columns=columns)]
    faces = None
    if detector is not None:
        pictures, faces = meshed(detector, result.images)
        for name, picture in zip(files, pictures):
            write_image(folder / name.replace(".png", "-mesh.png"), picture)
        labels = [f"face {max(f.score for f in found):.2f}" if found else "no face" for found in faces]
        names.append(f"{slug}-mesh-sheet.png")
        sheets.append(contact_sheet(pictures, labels, sheet_title(result) + ", faces found", columns=columns))
    for name, sheet in zip(names, sheets):
        write_image(folder / name, sheet)
    return SavedTarget(result_record(result, files, names, faces), sheets)


def config_record(config: HallucinationConfig) -> dict:
    """``config`` as a JSON-ready dict."""
    return asdict(config)


def progress_bar(total: int, *, enabled: bool, description: str = "hallucinate"):
    """A tqdm bar on stderr counting optimisation steps (a silent one when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="step", desc=description, disable=not enabled, file=sys.stderr)
