"""Drawing decoded face meshes over images."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from .mesh.branch import MeshBranch
from .mesh.decoder import DecodedMesh

from .detector import Face

RENDER_SIZE = 128


def draw_meshes(image: np.ndarray, faces: Sequence[Face], branch: MeshBranch, *, opacity: float = 0.6) -> np.ndarray:
    """A copy of ``image`` (``ndarray[H, W, 3]`` BGR) with each face's mesh rendered into its box and blended.

    All faces of the image are rendered in one batch at 128 x 128, then resized to their boxes. Faces from a
    ``Detector(mesh=True)`` carry their decoded mesh, which is rendered as it is instead of decoded again.
    """
    canvas = image.copy()
    if not faces:
        return canvas
    boxes = np.stack([f.box for f in faces]).astype(np.float32)
    coefficients = torch.from_numpy(np.stack([f.mesh_coefficients for f in faces]).astype(np.float32))
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    decoded = None
    if all(f.mesh_model_vertices is not None and f.mesh_colours is not None for f in faces):
        decoded = DecodedMesh(
            torch.from_numpy(np.stack([f.mesh_model_vertices for f in faces]).astype(np.float32)),
            torch.from_numpy(np.stack([f.mesh_colours for f in faces]).astype(np.float32)),
        )
    with torch.inference_mode():
        _, rendered = branch(coefficients, aspect=torch.from_numpy(widths / heights), image_size=RENDER_SIZE, mesh=decoded)
    colours = (rendered.image.clamp(0, 1).permute(0, 2, 3, 1).numpy()[..., ::-1] * 255).astype(np.float32)
    masks = rendered.mask[:, 0].numpy().astype(np.float32)
    height, width = image.shape[:2]
    for colour, mask, (x1, y1, x2, y2) in zip(colours, masks, boxes):
        x1i, y1i = int(np.floor(x1)), int(np.floor(y1))
        box_w, box_h = max(1, int(round(x2 - x1))), max(1, int(round(y2 - y1)))
        patch = cv2.resize(colour, (box_w, box_h), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(mask, (box_w, box_h), interpolation=cv2.INTER_LINEAR)[..., None] * opacity
        # clip the box to the image
        left, top = max(0, -x1i), max(0, -y1i)
        right, bottom = min(box_w, width - x1i), min(box_h, height - y1i)
        if right <= left or bottom <= top:
            continue
        region = canvas[y1i + top : y1i + bottom, x1i + left : x1i + right].astype(np.float32)
        blended = region * (1 - alpha[top:bottom, left:right]) + patch[top:bottom, left:right] * alpha[top:bottom, left:right]
        canvas[y1i + top : y1i + bottom, x1i + left : x1i + right] = blended.clip(0, 255).astype(np.uint8)
    return canvas
