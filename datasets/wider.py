"""WIDER FACE training annotations: the RetinaFace landmark format and the official box-only format.

- RetinaFace ``label.txt`` (retinaface_gt_v1.1): ``# <relative image path>`` then one line per face,
  ``x y w h`` + five landmarks as ``x y flag`` + a score (20 numbers); landmarks are -1 when absent.
- Official ``wider_face_train_bbx_gt.txt``: the image path, the face count, then ``x y w h`` + 6 attribute
  flags per face (a count of 0 is followed by one line of zeros). No landmarks.

Problems (malformed lines, missing images, zero-area boxes) raise :class:`AnnotationError` naming the
file and line, or with ``on_error="skip"`` are skipped and counted in :attr:`WiderFaceDataset.skipped`.
"""

from __future__ import annotations

import math
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from ..errors import AnnotationError



@dataclass
class FaceSample:
    """One image: ``boxes`` ``ndarray[N, 4]`` (x1 y1 x2 y2, pixels), ``landmarks`` ``ndarray[N, 5, 2]``,
    ``landmarks_valid`` ``ndarray[N]`` (bool), and for rendered faces ``mesh_truth`` ``ndarray[N, 144]``
    (the mesh coefficients each face was rendered with) and ``mesh_placement`` ``ndarray[N, 4]`` (the square
    it was rendered in, x1 y1 x2 y2 pixels); both ``None`` for real annotations."""

    image_path: Path
    boxes: np.ndarray
    landmarks: np.ndarray
    landmarks_valid: np.ndarray
    mesh_truth: np.ndarray | None = None
    mesh_placement: np.ndarray | None = None


@dataclass
class ParseReport:
    skipped_lines: list[str] = field(default_factory=list)

    def problem(self, message: str, on_error: str) -> None:
        if on_error == "raise":
            raise AnnotationError(message)
        self.skipped_lines.append(message)


def _numbers(text: str, where: str) -> list[float]:
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise AnnotationError(f"{where}: non-numeric value in {text.strip()!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise AnnotationError(f"{where}: NaN or infinite value in {text.strip()!r}")
    return values


def read_label_lines(label_file: Path) -> list[str]:
    """The lines of a text annotation file; ``AnnotationError`` for a binary or unreadable file."""
    try:
        data = label_file.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"cannot read annotation file {label_file}: {exc.strerror or exc}") from None
    if b"\0" in data[:65536]:
        raise AnnotationError(f"{label_file} is a binary file, not a text annotation file")
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{label_file} is not UTF-8 text (byte {exc.start}); not an annotation file") from None


def _face(values: list[float], where: str, report: ParseReport, on_error: str):
    x, y, w, h = values[:4]
    if w <= 0 or h <= 0:
        report.problem(f"{where}: face box has zero or negative size ({w:g} x {h:g})", on_error)
        return None
    return [x, y, x + w, y + h]


def parse_retinaface_labels(label_file: Path, images_root: Path, *, on_error: str = "raise") -> tuple[list[FaceSample], ParseReport]:
    report = ParseReport()
    samples: list[FaceSample] = []
    current: tuple[Path, list, list, list] | None = None

    def finish() -> None:
        if current is None:
            return
        path, boxes, points, valid = current
        if not path.is_file():
            report.problem(f"{label_file}: image {path} listed but not found", on_error)
            return
        samples.append(FaceSample(
            path, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(points, np.float32).reshape(-1, 5, 2), np.asarray(valid, bool)
        ))

    for number, line in enumerate(read_label_lines(label_file), start=1):
        where = f"{label_file}:{number}"
        if not line.strip():
            continue
        if line.startswith("#"):
            finish()
            current = (images_root / line[1:].strip(), [], [], [])
            continue
        if current is None:
            report.problem(f"{where}: face line before any '# image' line", on_error)
            continue
        try:
            values = _numbers(line, where)
        except AnnotationError as exc:
            report.problem(str(exc), on_error)
            continue
        if len(values) not in (4, 19, 20):
            report.problem(f"{where}: expected 20 numbers (box, 5 landmarks as x y flag, score), got {len(values)}", on_error)
            continue
        box = _face(values, where, report, on_error)
        if box is None:
            continue
        landmarks = np.array(values[4:19], np.float32).reshape(5, 3)[:, :2] if len(values) >= 19 else np.full((5, 2), -1, np.float32)
        current[1].append(box)
        current[2].append(landmarks)
        current[3].append(bool(len(values) >= 19 and landmarks[0, 0] >= 0))
    finish()
    return samples, report


def parse_wider_official(label_file: Path, images_root: Path, *, on_error: str = "raise") -> tuple[list[FaceSample], ParseReport]:
    report = ParseReport()
    samples: list[FaceSample] = []
    lines = read_label_lines(label_file)
    index = 0
    while index < len(lines):
        name = lines[index].strip()
        index += 1
        if not name:
            continue
        where = f"{label_file}:{index + 1}"
        try:
            count = int(lines[index].strip())
        except (IndexError, ValueError):
            raise AnnotationError(f"{where}: expected the face count after {name!r}") from None
        index += 1
        rows = lines[index : index + max(count, 1)]
        index += max(count, 1)
        boxes = []
        for offset, row in enumerate(rows[:count]):
            row_where = f"{label_file}:{index - max(count, 1) + offset + 1}"
            try:
                values = _numbers(row, row_where)
            except AnnotationError as exc:
                report.problem(str(exc), on_error)
                continue
            if len(values) < 4:
                report.problem(f"{row_where}: expected 'x y w h' and attributes, got {row.strip()!r}", on_error)
                continue
            box = _face(values, row_where, report, on_error)
            if box is not None:
                boxes.append(box)
        path = images_root / name
        if not path.is_file():
            report.problem(f"{label_file}: image {path} listed but not found", on_error)
            continue
        n = len(boxes)
        samples.append(FaceSample(path, np.asarray(boxes, np.float32).reshape(-1, 4), np.full((n, 5, 2), -1, np.float32), np.zeros(n, bool)))
    return samples, report


def attach_render_params(samples: list[FaceSample], params_file: Path, images_root: Path) -> None:
    """Give each sample the mesh coefficients its faces were rendered with (``mesh_truth``) and the squares
    they were rendered in (``mesh_placement``, when every record has its ``"placement"``), from a synthetic
    set's ``render_params.json`` (image path relative to ``images_root`` -> one record per face, in the
    label file's order, each with ``"coefficients"``). ``AnnotationError`` when an image is missing from the
    file or its face count differs from the label file's."""
    from .synthetic import load_render_params

    params = load_render_params(params_file)
    for sample in samples:
        relative = sample.image_path.relative_to(images_root).as_posix()
        records = params.get(relative)
        if records is None or len(records) != len(sample.boxes):
            found = "no entry" if records is None else f"{len(records)} faces"
            raise AnnotationError(f"{params_file}: {relative} has {found}, the label file {len(sample.boxes)}")
        sample.mesh_truth = np.asarray([r["coefficients"] for r in records], np.float32).reshape(len(records), -1)
        if all("placement" in r for r in records):
            squares = np.asarray([r["placement"] for r in records], np.float32).reshape(len(records), 3)
            sample.mesh_placement = np.concatenate([squares[:, :2], squares[:, :2] + squares[:, 2:]], axis=1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A stable per-sample seed, independent of workers and processes."""
    return zlib.crc32(f"{seed}/{epoch}/{index}".encode())


class WiderFaceDataset(Dataset):
    """Images and face targets from a WIDER-style annotation file.

    ``__getitem__`` returns ``(image, target)``: ``image`` ``Tensor[3, H, W]`` uint8 BGR and ``target`` with
    ``boxes`` ``Tensor[N, 4]`` (x1 y1 x2 y2 pixels), ``landmarks`` ``Tensor[N, 5, 2]``, ``landmarks_valid``
    ``Tensor[N]`` and, for a synthetic set (``render_params.json`` beside a RetinaFace-format label file),
    ``mesh_truth`` ``Tensor[N, 144]`` and ``mesh_placement`` ``Tensor[N, 4]``, after ``transform(image,
    target, seed)``. The augmentation seed depends on (``seed``, :attr:`epoch`, index) only, so a resumed
    or distributed run sees the same samples.
    """

    def __init__(
        self,
        label_file: str | os.PathLike,
        images_root: str | os.PathLike | None = None,
        *,
        annotation_format: str = "auto",
        on_error: str = "raise",
        transform: Callable | None = None,
        seed: int = 0,
    ) -> None:
        label_file = Path(label_file)
        if not label_file.is_file():
            raise AnnotationError(f"annotation file {label_file} not found")
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        images_root = Path(images_root) if images_root is not None else label_file.parent / "images"
        if annotation_format == "auto":
            first = next((l for l in read_label_lines(label_file) if l.strip()), "")
            annotation_format = "retinaface" if first.startswith("#") else "wider"
        parse = {"retinaface": parse_retinaface_labels, "wider": parse_wider_official}.get(annotation_format)
        if parse is None:
            raise ValueError(f"unknown annotation format {annotation_format!r}")
        self.samples, report = parse(label_file, images_root, on_error=on_error)
        render_params = label_file.parent / "render_params.json"
        if annotation_format == "retinaface" and render_params.is_file():
            attach_render_params(self.samples, render_params, images_root)
        self.skipped = report.skipped_lines
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} annotation problems in {label_file} (on_error=skip); first: {self.skipped[0]}",
                stacklevel=2,
            )
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        from ..errors import InputError
        from ..media.images import read_image

        sample = self.samples[index]
        try:
            image = torch.from_numpy(read_image(sample.image_path)).permute(2, 0, 1).contiguous()
        except InputError as exc:
            raise AnnotationError(f"training image unreadable: {exc}") from None
        target = {
            "boxes": torch.from_numpy(sample.boxes.copy()),
            "landmarks": torch.from_numpy(sample.landmarks.copy()),
            "landmarks_valid": torch.from_numpy(sample.landmarks_valid.copy()),
        }
        if sample.mesh_truth is not None:
            target["mesh_truth"] = torch.from_numpy(sample.mesh_truth.copy())
        if sample.mesh_placement is not None:
            target["mesh_placement"] = torch.from_numpy(sample.mesh_placement.copy())
        if self.transform is not None:
            image, target = self.transform(image, target, sample_seed(self.seed, self.epoch, index))
        return image, target


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Keep images and targets as lists (images may differ in size; the model batches them)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
