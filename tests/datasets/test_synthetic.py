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


def test_shape_truth_round_trips_through_the_prior_decoder(tmp_path):
    """Each face's stored latent (the prior's identity and expression weights, also in its coefficients),
    decoded by the prior-trained decoder and rendered at its placement, gives exactly the box and landmarks
    that were written and the pixels of the image; the mean face (zero latent, same camera and light) does
    not. The decoded shape is the linear prior's face for those weights, to the decoder's accuracy."""
    import cv2
    import torch

    from retinaface.datasets.wider import WiderFaceDataset
    from retinaface.mesh.branch import MeshBranch
    from retinaface.mesh.decoder import load_prior_decoder
    from retinaface.mesh.prior import load_prior

    generate(tmp_path, num_train=4, num_val=1, seed=0, height=240, width=320, progress=False)
    root = tmp_path / "train"
    params = json.loads((root / "render_params.json").read_text())
    samples = WiderFaceDataset(root / "label.txt").samples
    branch = MeshBranch()
    load_prior_decoder(branch.decoder)
    prior = load_prior()
    face_height = float(prior.mean[:, 1].max() - prior.mean[:, 1].min())
    assert len(samples) == len(params) == 4
    pixel_errors, mean_face_errors, checked_large = [], [], 0
    for sample, (relative, faces) in zip(samples, params.items()):
        image = cv2.imread(str(root / "images" / relative)).astype(np.float32)
        height, width = image.shape[:2]
        assert len(faces) == len(sample.boxes) > 0
        for face, points in zip(faces, sample.landmarks):
            coefficients = torch.tensor([face["coefficients"]])
            identity, expression = torch.tensor(face["identity"]), torch.tensor(face["expression"])
            assert len(identity) == prior.num_identity and len(expression) == prior.num_expression
            assert torch.equal(coefficients[0, :60], identity) and torch.equal(coefficients[0, 60:115], expression)
            assert (coefficients[0, 115:128] == 0).all() and ((expression >= 0) & (expression <= 1)).all()
            x, y, side = face["placement"]
            square = torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32)
            drawn = []
            for latent in (coefficients[:, :128], torch.zeros(1, 128)):  # the stored shape, then the mean face
                with torch.no_grad():
                    mesh = branch.decode(torch.cat([latent, coefficients[:, 128:]], dim=1))
                    _, rendered = branch(coefficients, image_size=side, mesh=mesh)
                    vertices, _ = branch.image_vertices(torch.cat([latent, coefficients[:, 128:]], dim=1), square)
                mask = rendered.mask[0, 0].numpy() > 0.5
                rows, cols = np.nonzero(mask)
                box = np.array([cols.min() + x, rows.min() + y, cols.max() + 1 + x, rows.max() + 1 + y], np.float32)
                box = box.clip(0, [width, height, width, height])
                landmarks = branch.template.landmarks(vertices)[0, :, :2].numpy()
                colours = rendered.image[0].permute(1, 2, 0).numpy()[..., ::-1] * 255
                x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
                inside = mask[y0 - y : y1 - y, x0 - x : x1 - x]
                error = np.abs(image[y0:y1, x0:x1][inside] - colours[y0 - y : y1 - y, x0 - x : x1 - x][inside]).mean()
                drawn.append((box, landmarks, error))
            (box, landmarks, error), (mean_box, mean_landmarks, mean_error) = drawn
            np.testing.assert_allclose(box, face["box"], atol=0.01)
            np.testing.assert_allclose(landmarks, points, atol=0.01)  # label.txt keeps 2 decimals
            if side >= 60:
                checked_large += 1
                assert np.abs(mean_landmarks - points).max() > 1.0  # the latent, not the camera alone, placed them
            if not face["occluded"]:
                pixel_errors.append(error)
                mean_face_errors.append(mean_error)
            decoded = branch.decoder(coefficients[:, :128]).vertices
            linear = prior.shapes(torch.cat([identity, expression])[None])
            assert 100 * (decoded - linear).norm(dim=-1).mean() / face_height < 1.0  # % of the face height
    assert checked_large >= 2 and len(pixel_errors) >= 5
    assert all(a < b for a, b in zip(pixel_errors, mean_face_errors))
    assert np.median(pixel_errors) < 8 < np.median(mean_face_errors)  # grey levels: JPEG and edges only
