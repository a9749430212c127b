"""The RoI mesh head (ModelConfig.mesh_head="roi"): shapes, zero start, where it runs (the kept detections at
inference, the pixel term's faces in training), that earlier checkpoints keep the per-anchor head, and a
short seeded run in which it learns pose on face features. ONNX parity: tests/retinaface/test_onnx_backend.py."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from retinaface.errors import ConfigError
from retinaface.config import InferenceConfig, LossConfig, ModelConfig, config_to_dict, model_preset
from retinaface.model.heads import AnchorMeshHead, RoIMeshHead
from retinaface.model.retinaface import build_retinaface
from retinaface.model.weights import load_model


def _roi_model(inference: InferenceConfig | None = None, **loss) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_retinaface(model_preset("mobilenet0.25"), inference, loss=LossConfig(**loss))


def _randomise(head: torch.nn.Module) -> None:
    """Non-zero weights everywhere (the untrained head's last layer is zero), so outputs tell rows apart."""
    torch.manual_seed(1)
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.05)


class RowCounter:
    """Forward hook on the mesh head: the number of faces (rows) of every call."""

    def __init__(self, head: torch.nn.Module) -> None:
        self.rows: list[int] = []
        self.handle = head.register_forward_hook(lambda module, args, output: self.rows.append(output.shape[0]))


def test_new_models_get_the_roi_head_and_its_shapes():
    model = _roi_model().eval()
    head = model.heads.mesh
    assert model.config.mesh_head == ModelConfig().mesh_head == "roi" and isinstance(head, RoIMeshHead)
    features = [torch.randn(2, 64, 40, 40), torch.randn(2, 64, 20, 20), torch.randn(2, 64, 10, 10)]  # a 320 px batch
    # faces of 20, 100, 300 and 50 px go to the levels whose anchors fit them (16-32, 64-128, 256-512 px;
    # the levels meet at 45 and 181 px)
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 60.0, 150.0, 160.0], [0.0, 0.0, 300.0, 300.0], [5.0, 5.0, 55.0, 55.0]])
    image_ids = torch.tensor([0, 1, 1, 0])
    assert head.levels(boxes).tolist() == [0, 1, 2, 1]
    assert head.pool(features, image_ids, boxes).shape == (4, 64, 8, 8)
    images = torch.randn(2, 3, 320, 320) * 50
    assert head.pixel_size == 32 and head.pool_pixels(images, image_ids, boxes).shape == (4, 3, 32, 32)
    _randomise(head)
    with torch.no_grad():
        coefficients = head(features, image_ids, boxes, images=images)
        assert coefficients.shape == (4, 144)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no faces: no rows, and nothing said about it
            assert head(features, image_ids[:0], boxes[:0], images=images).shape == (0, 144)
        # each row reads its own image and box: the same box in the other image gives other coefficients
        assert not torch.allclose(head(features, 1 - image_ids[:1], boxes[:1], images=images), coefficients[:1])
        # the pixel branch reads the face's pixels: other pixels in the box, other coefficients
        changed = images.clone()
        changed[0, :, 10:30, 10:30] += 40
        assert not torch.allclose(head(features, image_ids[:1], boxes[:1], images=changed), coefficients[:1])
        assert torch.allclose(head(features, image_ids[1:2], boxes[1:2], images=changed), coefficients[1:2], atol=1e-5)
        with pytest.raises(ValueError, match="pixels"):
            head(features, image_ids, boxes)
        # and the pooled window is the box's: a level-0 box read on level 0 of its own image
        from torchvision.ops import roi_align

        expected = roi_align(features[0], torch.tensor([[0.0, 10, 10, 30, 30]]), output_size=8, spatial_scale=1 / 8, sampling_ratio=2, aligned=True)
        assert torch.allclose(head.pool(features, image_ids[:1], boxes[:1]), expected)


def test_an_eval_mode_head_averages_four_readings_around_each_box_and_a_training_head_reads_once():
    # one reading by default (the released weights); the model the synthetic mesh preset trains reads four times
    assert ModelConfig().mesh_roi_test_offset == 0.0 and model_preset("mobilenet0.25-pixels64").mesh_roi_test_offset == 0.05
    torch.manual_seed(0)
    head = build_retinaface(dataclasses.replace(model_preset("mobilenet0.25"), mesh_roi_test_offset=0.05), mesh=False).heads.mesh
    assert head.test_offset == 0.05
    # a 60 x 80 px box: moved 3 px right and left, 4 px down and up
    box = torch.tensor([[100.0, 100.0, 160.0, 180.0]])
    expected = torch.tensor([[103.0, 100.0, 163.0, 180.0], [97.0, 100.0, 157.0, 180.0], [100.0, 104.0, 160.0, 184.0], [100.0, 96.0, 160.0, 176.0]])
    assert torch.allclose(head.test_boxes(box)[:, 0], expected)
    _randomise(head)
    features = [torch.randn(2, 64, 40, 40), torch.randn(2, 64, 20, 20), torch.randn(2, 64, 10, 10)]
    images = torch.randn(2, 3, 320, 320) * 50
    boxes = torch.cat([box, torch.tensor([[20.0, 30.0, 60.0, 75.0]])])
    image_ids = torch.tensor([0, 1])
    with torch.no_grad():
        head.eval()
        averaged = head(features, image_ids, boxes, images=images)
        readings = torch.stack([head.read(features, image_ids, moved, images=images) for moved in head.test_boxes(boxes)])
        assert torch.allclose(averaged, readings.mean(dim=0), atol=1e-6)
        at_box = head.read(features, image_ids, boxes, images=images)
        assert not torch.allclose(averaged, at_box, atol=1e-4)  # the readings differ from the box's own
        assert head(features, image_ids[:0], boxes[:0], images=images).shape == (0, 144)
        head.train()
        assert torch.allclose(head(features, image_ids, boxes, images=images), at_box, atol=1e-6)
        single = build_retinaface(model_preset("mobilenet0.25"), mesh=False).heads.mesh
        single.load_state_dict(head.state_dict())
        assert torch.allclose(single.eval()(features, image_ids, boxes, images=images), at_box, atol=1e-6)
    with pytest.raises(ConfigError, match="mesh_roi_test_offset"):
        ModelConfig(mesh_roi_test_offset=0.5)
    # weights stored before the setting existed (the released ones) read once; loading can ask for four
    # readings: the same weights, read four times
    released = load_model("mobilenet0.25", mesh=False)
    stored = config_to_dict(released.config)
    stored.pop("mesh_roi_test_offset", None)
    assert ModelConfig.from_stored(stored).mesh_roi_test_offset == 0.0 and released.heads.mesh.test_offset == 0.0
    four = load_model("mobilenet0.25", mesh=False, mesh_roi_test_offset=0.05)
    assert four.heads.mesh.test_offset == 0.05
    assert all(torch.equal(a, b) for a, b in zip(four.state_dict().values(), released.state_dict().values()))


def test_eager_pooling_reads_each_box_on_its_level_only_with_the_traced_graphs_values_and_gradients():
    """Eager runs pool each box on its own level (a third of RoI Align's backward in training); the traced
    graph (ONNX) pools every box on every level and picks: both give each box's own level's RoI Align and
    the same gradients, boxes off the image included."""
    from torchvision.ops import roi_align

    head = _roi_model().heads.mesh
    features = [torch.randn(2, 64, 40, 40, requires_grad=True), torch.randn(2, 64, 20, 20, requires_grad=True),
                torch.randn(2, 64, 10, 10, requires_grad=True)]
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 60.0, 150.0, 160.0], [-40.0, -30.0, 300.0, 310.0], [5.0, 5.0, 55.0, 55.0]])
    image_ids = torch.tensor([0, 1, 1, 0])
    weights = torch.randn(4, 64, 8, 8)

    eager = head.pool(features, image_ids, boxes)
    eager_gradients = torch.autograd.grad((eager * weights).sum(), features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the boxes' count is fixed in a trace
        traced = torch.jit.trace(lambda a, b, c, ids, bx: head.pool([a, b, c], ids, bx), (*features, image_ids, boxes))
    fixed = traced(*features, image_ids, boxes)
    fixed_gradients = torch.autograd.grad((fixed * weights).sum(), features)
    assert str(traced.graph).count("torchvision::roi_align") == 3  # every level, every box
    assert torch.equal(eager, fixed)
    for mine, theirs in zip(eager_gradients, fixed_gradients):
        assert torch.allclose(mine, theirs, atol=1e-6)
    rois = torch.cat([image_ids[:, None].float(), boxes], dim=1)
    for row, level in enumerate(head.levels(boxes).tolist()):
        expected = roi_align(features[level], rois[row:row + 1], output_size=8, spatial_scale=1 / head.strides[level], sampling_ratio=2, aligned=True)
        assert torch.equal(eager[row:row + 1], expected)
    # no boxes: no rows
    assert head.pool(features, image_ids[:0], boxes[:0]).shape == (0, 64, 8, 8)


def test_the_pixel_branch_reads_the_boxes_pixels():
    """A box over a uniformly coloured square reads that colour (over 255) inside the crop, whatever the rest
    of the image holds. A 32 px box gives 32 crop cells, each the mean of 2 x 2 bilinear samples a quarter
    pixel from the cell's centre, so a one-pixel line weighs 3/4 in its own row and 1/8 in each neighbour."""
    head = _roi_model().heads.mesh
    colour = torch.tensor([30.0, -60.0, 90.0])
    images = torch.randn(1, 3, 120, 160) * 60
    images[0, :, 40:72, 50:82] = colour[:, None, None]
    box = torch.tensor([[50.0, 40.0, 82.0, 72.0]])
    crop = head.pool_pixels(images, torch.tensor([0]), box)
    assert crop.shape == (1, 3, 32, 32)
    inside = crop[0, :, 1:-1, 1:-1]  # the outer cells' samples reach a quarter pixel beyond the box
    assert torch.allclose(inside, (colour / 255)[:, None, None].expand_as(inside), atol=1e-6)
    images[0, :, 50, 50:82] = 255.0  # a line along the box's 11th row of pixels
    crop = head.pool_pixels(images, torch.tensor([0]), box)[0, :, :, 1:-1]
    line = lambda weight: ((weight * 255 + (1 - weight) * colour) / 255)[:, None].expand(3, 30)  # noqa: E731
    assert torch.allclose(crop[:, 10], line(0.75), atol=1e-5)
    assert torch.allclose(crop[:, 9], line(0.125), atol=1e-5) and torch.allclose(crop[:, 11], line(0.125), atol=1e-5)
    assert torch.allclose(crop[:, 12], line(0.0), atol=1e-5)


def test_the_pixel_branch_sees_shading_not_exposure():
    """Crops are standardised over each crop's pixels and channels together: a brighter or more contrasted
    copy of a face (gain > 0 and offset on every channel) gives the pixel branch the same input, a copy with
    one channel changed does not, and each face is standardised on its own."""
    from retinaface.model.heads import standardise_crops

    torch.manual_seed(0)
    crops = torch.rand(2, 3, 8, 8)
    out = standardise_crops(crops)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(out.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-2)
    exposed = torch.stack([crops[0] * 2.5 + 0.3, crops[1]])
    assert torch.allclose(standardise_crops(exposed), out, atol=1e-2)  # up to the 1e-3 floor on the spread
    tinted = crops.clone()
    tinted[0, 2] += 0.5
    assert (standardise_crops(tinted)[0] - out[0]).abs().max() > 0.3
    assert torch.allclose(standardise_crops(tinted)[1], out[1])


def test_the_untrained_roi_head_gives_exactly_zero_coefficients():
    model = _roi_model(InferenceConfig(score_threshold=0.0, max_detections=20)).eval()
    with torch.no_grad():
        detections = model([torch.rand(3, 90, 120) * 255])[0]
    assert len(detections["boxes"]) == 20
    assert torch.equal(detections["mesh_coefficients"], torch.zeros(20, 144))
    assert any(p.abs().sum() > 0 for p in model.heads.mesh.convs.parameters())  # only the last layer starts at zero


def test_inference_runs_the_roi_head_once_on_the_kept_detections_in_network_pixels():
    """One call per batch, one row per returned detection (after NMS and the per-image cap), however many
    candidates pass the score threshold; each row is the head applied to that detection's box in the
    network input's pixels (before the boxes are clipped and mapped back to the image)."""
    model = _roi_model(InferenceConfig(score_threshold=0.0, max_detections=7, max_size=100)).eval()
    _randomise(model.heads.mesh)
    counter = RowCounter(model.heads.mesh)
    images = [torch.rand(3, 150, 200) * 255, torch.rand(3, 64, 48) * 255]  # the first is resized to 100 x 75
    with torch.no_grad():
        resized, scales = model.detect_resized(images)
        assert counter.rows == [sum(len(d["boxes"]) for d in resized)] and 0 < counter.rows[0] <= 14
        batch = model.preprocessor(images)[0]
        features = model.context_features(batch)
        candidates = 2 * sum(f.shape[-2] * f.shape[-1] for f in features) * len(images)  # threshold 0: every anchor
        assert candidates > 30 * counter.rows[0]  # the head never saw the candidates NMS and the cap removed
        for image, found in enumerate(resized):
            direct = model.heads.mesh(features, torch.full((len(found["boxes"]),), image), found["boxes"], images=batch)
            assert torch.allclose(found["mesh_coefficients"], direct, atol=1e-5)
            assert found["mesh_coefficients"].abs().sum() > 0
        mapped = model(images)
    assert scales[0] == pytest.approx(0.5) and len(mapped[0]) == len(resized[0])
    for found, back in zip(resized, mapped):  # mapping back leaves the coefficients alone
        assert torch.equal(found["mesh_coefficients"], back["mesh_coefficients"])


def test_training_runs_the_roi_head_on_the_pixel_terms_faces_only():
    """Three faces, one cut by a crop (left out of the pixel term): the head runs once, on two rows, the
    faces' true boxes; with max_mesh_faces=1 on one; with the pixel term off not at all. A mirrored image's
    faces are left out too, yet every head parameter stays in the graph (DDP)."""
    image = torch.rand(3, 96, 128) * 255
    boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 110.0, 80.0], [0.0, 50.0, 30.0, 96.0]])
    target = {"boxes": boxes, "landmarks": torch.rand(3, 5, 2) * 40 + 15, "clipped": torch.tensor([False, False, True])}
    model = _roi_model().train()
    counter = RowCounter(model.heads.mesh)
    seen = []
    model.heads.mesh.register_forward_pre_hook(lambda module, args: seen.append(args[2].detach().clone()))
    losses = model([image], [target])
    assert counter.rows == [2] and losses["loss_pixel"] > 0
    assert torch.equal(seen[0][seen[0][:, 0].argsort()], boxes[:2])
    capped = _roi_model(max_mesh_faces=1).train()
    counter = RowCounter(capped.heads.mesh)
    capped([image], [target])
    assert counter.rows == [1]
    off = _roi_model(pixel_weight=0.0).train()
    counter = RowCounter(off.heads.mesh)
    off([image], [target])
    assert counter.rows == []
    mirrored = model([image], [dict(target, mirrored=torch.tensor(True))])
    assert mirrored["loss_pixel"] == 0
    sum(mirrored.values()).backward()
    assert all(p.grad is not None for p in model.heads.mesh.parameters())


def test_earlier_checkpoints_keep_the_per_anchor_head_and_the_released_weights_carry_the_roi_head(tmp_path):
    """A stored config without the mesh_head key (checkpoints written before it) builds the paper's
    per-anchor head; the released weights carry the trained RoI head, and fine-tuning them keeps it."""
    released = load_model("mobilenet0.25", mesh=False)
    assert released.config.mesh_head == "roi" and isinstance(released.heads.mesh, RoIMeshHead)
    stored = config_to_dict(released.config)
    without_pixels = {key: value for key, value in stored.items() if key != "mesh_roi_pixels"}
    # a RoI head stored before the pixel branch existed is built without it
    assert ModelConfig.from_stored(without_pixels).mesh_roi_pixels == 0
    assert build_retinaface(ModelConfig.from_stored(without_pixels), mesh=False).heads.mesh.pixels is None
    del stored["mesh_head"], stored["mesh_roi_size"], stored["mesh_roi_convs"], stored["mesh_roi_pixels"]
    assert ModelConfig.from_stored(stored) == dataclasses.replace(released.config, mesh_head="anchor", mesh_roi_pixels=0)
    anchor = build_retinaface(ModelConfig.from_stored(stored), mesh=False)
    anchor.load_state_dict({k: v for k, v in released.state_dict().items() if not k.startswith("heads.mesh.")}, strict=False)
    path = tmp_path / "earlier.pt"
    torch.save({"model": anchor.state_dict(), "model_config": stored}, path)
    earlier = load_model(path, mesh=False)
    assert earlier.config.mesh_head == "anchor" and isinstance(earlier.heads.mesh, AnchorMeshHead)
    image = torch.rand(3, 120, 160) * 255
    with torch.no_grad():
        a, b = released([image])[0], earlier([image])[0]
    assert all(torch.equal(a[k], b[k]) for k in a if k != "mesh_coefficients")  # the same detector

    from retinaface.training.loop import build_model_for_training, train_config

    finetune = build_model_for_training(train_config("mobilenet0.25-synthetic-finetune", ["--train_labels=x"]))
    assert finetune.config.mesh_head == "roi"
    with pytest.raises(ConfigError, match="mesh_head"):
        dataclasses.replace(model_preset("mobilenet0.25"), mesh_head="grid")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from retinaface.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, num_train=6, num_val=1, seed=1, height=120, width=160, progress=False)
    return root


def test_the_mesh_terms_teach_the_roi_head_pose_on_face_features(tiny_data):
    """The mesh terms of the training loss (pixel term and mesh landmark term, weights 0.01 each), on the
    released detector's frozen trunk, on synthetic faces of the face prior's variety rendered with the
    decoder the model has: a short seeded run of the RoI head (Adam at the default mesh_lr, the faces'
    true boxes and landmarks, no augmentation) brings its rotation error at the training faces below half
    the zero coefficients' and its light error below theirs. Measured 2026-12-06 after 60 steps, the head
    with its pixel branch: rotation 11.9 vs 26.2 degrees, light 21.7 vs 26.8; shape 4.2 % of the face
    height against the mean face's 3.2 (the terms do not teach shape: docs/training.md). Without the pixel
    branch the pixel term alone reached 27.4 degrees after 60 steps on these faces: their shapes differ
    from the mean face."""
    from retinaface.datasets.wider import WiderFaceDataset
    from retinaface.evaluation.mesh_eval import _read, evaluate_at_boxes
    from retinaface.mesh.branch import MeshPixelLoss
    from retinaface.training.loop import build_model_for_training, train_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = train_config("mobilenet0.25-synthetic", ["--train_labels=x", "--freeze_batchnorm=true", "--loss.mesh_landmark_weight=0.01"])
        model = build_model_for_training(config)
        assert isinstance(model.heads.mesh, RoIMeshHead)
        released = load_model("mobilenet0.25", mesh=False)
        model.load_state_dict({k: v for k, v in released.state_dict().items() if not k.startswith("heads.mesh.")}, strict=False)
        model.mesh_branch.pixel_criterion = MeshPixelLoss(crop_size=56, max_faces=64)  # every face, a cheaper crop
        head = list(model.heads.mesh.parameters())
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("heads.mesh."))
        images, targets = [], []
        for sample in WiderFaceDataset(tiny_data / "train" / "label.txt").samples:
            images.append(_read(tiny_data / "train" / "images", str(sample.image_path.relative_to(tiny_data / "train" / "images")))[0])
            targets.append({"boxes": torch.as_tensor(sample.boxes).float(), "landmarks": torch.as_tensor(sample.landmarks).float()})
        optimiser = torch.optim.Adam(head, lr=config.mesh_lr)
        first = None
        for _ in range(60):
            losses = model(images, targets, generator=torch.Generator().manual_seed(0))
            mesh_terms = losses["loss_pixel"] + losses["loss_mesh_landmarks"]
            first = mesh_terms.item() if first is None else first
            optimiser.zero_grad()
            mesh_terms.backward()
            optimiser.step()
        summary = evaluate_at_boxes(model, tiny_data / "train").summary()
    finally:
        torch.set_num_threads(threads)
    assert summary["mesh_matched"] == summary["mesh_faces"] > 10
    assert mesh_terms.item() < 0.6 * first
    assert summary["mesh_rotation_deg"] < 0.5 * summary["mesh_rotation_deg_zero"], summary
    assert summary["mesh_light_deg"] < summary["mesh_light_deg_zero"], summary


def test_a_checkpoint_from_before_the_key_resumes_with_its_per_anchor_head(tiny_data, tmp_path):
    """A training checkpoint whose stored config has no mesh_head (written before the key existed, with the
    per-anchor head) passes the resume check and continues with that head, though new runs get the RoI head."""
    from retinaface.training.loop import save_checkpoint, setup_training, train, train_config

    def overrides(output):
        return [f"--train_labels={tiny_data / 'train' / 'label.txt'}", f"--output={output}", "--workers=0",
                "--image_size=96", "--batch_size=2", "--checkpoint_every=0", "--max_steps=2"]

    config = train_config("mobilenet0.25-synthetic", overrides(tmp_path / "run"))
    anchor = dataclasses.replace(model_preset("mobilenet0.25"), mesh_head="anchor")
    run = setup_training(config, device="cpu", model_config=anchor)
    path = tmp_path / "run" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, run, epoch=0, step_in_epoch=0)
    checkpoint = torch.load(path, weights_only=True)
    for key in ("mesh_head", "mesh_roi_size", "mesh_roi_convs", "mesh_roi_pixels"):
        del checkpoint["model_config"][key]
    torch.save(checkpoint, path)

    resumed = train(train_config("", [], resume=str(path)), resume=str(path), progress=False, device="cpu")
    assert resumed.global_step == 2
    model = load_model(tmp_path / "run" / "final.safetensors", mesh=False)
    assert model.config.mesh_head == "anchor" and isinstance(model.heads.mesh, AnchorMeshHead)
    fresh = train(train_config("mobilenet0.25-synthetic", overrides(tmp_path / "fresh")), progress=False, device="cpu")
    assert fresh.global_step == 2 and load_model(tmp_path / "fresh" / "final.safetensors", mesh=False).config.mesh_head == "roi"
