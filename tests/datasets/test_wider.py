import cv2
import numpy as np
import pytest

from retinaface.errors import AnnotationError
from retinaface.datasets.wider import WiderFaceDataset


def _image(path, size=(60, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 100, np.uint8))


def test_retinaface_format_with_and_without_landmarks(tmp_path):
    _image(tmp_path / "images" / "0--A" / "a.jpg")
    _image(tmp_path / "images" / "0--A" / "b.jpg")
    (tmp_path / "label.txt").write_text(
        "# 0--A/a.jpg\n"
        "10 20 30 40 15.0 30.0 0.0 30.0 30.0 0.0 22.0 40.0 0.0 16.0 50.0 0.0 30.0 50.0 0.0 0.9\n"
        "5 5 10 10 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0\n"
        "# 0--A/b.jpg\n"
    )
    ds = WiderFaceDataset(tmp_path / "label.txt")
    assert len(ds) == 2
    image, target = ds[0]
    assert image.shape == (3, 60, 80)
    assert target["boxes"].tolist() == [[10, 20, 40, 60], [5, 5, 15, 15]]
    assert target["landmarks_valid"].tolist() == [True, False]
    assert target["landmarks"][0, 2].tolist() == [22.0, 40.0]
    assert ds[1][1]["boxes"].shape == (0, 4)  # an image without faces is a valid sample


def test_official_box_only_format(tmp_path):
    _image(tmp_path / "images" / "e" / "x.jpg")
    _image(tmp_path / "images" / "e" / "y.jpg")
    (tmp_path / "wider_face_train_bbx_gt.txt").write_text(
        "e/x.jpg\n2\n1 2 3 4 0 0 0 0 0 0 \n10 10 5 6 1 0 0 0 0 0 \ne/y.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"
    )
    ds = WiderFaceDataset(tmp_path / "wider_face_train_bbx_gt.txt")
    assert [len(s.boxes) for s in ds.samples] == [2, 0]
    assert ds.samples[0].boxes[1].tolist() == [10, 10, 15, 16]
    assert not ds.samples[0].landmarks_valid.any()


@pytest.mark.parametrize(
    "lines, message",
    [
        ("# e/a.jpg\n1 2 3\n", "label.txt:2: expected 20 numbers"),
        ("# e/a.jpg\n1 2 x 4\n", "label.txt:2: non-numeric"),
        ("# e/a.jpg\n1 2 nan 4\n", "label.txt:2: NaN or infinite"),
        ("# e/a.jpg\n1 inf 3 4\n", "label.txt:2: NaN or infinite"),
        ("# e/a.jpg\n1 2 0 4\n", "label.txt:2: face box has zero"),
        ("# e/missing.jpg\n1 2 3 4\n", "e/missing.jpg listed but not found"),
        ("1 2 3 4\n# e/a.jpg\n", "label.txt:1: face line before"),
    ],
)
def test_problems_name_file_and_line_or_are_skipped(tmp_path, lines, message):
    _image(tmp_path / "images" / "e" / "a.jpg")
    (tmp_path / "label.txt").write_text(lines)
    with pytest.raises(AnnotationError, match=message):
        WiderFaceDataset(tmp_path / "label.txt", annotation_format="retinaface")
    with pytest.warns(UserWarning, match="skipped 1 annotation problems in .*label.txt"):
        skipping = WiderFaceDataset(tmp_path / "label.txt", annotation_format="retinaface", on_error="skip")
    assert len(skipping.skipped) == 1 and message.split(": ")[-1] in skipping.skipped[0]


@pytest.mark.parametrize("content, message", [(bytes(range(256)), "binary file"), (b"# e/a.jpg\n\xff\xfe 1 2 3 4\n", "not UTF-8 text")])
def test_binary_label_file_is_one_sentence(tmp_path, content, message):
    (tmp_path / "label.txt").write_bytes(content)
    with pytest.raises(AnnotationError, match=message):
        WiderFaceDataset(tmp_path / "label.txt")


def _synthetic_pair(tmp_path, records):
    _image(tmp_path / "images" / "0--S" / "a.jpg", size=(120, 160))
    (tmp_path / "label.txt").write_text(
        "# 0--S/a.jpg\n"
        "10 20 30 40 15.0 30.0 0.0 30.0 30.0 0.0 22.0 40.0 0.0 16.0 50.0 0.0 30.0 50.0 0.0 1.0\n"
        "90 30 40 50 95.0 40.0 0.0 110.0 40.0 0.0 102.0 50.0 0.0 96.0 60.0 0.0 110.0 60.0 0.0 1.0\n"
    )
    import json

    (tmp_path / "render_params.json").write_text(json.dumps({"0--S/a.jpg": records}))
    return tmp_path / "label.txt"


def test_synthetic_sets_carry_each_face_s_rendered_coefficients(tmp_path):
    records = [{"coefficients": [float(face)] * 144} for face in (1, 2)]
    _, target = WiderFaceDataset(_synthetic_pair(tmp_path, records))[0]
    assert target["mesh_truth"].shape == (2, 144)
    assert target["mesh_truth"][:, 0].tolist() == [1.0, 2.0]  # in the label file's face order
    assert "mesh_placement" not in target  # records without their render squares
    placed = [{**record, "placement": [5 + 80 * i, 10, 50]} for i, record in enumerate(records)]
    _, target = WiderFaceDataset(_synthetic_pair(tmp_path, placed))[0]
    assert target["mesh_placement"].tolist() == [[5.0, 10.0, 55.0, 60.0], [85.0, 10.0, 135.0, 60.0]]  # x, y, side -> x1 y1 x2 y2
    # a real annotation file (no render_params.json beside it) has no truth
    (tmp_path / "render_params.json").unlink()
    assert "mesh_truth" not in WiderFaceDataset(tmp_path / "label.txt")[0][1]


def test_render_params_that_disagree_with_the_labels_are_one_sentence(tmp_path):
    label = _synthetic_pair(tmp_path, [{"coefficients": [0.0] * 144}])  # one record, two faces
    with pytest.raises(AnnotationError, match=r"0--S/a.jpg has 1 faces, the label file 2"):
        WiderFaceDataset(label)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"cannot read .*render_params.json"),
    ('["0--S/a.jpg"]', r"render_params.json is not a render_params.json"),
    ('{"0--S/a.jpg": 3}', r"render_params.json is not a render_params.json"),
])
def test_unreadable_render_params_are_one_sentence(tmp_path, text, message):
    label = _synthetic_pair(tmp_path, [])
    (tmp_path / "render_params.json").write_text(text)
    with pytest.raises(AnnotationError, match=message):
        WiderFaceDataset(label)
