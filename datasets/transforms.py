"""Training augmentation as in RetinaFace: random square crop, photometric distortion, flip, resize."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..config import ModelConfig
from ..faces.landmarks import FLIPPED_LANDMARK_ORDER
from ..mesh.coefficients import mirror_coefficients
from ..utils.rng import seeded


class TrainAugmentation:
    """``__call__(image, target, seed)`` for ``image`` ``Tensor[3, H, W]`` uint8 BGR and a target dict
    (``boxes`` x1 y1 x2 y2 pixels, ``landmarks`` ``[N, 5, 2]``, ``landmarks_valid``); returns a
    ``size x size`` image and the matching target.

    - square crop of ``scale x`` the short side, scale drawn from ``crop_scales``, at a random place; faces
      whose centre falls inside are kept (clipped), up to ``max_tries`` attempts, else the image is padded
      to a square (mean colour) instead;
    - photometric distortion (torchvision's ``RandomPhotometricDistort``), horizontal flip with the
      left/right landmark swap, resize to ``size``;
    - faces smaller than ``min_face_size`` pixels at the training size are dropped.
    The target also says which faces the mesh pixel term may use: ``mirrored`` (bool, the image was
    flipped) and ``clipped`` ``Tensor[N]`` (bool, the face's box was cut by the crop). A ``mesh_truth``
    ``Tensor[N, 144]`` in the target follows its faces (crops and resizing do not change a face's rotation,
    light or shape; a flip mirrors them: :func:`~retinaface.mesh.coefficients.mirror_coefficients`), and so
    does a ``mesh_placement`` ``Tensor[N, 4]`` (the square each face was rendered in, x1 y1 x2 y2 pixels),
    moved, flipped and scaled with the image but never cut by the crop. All randomness comes from ``seed``,
    so the same sample is augmented identically on any worker.
    """

    def __init__(
        self,
        *,
        size: int = 640,
        crop_scales: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0),
        min_face_size: float = 2.0,
        max_tries: int = 250,
        flip_probability: float = 0.5,
        photometric: bool = True,
        pixel_mean_bgr: tuple[float, float, float] = ModelConfig.pixel_mean_bgr,
    ) -> None:
        self.size = size
        self.crop_scales = crop_scales
        self.min_face_size = min_face_size
        self.max_tries = max_tries
        self.flip_probability = flip_probability
        self.photometric = v2.RandomPhotometricDistort(p=0.5) if photometric else None
        self.pixel_mean = torch.tensor(pixel_mean_bgr).round().to(torch.uint8).view(3, 1, 1)

    def __call__(self, image: Tensor, target: dict[str, Tensor], seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        with seeded(seed):  # torchvision's random transforms draw from the global generator
            return self._augment(image, target)

    def _augment(self, image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        boxes, points, valid = target["boxes"].float(), target["landmarks"].float(), target["landmarks_valid"]
        image, boxes, points, valid, clipped, inside, offset = self._crop(image, boxes, points, valid)
        placement = target["mesh_placement"].float()[inside] - offset if "mesh_placement" in target else None
        if self.photometric is not None:
            image = self.photometric(image.flip(0)).flip(0)  # the distortion works in RGB
        height, width = image.shape[-2:]
        mirrored = bool(torch.rand(()) < self.flip_probability)
        if mirrored:
            image = TF.horizontal_flip(image)
            boxes = TF.horizontal_flip(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))).as_subclass(Tensor)
            # landmarks are continuous coordinates like the boxes (x -> W - x); torchvision's keypoint
            # flip treats them as pixel indices (W - 1 - x), so flip them here
            points = torch.stack([width - points[..., 0], points[..., 1]], dim=-1)[:, FLIPPED_LANDMARK_ORDER]
            if placement is not None:
                placement = torch.stack([width - placement[:, 2], placement[:, 1], width - placement[:, 0], placement[:, 3]], dim=1)
        scale_x, scale_y = self.size / width, self.size / height
        image = TF.resize(image, [self.size, self.size], antialias=True)
        boxes = boxes * torch.tensor([scale_x, scale_y, scale_x, scale_y])
        points = points * torch.tensor([scale_x, scale_y])
        sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = sides >= self.min_face_size
        # the mesh pixel term skips flipped images ("mirrored": the face template's colours are not symmetric)
        # and faces cut by the crop ("clipped": their box no longer spans the face the render must cover)
        augmented = {
            "boxes": boxes[keep], "landmarks": points[keep], "landmarks_valid": valid[keep],
            "mirrored": torch.tensor(mirrored), "clipped": clipped[keep],
        }
        if "mesh_truth" in target:
            truth = target["mesh_truth"][inside][keep]
            augmented["mesh_truth"] = mirror_coefficients(truth) if mirrored else truth
        if placement is not None:
            augmented["mesh_placement"] = (placement * torch.tensor([scale_x, scale_y, scale_x, scale_y]))[keep]
        return image, augmented

    def _crop(self, image, boxes, points, valid):
        height, width = image.shape[-2:]
        short = min(height, width)
        scales = torch.tensor(self.crop_scales)
        for _ in range(self.max_tries):
            side = int(scales[torch.randint(len(scales), ())] * short)
            left = int(torch.randint(width - side + 1, ()))
            top = int(torch.randint(height - side + 1, ()))
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = (centres[:, 0] > left) & (centres[:, 0] < left + side) & (centres[:, 1] > top) & (centres[:, 1] < top + side)
            if boxes.shape[0] and not inside.any():
                continue
            offset = torch.tensor([left, top, left, top], dtype=boxes.dtype)
            shifted = boxes[inside] - offset
            kept = shifted.clamp(min=0).minimum(torch.tensor(float(side)))
            return (
                TF.crop(image, top, left, side, side),
                kept,
                points[inside] - offset[:2],
                valid[inside],
                (kept - shifted).abs().amax(dim=1) > 0.5,
                inside,
                offset,
            )
        # no crop kept a face: pad to a square with the mean colour (keeps the aspect ratio at resize)
        side = max(height, width)
        canvas = self.pixel_mean.expand(3, side, side).clone()
        canvas[:, :height, :width] = image
        unmoved = torch.zeros(4, dtype=boxes.dtype)
        return canvas, boxes, points, valid, torch.zeros(boxes.shape[0], dtype=torch.bool), torch.ones(boxes.shape[0], dtype=torch.bool), unmoved
