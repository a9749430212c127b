import json

import numpy as np

from retinaface.datasets.synthetic import generate
from retinaface.datasets.wider import WiderFaceDataset
from retinaface.evaluation.wider_eval import SETTINGS, load_ground_truth


def test_deterministic_wider_format_output(tmp_path):
    counts_a = generate(tmp_path / "a", num_train=3, num_val=2, seed=5, height=120, width=160, progress=False)
    generate(tmp_path / "b", num_train=3, num_val=2, seed=5, height=120, width=160, progress=False)
    generate(tmp_path / "c", num_train=3, num_val=2, seed=6, height=120, width=160, progress=False)
    label_a = (tmp_path / "a" / "train" / "label.txt").read_text()
    assert label_a == (tmp_path / "b" / "train" / "label.txt").read_text()
    assert label_a != (tmp_path / "c" / "train" / "label.txt").read_text()
    image = "train/images/0--Synthetic/0_synthetic_train.jpg"
    assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()

    dataset = WiderFaceDataset(tmp_path / "a" / "train" / "label.txt")
    assert len(dataset) == 3 and sum(len(s.boxes) for s in dataset.samples) == counts_a["train_faces"]
    for sample in dataset.samples:
        assert sample.landmarks_valid.all()
        for box, points in zip(sample.boxes, sample.landmarks):
            # the nose tip lies inside its face box
            assert box[0] <= points[2, 0] <= box[2] and box[1] <= points[2, 1] <= box[3]

    gt = load_ground_truth(tmp_path / "a" / "val" / "gt")
    assert gt.num_images == 2 and gt.num_faces() == counts_a["val_faces"]
    params = json.loads((tmp_path / "a" / "val" / "render_params.json").read_text())
    assert sum(len(v) for v in params.values()) == counts_a["val_faces"]
    assert all(len(face["coefficients"]) == 144 for faces in params.values() for face in faces)
    for s in SETTINGS:
        assert gt.num_faces(s) <= gt.num_faces()
    assert gt.num_faces("easy") <= gt.num_faces("medium") <= gt.num_faces("hard")
    listed = (tmp_path / "a" / "val" / "wider_val.txt").read_text().split()
    assert all((tmp_path / "a" / "val" / "images" / p.lstrip("/")).is_file() for p in listed)
    assert np.isfinite(gt.boxes[0][0]).all()
