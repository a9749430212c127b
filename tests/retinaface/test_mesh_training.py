"""The pixel term trains the mesh head inside detector training: a short seeded run on synthetic faces whose
true render parameters are known, measured with retinaface.evaluation.mesh_eval at the true boxes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from retinaface.config import model_preset
from retinaface.evaluation.mesh_eval import evaluate_at_boxes
from retinaface.training.loop import parameter_groups, train, train_config
from retinaface.model.weights import load_model


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from retinaface.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    # every face the prior's mean face (shape_scale=0), which the model's decoder draws with a zero latent:
    # these tests are about pose and light (shape variety: tests/retinaface/test_mesh_head_roi.py)
    generate(root, num_train=6, num_val=1, seed=1, height=120, width=160, shape_scale=0.0, progress=False)
    return root


def _config(root, output, **extra):
    overrides = [
        f"--train_labels={root / 'train' / 'label.txt'}", f"--output={output}", "--workers=0", "--image_size=160",
        "--batch_size=6", "--warmup_epochs=1", "--decay_epochs=(1000,)", "--checkpoint_every=0",
    ] + [f"--{k}={v}" for k, v in {"epochs": 40, **extra}.items()]
    return train_config("mobilenet0.25-synthetic", overrides)


def _zero_initialised(model):
    """The mesh head's parameters that start at zero: the whole per-anchor head, the RoI head's last layer."""
    head = model.heads.mesh
    return list((head.output if hasattr(head, "output") else head).parameters())


def test_mesh_parameters_get_their_own_learning_rate(tmp_path):
    from retinaface.training.loop import build_model_for_training

    config = train_config(
        "mobilenet0.25-synthetic", ["--train_labels=x", "--mesh_optimizer=sgd", "--mesh_lr_scale=10", "--train_mesh_decoder=true"]
    )
    model = build_model_for_training(config)
    rest, mesh = parameter_groups(model, config)
    names = {id(p): n for n, p in model.named_parameters()}
    assert rest["lr"] == config.lr and mesh["lr"] == pytest.approx(10 * config.lr)
    assert {names[id(p)].split(".")[0] for p in mesh["params"]} == {"heads", "mesh_branch"}
    assert all(names[id(p)].startswith("heads.mesh.") for p in mesh["params"] if names[id(p)].startswith("heads"))
    assert not any(names[id(p)].startswith(("heads.mesh.", "mesh_branch.")) for p in rest["params"])
    assert len(rest["params"]) + len(mesh["params"]) == len(list(model.parameters()))


def test_default_mesh_head_optimiser_is_adam_and_the_decoder_is_frozen():
    from retinaface.training.loop import build_model_for_training, build_optimizers

    config = train_config("mobilenet0.25-synthetic", ["--train_labels=x"])
    model = build_model_for_training(config)
    sgd, adam = build_optimizers(model, config)
    names = {id(p): n for n, p in model.named_parameters()}
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == config.mesh_lr
    assert {names[id(p)] for p in adam.param_groups[0]["params"]} == {n for n, _ in model.named_parameters() if n.startswith("heads.mesh.")}
    in_sgd = {names[id(p)] for g in sgd.param_groups for p in g["params"]}
    assert not any(n.startswith(("heads.mesh.", "mesh_branch.")) for n in in_sgd)
    assert not any(p.requires_grad for p in model.mesh_branch.parameters())


def test_pixel_term_reaches_the_mesh_head(tiny_data, tmp_path):
    """Gradients of the pixel term reach the zero-initialised head through ``train``: after a short seeded
    run from scratch its weights moved and its coefficients differ from zero at the true faces. (From
    scratch, in 10 steps, the trunk does not see faces yet, so *better* than the template is asserted in
    the next test, on face features; see the README's training section.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic
    try:
        result = train(_config(tiny_data, tmp_path / "run", mesh_lr_scale=10, epochs=10), progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert result.global_step == 10
    model = load_model(tmp_path / "run" / "final.safetensors")
    assert model.config.mesh_head == "roi"  # the default for new models
    moved = [p.abs().max().item() for p in _zero_initialised(model)]
    assert moved and max(moved) > 1e-4
    summary = evaluate_at_boxes(model, tiny_data / "train").summary()
    assert summary["mesh_matched"] == summary["mesh_faces"] > 10
    assert summary["mesh_pixel_l1"] != summary["mesh_pixel_l1_zero"]  # the head's renders are no longer the template's

    no_pixel = train(_config(tiny_data, tmp_path / "off", mesh_lr_scale=10, epochs=10, **{"loss.pixel_weight": 0}), progress=False, device="cpu")
    assert no_pixel.global_step == 10
    untouched = load_model(tmp_path / "off" / "final.safetensors")
    assert all(p.abs().max().item() == 0 for p in _zero_initialised(untouched))


def test_pixel_term_teaches_the_head_pose_and_light_on_face_features(tiny_data):
    """The pixel term alone, on features that already see faces (the released detector's, frozen), with
    the decoder the synthetic faces were drawn with (the prior-trained one, which new models get) and faces
    it draws with a zero latent (the mean face): a short seeded run of the paper's per-anchor mesh head
    (Adam, each face's best anchor, no augmentation) brings its rotation and light errors at the training
    faces well below the zero coefficients'. (From scratch the trunk must first learn faces: see the README.)"""
    from retinaface.mesh.branch import MeshPixelLoss
    from retinaface.datasets.synthetic import load_render_params
    from retinaface.evaluation.mesh_eval import _faces, _read
    from retinaface.training.loop import build_model_for_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = train_config("mobilenet0.25-synthetic", ["--train_labels=x", "--freeze_batchnorm=true"])
        model = build_model_for_training(config, dataclasses.replace(model_preset("mobilenet0.25"), mesh_head="anchor"))
        released = load_model("mobilenet0.25")
        model.load_state_dict({k: v for k, v in released.state_dict().items() if not k.startswith("mesh_branch.")}, strict=False)
        model.mesh_branch.pixel_criterion = MeshPixelLoss(crop_size=56, max_faces=64)  # every face, a cheaper crop
        head = [p for n, p in model.named_parameters() if n.startswith("heads.mesh.")]
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("heads.mesh."))
        params = load_render_params(tiny_data / "train" / "render_params.json")
        images, targets = [], []
        for relative, records in params.items():
            boxes, _ = _faces(records)
            images.append(_read(tiny_data / "train" / "images", relative)[0])
            targets.append({"boxes": boxes, "landmarks": torch.zeros(len(boxes), 5, 2), "landmarks_valid": torch.zeros(len(boxes), dtype=torch.bool)})
        optimiser = torch.optim.Adam(head, lr=config.mesh_lr)
        first = None
        for _ in range(60):
            pixel = model(images, targets, generator=torch.Generator().manual_seed(0))["loss_pixel"]
            first = pixel.item() if first is None else first
            optimiser.zero_grad()
            pixel.backward()
            optimiser.step()
        summary = evaluate_at_boxes(model, tiny_data / "train").summary()
    finally:
        torch.set_num_threads(threads)
    assert summary["mesh_matched"] == summary["mesh_faces"] > 10
    assert pixel.item() < 0.6 * first
    # measured 2026-12-06: rotation 14.2 vs 26.2 degrees, light 13.7 vs 26.8 (with the untrained template decoder
    # and the faces it drew, 2026-12-01: 9.1 and 15.9; the prior decoder's latent moves the face far more, and
    # the pixel term spends steps on shape: 4.2 % of the face height off the true mean face)
    assert summary["mesh_rotation_deg"] < 0.6 * summary["mesh_rotation_deg_zero"], summary
    assert summary["mesh_light_deg"] < summary["mesh_light_deg_zero"], summary
    assert summary["mesh_pixel_l1"] < summary["mesh_pixel_l1_zero"], summary
