"""WIDER FACE validation protocol (easy / medium / hard AP), vectorised, following the official ``eval_tools``.

The rules, as in the official MATLAB code:

- Predictions per image are sorted by descending score (stable for ties).
- Scores are normalised over the whole set as ``(s - lo) / (hi - lo)`` with ``lo = min(1, min s)``,
  ``hi = max(0, max s)`` (the official code starts its running min/max at 1 and 0). All-equal scores
  therefore give NaN and an AP of 0, exactly as the official tools do.
- In each image, every prediction in order is matched to the ground-truth face of highest IoU
  (``+1`` pixel convention, first face on ties). With IoU >= 0.5: if that face is not in the setting's
  ``gt_list`` the prediction is ignored; if it is and not yet recalled it becomes recalled; otherwise the
  prediction is a false positive. Images without ground truth or predictions are skipped, but their
  faces still count.
- For thresholds ``1 - k / 1000`` (k = 1..1000) the predictions scoring at least the threshold give
  (proposals, recalled) per image, summed over images; precision = recalled / proposals, recall =
  recalled / faces in the setting; AP is the VOC all-point area under the precision envelope (NaN
  precisions, from thresholds with no proposals, are skipped as MATLAB's ``max`` does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..errors import WiderFormatError

SETTINGS = ("easy", "medium", "hard")
NUM_THRESHOLDS = 1000
IOU_THRESHOLD = 0.5



@dataclass
class WiderGroundTruth:
    """WIDER val ground truth: per event, per image, boxes ``ndarray[G, 4]`` (x y w h) and, per setting,
    the 1-based indices of the faces that count (``keep[setting][event][image]``)."""

    events: list[str]
    files: list[list[str]]
    boxes: list[list[np.ndarray]]
    keep: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return sum(len(f) for f in self.files)

    def num_faces(self, setting: str | None = None) -> int:
        if setting is None:
            return sum(len(b) for per_event in self.boxes for b in per_event)
        return sum(len(k) for per_event in self.keep[setting] for k in per_event)


def _cell_strings(cell: np.ndarray) -> list[str]:
    return [str(np.asarray(item).ravel()[0]) for item in cell.ravel()]


def load_ground_truth(gt_dir: str | os.PathLike) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``gt_dir``."""
    gt_dir = Path(gt_dir)
    main = gt_dir / "wider_face_val.mat"
    if not main.is_file():
        raise WiderFormatError(f"{main} not found; --gt-dir must hold the official WIDER val .mat files")
    try:
        data = _loadmat(main)
        events = _cell_strings(data["event_list"])
        files = [_cell_strings(cell) for cell in data["file_list"].ravel()]
        boxes = [
            [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in cell.ravel()] for cell in data["face_bbx_list"].ravel()
        ]
    except (KeyError, ValueError, IndexError, TypeError, AttributeError) as exc:
        raise WiderFormatError(f"{main} is not a WIDER ground-truth file ({exc})") from None
    gt = WiderGroundTruth(events, files, boxes)
    for setting in SETTINGS:
        path = gt_dir / f"wider_{setting}_val.mat"
        if not path.is_file():
            raise WiderFormatError(f"{path} not found; --gt-dir must hold wider_easy/medium/hard_val.mat")
        try:
            cells = _loadmat(path)["gt_list"].ravel()
            gt.keep[setting] = [[np.asarray(k, dtype=np.int64).ravel() for k in cell.ravel()] for cell in cells]
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise WiderFormatError(f"{path} is not a WIDER gt_list file ({exc})") from None
        if [len(k) for k in gt.keep[setting]] != [len(f) for f in files]:
            raise WiderFormatError(f"{path} does not match the images of {main}")
        for per_event, per_boxes in zip(gt.keep[setting], boxes):
            for keep, image_boxes in zip(per_event, per_boxes):
                if keep.size and (keep.min() < 1 or keep.max() > len(image_boxes)):
                    raise WiderFormatError(f"{path} lists faces that {main} does not have")
    return gt


def _loadmat(path: Path) -> dict:
    """``scipy.io.loadmat`` with one-sentence errors for empty, truncated or foreign files."""
    from scipy.io import loadmat

    if path.stat().st_size == 0:
        raise WiderFormatError(f"{path} is an empty (0-byte) file, not a WIDER .mat file")
    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises many types (MatReadError, ValueError, OSError, zlib.error...)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WiderFormatError(f"{path} is not a readable .mat file (truncated or corrupt: {detail})") from None


def save_ground_truth(gt: WiderGroundTruth, gt_dir: str | os.PathLike) -> None:
    """Write ``gt`` as the four official ``.mat`` files (same cell-array structure as the originals)."""
    from scipy.io import savemat

    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)

    def cells(items) -> np.ndarray:
        array = np.empty((len(items), 1), dtype=object)
        for i, item in enumerate(items):
            array[i, 0] = item
        return array

    file_cells = cells([cells([np.array([name]) for name in names]) for names in gt.files])
    savemat(
        str(gt_dir / "wider_face_val.mat"),
        {
            "event_list": cells([np.array([e]) for e in gt.events]),
            "file_list": file_cells,
            "face_bbx_list": cells([cells([b.astype(np.int32).reshape(-1, 4) for b in per]) for per in gt.boxes]),
        },
    )
    for setting in SETTINGS:
        keep = gt.keep[setting]
        savemat(
            str(gt_dir / f"wider_{setting}_val.mat"),
            {
                "event_list": cells([np.array([e]) for e in gt.events]),
                "file_list": file_cells,
                "gt_list": cells([cells([k.astype(np.uint16).reshape(-1, 1) for k in per]) for per in keep]),
            },
        )


def read_prediction_file(path: str | os.PathLike, *, nonfinite: list[str] | None = None) -> np.ndarray:
    """One official prediction file -> ``ndarray[P, 5]`` (x, y, w, h, score) in file order.

    Rows holding NaN or infinity are dropped (they would shift every score's normalisation); each one is
    appended to ``nonfinite`` as ``"file:line"`` when a list is given.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise WiderFormatError(f"{path} is not a text prediction file (binary or not UTF-8)") from None
    except OSError as exc:
        raise WiderFormatError(f"cannot read prediction file {path}: {exc.strerror or exc}") from None
    if len(lines) < 2:
        raise WiderFormatError(f"{path}: expected the image name and a box count on the first two lines")
    try:
        declared = int(lines[1].strip())
    except ValueError:
        raise WiderFormatError(f"{path}:2: box count {lines[1].strip()!r} is not an integer") from None
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 5:
            raise WiderFormatError(f"{path}:{number}: expected 'x y w h score', got {line.strip()!r}")
        try:
            rows.append([float(v) for v in parts[:5]])
        except ValueError:
            raise WiderFormatError(f"{path}:{number}: non-numeric value in {line.strip()!r}") from None
    if len(rows) != declared:
        raise WiderFormatError(f"{path}: declares {declared} boxes but lists {len(rows)}")
    array = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        if nonfinite is not None:
            nonfinite.extend(f"{path}:{number}" for number in np.nonzero(~finite)[0] + 3)
        array = array[finite]
    return array


def write_prediction_file(path: str | os.PathLike, image_name: str, boxes_xywh_score: np.ndarray) -> None:
    """Write one official prediction file (atomically)."""
    from ..outputs.atomic import atomic_write

    lines = [image_name, str(len(boxes_xywh_score))]
    lines += [f"{x:.1f} {y:.1f} {w:.1f} {h:.1f} {s:.6f}" for x, y, w, h, s in boxes_xywh_score]
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


def read_predictions(
    pred_dir: str | os.PathLike, gt: WiderGroundTruth, *, nonfinite: list[str] | None = None
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Predictions for every ground-truth image (``<pred_dir>/<event>/<image>.txt``) and the missing files.

    A missing file counts as an image with no predictions; rows with NaN/infinity are dropped (see
    :func:`read_prediction_file`).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise WiderFormatError(f"prediction folder {pred_dir} not found")
    predictions, missing = [], []
    for event, names in zip(gt.events, gt.files):
        per_event = []
        for name in names:
            path = pred_dir / event / f"{name}.txt"
            if path.is_file():
                per_event.append(read_prediction_file(path, nonfinite=nonfinite))
            else:
                missing.append(str(path))
                per_event.append(np.zeros((0, 5)))
        predictions.append(per_event)
    return predictions, missing


def _iou_plus_one(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU ``ndarray[P, G]`` with the official +1 pixel convention."""
    ix1 = np.maximum(pred_xyxy[:, None, 0], gt_xyxy[None, :, 0])
    iy1 = np.maximum(pred_xyxy[:, None, 1], gt_xyxy[None, :, 1])
    ix2 = np.minimum(pred_xyxy[:, None, 2], gt_xyxy[None, :, 2])
    iy2 = np.minimum(pred_xyxy[:, None, 3], gt_xyxy[None, :, 3])
    iw = ix2 - ix1 + 1
    ih = iy2 - iy1 + 1
    inter = iw * ih
    pred_area = (pred_xyxy[:, 2] - pred_xyxy[:, 0] + 1) * (pred_xyxy[:, 3] - pred_xyxy[:, 1] + 1)
    gt_area = (gt_xyxy[:, 2] - gt_xyxy[:, 0] + 1) * (gt_xyxy[:, 3] - gt_xyxy[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (pred_area[:, None] + gt_area[None, :] - inter)
    iou[(iw <= 0) | (ih <= 0)] = 0.0
    return iou


def _score_bounds(predictions: list[list[np.ndarray]]) -> tuple[float, float]:
    lo, hi = 1.0, 0.0  # the official code's starting values
    for per_event in predictions:
        for pred in per_event:
            if len(pred):
                lo = min(lo, float(pred[:, 4].min()))
                hi = max(hi, float(pred[:, 4].max()))
    return lo, hi


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (area under the monotone precision envelope); NaN precisions are skipped."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.fmax(mpre[i - 1], mpre[i])
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


@dataclass
class WiderResult:
    """AP per setting, the PR curves (``ndarray[1000, 2]`` precision, recall) and bookkeeping."""

    ap: dict[str, float]
    curves: dict[str, np.ndarray]
    faces: dict[str, int]
    images: int
    missing_predictions: list[str] = field(default_factory=list)
    nonfinite_predictions: list[str] = field(default_factory=list)
    """``file:line`` of prediction rows dropped for holding NaN or infinity."""

    def to_dict(self) -> dict:
        return {
            **{s: self.ap[s] for s in SETTINGS},
            "faces": self.faces,
            "images": self.images,
            "missing_prediction_files": len(self.missing_predictions),
            "nonfinite_predictions_dropped": len(self.nonfinite_predictions),
        }


def evaluate(predictions: list[list[np.ndarray]], gt: WiderGroundTruth) -> WiderResult:
    """AP for easy / medium / hard. ``predictions[event][image]`` is ``ndarray[P, 5]`` (x y w h score)."""
    lo, hi = _score_bounds(predictions)
    span = hi - lo
    thresholds = 1.0 - np.arange(1, NUM_THRESHOLDS + 1, dtype=np.float64) / NUM_THRESHOLDS
    counts = {s: np.zeros((NUM_THRESHOLDS, 2)) for s in SETTINGS}  # proposals, recalled
    faces = {s: 0 for s in SETTINGS}

    for event_index, per_event in enumerate(predictions):
        for image_index, pred in enumerate(per_event):
            gt_boxes = gt.boxes[event_index][image_index]
            keep_per_setting = {s: gt.keep[s][event_index][image_index] for s in SETTINGS}
            for s in SETTINGS:
                faces[s] += len(keep_per_setting[s])
            if len(gt_boxes) == 0 or len(pred) == 0:
                continue
            order = np.argsort(-pred[:, 4], kind="stable")
            pred = pred[order]
            with np.errstate(divide="ignore", invalid="ignore"):
                scores = (pred[:, 4] - lo) / span
            pred_xyxy = np.concatenate([pred[:, :2], pred[:, :2] + pred[:, 2:4]], axis=1)
            gt_xyxy = np.concatenate([gt_boxes[:, :2], gt_boxes[:, :2] + gt_boxes[:, 2:4]], axis=1)
            iou = _iou_plus_one(pred_xyxy, gt_xyxy)
            best_gt = iou.argmax(axis=1)
            matched = iou[np.arange(len(pred)), best_gt] >= IOU_THRESHOLD
            # number of predictions at or above each threshold (scores are sorted descending; NaN counts as none)
            above = np.searchsorted(-scores, -thresholds, side="right")
            last = above - 1

            for s in SETTINGS:
                counted = np.zeros(len(gt_boxes), dtype=bool)
                counted[keep_per_setting[s] - 1] = True
                hits_counted = matched & counted[best_gt]
                ignored = matched & ~counted[best_gt]
                # a counted face is recalled by the first prediction that matches it
                first_hit = np.zeros(len(pred), dtype=bool)
                hit_positions = np.nonzero(hits_counted)[0]
                if hit_positions.size:
                    _, first = np.unique(best_gt[hit_positions], return_index=True)
                    first_hit[hit_positions[first]] = True
                recalled_so_far = np.cumsum(first_hit)
                proposals_so_far = np.cumsum(~ignored)
                has_any = above > 0
                counts[s][has_any, 0] += proposals_so_far[last[has_any]]
                counts[s][has_any, 1] += recalled_so_far[last[has_any]]

    ap, curves = {}, {}
    for s in SETTINGS:
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = counts[s][:, 1] / counts[s][:, 0]
            recall = counts[s][:, 1] / faces[s]
        curves[s] = np.stack([precision, recall], axis=1)
        ap[s] = voc_ap(recall, precision)
    return WiderResult(ap=ap, curves=curves, faces=faces, images=gt.num_images)


def evaluate_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> WiderResult:
    """Load ground truth and an official-format prediction folder, then :func:`evaluate`."""
    gt = load_ground_truth(gt_dir)
    nonfinite: list[str] = []
    predictions, missing = read_predictions(pred_dir, gt, nonfinite=nonfinite)
    result = evaluate(predictions, gt)
    result.missing_predictions = missing
    result.nonfinite_predictions = nonfinite
    return result
