import torch

from retinaface.datasets.transforms import TrainAugmentation


def _target():
    return {
        "boxes": torch.tensor([[20.0, 30.0, 60.0, 80.0], [100.0, 100.0, 103.0, 103.0]]),
        "landmarks": torch.tensor([[[30.0, 45.0], [50.0, 46.0], [40.0, 58.0], [32.0, 70.0], [49.0, 71.0]]] * 2),
        "landmarks_valid": torch.tensor([True, False]),
    }


def test_same_seed_same_sample_different_seed_different():
    image = torch.randint(0, 255, (3, 200, 300), dtype=torch.uint8)
    aug = TrainAugmentation(size=128)
    a, b, c = aug(image, _target(), 1), aug(image, _target(), 1), aug(image, _target(), 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert not torch.equal(a[0], c[0])


def test_flip_mirrors_geometry_and_swaps_left_and_right():
    image = torch.zeros(3, 160, 160, dtype=torch.uint8)
    image[:, :, :10] = 255  # a bright stripe on the left edge
    aug = TrainAugmentation(size=160, crop_scales=(1.0,), flip_probability=1.0, photometric=False, min_face_size=0)
    out, target = aug(image, _target(), 0)
    assert out[:, :, -10:].float().mean() == 255 and out[:, :, :10].float().mean() == 0
    assert target["boxes"][0].tolist() == [100.0, 30.0, 140.0, 80.0]  # x -> 160 - x
    left_eye, right_eye = target["landmarks"][0, 0], target["landmarks"][0, 1]
    assert left_eye.tolist() == [110.0, 46.0] and right_eye.tolist() == [130.0, 45.0]  # swapped, still left < right
    assert target["landmarks"][0, 3, 0] < target["landmarks"][0, 4, 0]


def test_crop_keeps_faces_by_centre_and_drops_tiny_faces():
    image = torch.zeros(3, 400, 400, dtype=torch.uint8)
    aug = TrainAugmentation(size=200, crop_scales=(0.3,), photometric=False, flip_probability=0.0, min_face_size=3.0)
    for seed in range(20):
        _, target = aug(image, _target(), seed)
        # the 3 px face shrinks to 1.5 px at half scale... unless the crop (120 px) magnifies it 1.67x
        assert len(target["boxes"]) >= 1
        boxes = target["boxes"]
        assert (boxes >= 0).all() and (boxes <= 200).all()
        assert (torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 3.0).all()


def test_faces_cut_by_the_crop_are_flagged_clipped():
    """A 20 px face in a 50 px crop: whole when the crop spans it, else cut (and then flagged)."""
    image = torch.zeros(3, 100, 100, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[40.0, 40.0, 60.0, 60.0]]), "landmarks": torch.full((1, 5, 2), 50.0),
              "landmarks_valid": torch.tensor([True])}
    aug = TrainAugmentation(size=50, crop_scales=(0.5,), photometric=False, flip_probability=0.0, min_face_size=0)
    seen = set()
    for seed in range(40):
        _, out = aug(image, target, seed)
        width, height = (out["boxes"][0, 2:] - out["boxes"][0, :2]).tolist()
        cut = width < 19.5 or height < 19.5  # at size 50 the crop is not rescaled: a whole face stays 20 px
        assert bool(out["clipped"][0]) == cut
        seen.add(cut)
    assert seen == {True, False}
    # no crop found (no face at all): nothing flagged, shapes agree
    _, empty = aug(image, {"boxes": torch.zeros(0, 4), "landmarks": torch.zeros(0, 5, 2), "landmarks_valid": torch.zeros(0, dtype=torch.bool)}, 0)
    assert empty["clipped"].shape == (0,)


def test_mesh_truth_follows_its_faces_through_crops_and_dropped_faces():
    """Each kept face keeps its own truth row: faces are told apart by their truth's first entry, which
    counts them left to right, so any crop keeps an increasing run; the 3 px face is dropped at 0.75 scale."""
    image = torch.zeros(3, 200, 200, dtype=torch.uint8)
    target = _target()
    target["boxes"] = torch.tensor([[20.0, 30.0, 60.0, 80.0], [100.0, 100.0, 103.0, 103.0], [140.0, 40.0, 190.0, 110.0]])
    target["landmarks"] = torch.zeros(3, 5, 2)
    target["landmarks_valid"] = torch.tensor([True, False, True])
    target["mesh_truth"] = torch.arange(3.0)[:, None].expand(3, 144).clone()
    whole = TrainAugmentation(size=150, crop_scales=(1.0,), photometric=False, flip_probability=0.0, min_face_size=3.0)
    _, out = whole(image, target, 0)
    assert out["mesh_truth"][:, 0].tolist() == [0.0, 2.0]  # the tiny face and its row are gone
    cropping = TrainAugmentation(size=150, crop_scales=(0.45, 0.6), photometric=False, min_face_size=0.0)
    seen = set()
    for seed in range(30):
        _, out = cropping(image, target, seed)
        ids = out["mesh_truth"][:, 0]
        assert len(ids) == len(out["boxes"]) and (ids.diff() > 0).all()
        left_to_right = (out["boxes"][:, 0] if not out["mirrored"] else -out["boxes"][:, 0]).argsort()
        assert torch.equal(ids[left_to_right], ids.sort().values)
        seen.add(tuple(ids.tolist()))
    assert len(seen) > 2  # the crops did keep different faces


def test_render_squares_move_with_their_faces_and_are_never_cut():
    """A face whose render square is its own box keeps the two equal through every crop, flip and resize
    while the crop leaves it whole; a face the crop cuts keeps its whole square, which still holds its box."""
    image = torch.zeros(3, 200, 240, dtype=torch.uint8)
    target = _target()
    target["boxes"] = torch.tensor([[20.0, 30.0, 70.0, 80.0], [120.0, 60.0, 180.0, 120.0]])
    target["landmarks"] = torch.zeros(2, 5, 2)
    target["landmarks_valid"] = torch.tensor([True, True])
    target["mesh_placement"] = target["boxes"].clone()
    augment = TrainAugmentation(size=150, crop_scales=(0.45, 0.6, 1.0), photometric=False, min_face_size=0.0)
    seen_flip, seen_cut = set(), False
    for seed in range(40):
        _, out = augment(image, target, seed)
        whole = ~out["clipped"]
        assert torch.allclose(out["mesh_placement"][whole], out["boxes"][whole], atol=1e-4)
        cut = out["clipped"]
        if cut.any():
            seen_cut = True
            squares, boxes = out["mesh_placement"][cut], out["boxes"][cut]
            assert (squares[:, :2] <= boxes[:, :2] + 1e-4).all() and (squares[:, 2:] >= boxes[:, 2:] - 1e-4).all()
            assert ((squares[:, :2] < -1e-3) | (squares[:, 2:] > 150 + 1e-3)).any(dim=1).all()  # reaches past the image
        seen_flip.add(bool(out["mirrored"]))
    assert seen_flip == {False, True} and seen_cut
