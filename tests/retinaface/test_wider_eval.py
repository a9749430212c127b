"""The vectorised WIDER evaluator against a literal, loop-by-loop transcription of the official rules."""

from __future__ import annotations

import numpy as np
import pytest

from retinaface.evaluation.wider_eval import SETTINGS, WiderGroundTruth, evaluate, evaluate_folder, load_ground_truth, read_prediction_file, save_ground_truth, write_prediction_file
from retinaface.errors import WiderFormatError


def reference_ap(predictions, gt: WiderGroundTruth, setting: str) -> float:
    """The official algorithm written out step by step, one prediction and one threshold at a time."""
    lo, hi = 1.0, 0.0
    for per_event in predictions:
        for pred in per_event:
            for row in pred:
                lo, hi = min(lo, row[4]), max(hi, row[4])
    pr = np.zeros((1000, 2))
    faces = 0
    for e, per_event in enumerate(predictions):
        for i, pred in enumerate(per_event):
            boxes = gt.boxes[e][i]
            keep = gt.keep[setting][e][i]
            faces += len(keep)
            if len(boxes) == 0 or len(pred) == 0:
                continue
            order = sorted(range(len(pred)), key=lambda k: -pred[k][4])  # Python's sort is stable
            pred = [list(pred[k]) for k in order]
            for row in pred:
                row[4] = (row[4] - lo) / (hi - lo) if hi != lo else float("nan")
            recall_state = [0] * len(boxes)
            proposal = [1] * len(pred)
            pred_recall = [0] * len(pred)
            for h, row in enumerate(pred):
                px1, py1, px2, py2 = row[0], row[1], row[0] + row[2], row[1] + row[3]
                best, best_idx = -1.0, 0
                for g, b in enumerate(boxes):
                    gx1, gy1, gx2, gy2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
                    w = min(px2, gx2) - max(px1, gx1) + 1
                    hgt = min(py2, gy2) - max(py1, gy1) + 1
                    if w <= 0 or hgt <= 0:
                        o = 0.0
                    else:
                        inter = w * hgt
                        o = inter / ((px2 - px1 + 1) * (py2 - py1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - inter)
                    if o > best:
                        best, best_idx = o, g
                if best >= 0.5:
                    if (best_idx + 1) not in set(keep.tolist()):
                        recall_state[best_idx] = -1
                        proposal[h] = -1
                    elif recall_state[best_idx] == 0:
                        recall_state[best_idx] = 1
                pred_recall[h] = sum(1 for r in recall_state if r == 1)
            for t in range(1000):
                thresh = 1 - (t + 1) / 1000
                idx = [k for k, row in enumerate(pred) if row[4] >= thresh]
                if idx:
                    r = idx[-1]
                    pr[t, 0] += sum(1 for p in proposal[: r + 1] if p == 1)
                    pr[t, 1] += pred_recall[r]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = pr[:, 1] / pr[:, 0]
        recall = pr[:, 1] / faces
    mrec = [0.0, *recall, 1.0]
    mpre = [0.0, *precision, 0.0]
    for k in range(len(mpre) - 1, 0, -1):
        a, b = mpre[k - 1], mpre[k]
        mpre[k - 1] = b if np.isnan(a) else a if np.isnan(b) else max(a, b)  # MATLAB's max skips NaN
    return float(sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k]))


def tiny_gt(boxes_per_image, keep_per_image) -> WiderGroundTruth:
    gt = WiderGroundTruth(
        events=["0--Test"],
        files=[[f"img_{i}" for i in range(len(boxes_per_image))]],
        boxes=[[np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes_per_image]],
    )
    for s in SETTINGS:
        gt.keep[s] = [[np.asarray(k, dtype=np.int64) for k in keep_per_image]]
    return gt


def preds(*rows_per_image):
    return [[np.asarray(rows, dtype=np.float64).reshape(-1, 5) for rows in rows_per_image]]


FACE_A, FACE_B = [10, 10, 20, 20], [100, 100, 30, 30]


def test_ignored_face_removes_its_prediction():
    gt = tiny_gt([[FACE_A, FACE_B]], [[2]])  # only face B counts
    result = evaluate(preds([[10, 10, 20, 20, 0.9], [100, 100, 30, 30, 0.8]]), gt)
    # the hit on A is ignored (neither TP nor FP), so precision stays 1 and recall reaches 1
    assert result.ap["easy"] == pytest.approx(1.0)
    assert result.ap["easy"] == pytest.approx(reference_ap(preds([[10, 10, 20, 20, 0.9], [100, 100, 30, 30, 0.8]]), gt, "easy"))


def test_duplicate_detection_is_a_false_positive():
    gt = tiny_gt([[FACE_A]], [[1]])
    p = preds([[10, 10, 20, 20, 0.9], [11, 10, 20, 20, 0.8]])
    result = evaluate(p, gt)
    precision, recall = result.curves["easy"][-1]
    assert precision == pytest.approx(0.5) and recall == pytest.approx(1.0)
    assert result.ap["easy"] == pytest.approx(1.0)  # the envelope keeps precision 1 up to recall 1
    assert result.ap["easy"] == pytest.approx(reference_ap(p, gt, "easy"))


def test_false_positive_ranked_first_halves_ap():
    gt = tiny_gt([[FACE_A], [FACE_B]], [[1], [1]])
    p = preds([[300, 300, 10, 10, 1.0]], [[100, 100, 30, 30, 0.5]])
    # image 0: only a false positive at the top score; image 1: a hit at 0.5. With lo = min(1, 0.5) = 0.5
    # and hi = 1.0 the hit normalises to 0, so it counts only at the last threshold (0.0).
    result = evaluate(p, gt)
    assert result.ap["easy"] == pytest.approx(0.25)  # recall 0.5 at precision 0.5
    assert result.ap["easy"] == pytest.approx(reference_ap(p, gt, "easy"))


def test_empty_images_still_count_their_faces():
    gt = tiny_gt([[FACE_A], [FACE_B]], [[1], [1]])
    p = preds([[10, 10, 20, 20, 0.9], [300, 300, 10, 10, 0.2]], [])
    result = evaluate(p, gt)
    assert result.faces["easy"] == 2
    assert result.ap["easy"] == pytest.approx(0.5)  # one of two faces found, at precision 1
    assert result.ap["easy"] == pytest.approx(reference_ap(p, gt, "easy"))


def test_all_equal_scores_give_zero_ap_as_official_tools_do():
    gt = tiny_gt([[FACE_A]], [[1]])
    p = preds([[10, 10, 20, 20, 0.7]])
    assert evaluate(p, gt).ap["easy"] == 0.0 == reference_ap(p, gt, "easy")


def test_ties_keep_file_order():
    gt = tiny_gt([[FACE_A]], [[1]])
    miss_first = preds([[300, 300, 10, 10, 0.5], [10, 10, 20, 20, 0.5], [500, 500, 5, 5, 0.1]])
    hit_first = preds([[10, 10, 20, 20, 0.5], [300, 300, 10, 10, 0.5], [500, 500, 5, 5, 0.1]])
    # equal scores are one threshold step, so both orders give the same AP; the reference agrees
    for p in (miss_first, hit_first):
        assert evaluate(p, gt).ap["easy"] == pytest.approx(reference_ap(p, gt, "easy"), abs=1e-12)


def _noisy_predictions(gt: WiderGroundTruth, seed: int, fraction: float = 1.0, noise: float = 0.12):
    """Noisy copies of ground truth, dropped faces, random false positives, duplicated scores (ties)."""
    rng = np.random.default_rng(seed)
    out = []
    for per_event in gt.boxes:
        per = []
        for boxes in per_event:
            if rng.random() > fraction:
                per.append(np.zeros((0, 5)))
                continue
            kept = boxes[rng.random(len(boxes)) > 0.25]
            jitter = rng.normal(0, noise, kept.shape) * np.maximum(kept[:, 2:4], 1).repeat(2, axis=1)
            noisy = kept + jitter
            scores = np.clip(rng.beta(5, 2, len(kept)) + kept[:, 2:3].ravel() / 200.0, 0, 1.2)
            n_fp = rng.integers(0, 4)
            fps = np.column_stack([rng.uniform(0, 1000, (n_fp, 2)), rng.uniform(5, 80, (n_fp, 2)), rng.uniform(0, 0.8, n_fp)])
            rows = np.vstack([np.column_stack([noisy, scores]), fps])
            if len(rows) > 1:
                rows[-1, 4] = rows[0, 4]  # a tie
            rows[:, 4] = np.round(rows[:, 4], 3)  # more ties, like files written with few decimals
            per.append(rows)
        out.append(per)
    return out


@pytest.fixture(scope="module")
def real_gt(wider_gt_dir):
    return load_ground_truth(wider_gt_dir)


def test_real_ground_truth_counts(real_gt):
    assert len(real_gt.events) == 61 and real_gt.num_images == 3226 and real_gt.num_faces() == 39708
    assert [real_gt.num_faces(s) for s in SETTINGS] == [7211, 13319, 31958]


def test_matches_reference_on_real_ground_truth_subset(real_gt):
    # The literal reference is slow, so compare on the first 6 events (several hundred images).
    sub = WiderGroundTruth(real_gt.events[:6], real_gt.files[:6], real_gt.boxes[:6], {s: real_gt.keep[s][:6] for s in SETTINGS})
    predictions = _noisy_predictions(sub, seed=3, fraction=0.9)
    result = evaluate(predictions, sub)
    for s in SETTINGS:
        assert abs(result.ap[s] - reference_ap(predictions, sub, s)) < 1e-6, s
    assert 0.2 < result.ap["easy"] < 1.0


def test_full_val_set_is_sane(real_gt):
    mild = evaluate(_noisy_predictions(real_gt, seed=0, noise=0.05), real_gt)
    strong = evaluate(_noisy_predictions(real_gt, seed=0, noise=0.25), real_gt)
    for s in SETTINGS:
        # a quarter of the faces are dropped, so AP stays below 0.75; more box noise, fewer IoU >= 0.5 hits
        assert 0.75 > mild.ap[s] > strong.ap[s] > 0.05, s
    perfect = [[np.column_stack([b, np.linspace(1, 0.5, len(b))]) for b in per] for per in real_gt.boxes]
    # not exactly 1: a few official boxes have width <= 0 and, with the +1 convention, can never be matched
    assert evaluate(perfect, real_gt).ap["hard"] == pytest.approx(1.0, abs=1e-3)


def test_prediction_files_round_trip_and_errors(tmp_path):
    rows = np.array([[1.0, 2.0, 30.0, 40.0, 0.9], [5.0, 6.0, 7.0, 8.0, 0.25]])
    write_prediction_file(tmp_path / "e" / "a.txt", "a", rows)
    np.testing.assert_allclose(read_prediction_file(tmp_path / "e" / "a.txt"), rows)
    (tmp_path / "bad.txt").write_text("a\n2\n1 2 3 4 0.5\n")
    with pytest.raises(WiderFormatError, match="declares 2 boxes but lists 1"):
        read_prediction_file(tmp_path / "bad.txt")
    (tmp_path / "bad2.txt").write_text("a\n1\n1 2 x 4 0.5\n")
    with pytest.raises(WiderFormatError, match="bad2.txt:3"):
        read_prediction_file(tmp_path / "bad2.txt")


def test_ground_truth_mat_round_trip_and_folder_evaluation(tmp_path):
    gt = tiny_gt([[FACE_A, FACE_B], [FACE_B]], [[1, 2], [1]])
    gt.keep["easy"] = [[np.array([2]), np.array([1])]]
    save_ground_truth(gt, tmp_path / "gt")
    loaded = load_ground_truth(tmp_path / "gt")
    assert loaded.events == gt.events and loaded.files == gt.files
    assert len(loaded.boxes[0]) == len(gt.boxes[0]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(loaded.boxes[0], gt.boxes[0]))
    assert [k.tolist() for k in loaded.keep["easy"][0]] == [[2], [1]]
    rows = np.array([[10, 10, 20, 20, 0.9], [300, 300, 10, 10, 0.1]])  # a hit on A, then a false positive
    write_prediction_file(tmp_path / "pred" / "0--Test" / "img_0.txt", "img_0", rows)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt")
    assert result.missing_predictions == [str(tmp_path / "pred" / "0--Test" / "img_1.txt")]
    assert result.ap["medium"] == pytest.approx(1 / 3)  # 1 of 3 faces, precision 1
    assert result.ap["easy"] == 0.0  # face A is ignored in easy, B is never found
