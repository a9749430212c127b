"""Training the RoI mesh head on a frozen detector (retinaface.training.mesh_head and its command)."""

from __future__ import annotations

import json

import pytest
import torch

from retinaface.config import ModelConfig
from retinaface.errors import ConfigError
from retinaface.model.heads import RoIMeshHead
from retinaface.model.weights import load_model, read_safetensors, resolve_weights
from retinaface.training.mesh_head import MeshHeadTrainConfig, collect_samples, head_errors, train_mesh_head, with_fresh_mesh_head


@pytest.fixture(scope="module")
def released():
    return load_model("mobilenet0.25")


@pytest.fixture(scope="module")
def samples(released):
    model = with_fresh_mesh_head(released)
    return collect_samples(model, MeshHeadTrainConfig(images=6, image_size=256, seed=4))


def test_with_fresh_mesh_head_keeps_the_detector_and_starts_from_zero(released, astronaut_image):
    model = with_fresh_mesh_head(released)
    assert model.config.mesh_head == "roi" and isinstance(model.heads.mesh, RoIMeshHead)
    assert model.config.mesh_roi_size == ModelConfig.mesh_roi_size
    image = torch.from_numpy(astronaut_image).permute(2, 0, 1).float()
    with torch.no_grad():
        ours, theirs = model([image])[0], released([image])[0]
    assert len(ours["boxes"]) == len(theirs["boxes"]) >= 1
    torch.testing.assert_close(ours["boxes"], theirs["boxes"])
    torch.testing.assert_close(ours["landmarks"], theirs["landmarks"])
    assert ours["mesh_coefficients"].abs().max() == 0  # the zero-initialised head: the template face


def test_samples_pair_each_found_face_with_its_truth(samples):
    found = int(samples.detected.sum())
    assert found >= 4 and len(samples.pooled) == 2 * found  # read at the detection's box and at the true box
    assert samples.pooled.shape[1:] == (64, 8, 8) and samples.truth.shape == (2 * found, 144)
    assert samples.pixels.shape == (2 * found, 3, 32, 32)  # the crops the head's pixel branch reads
    # the same face twice: identical truth, boxes that overlap as the matching demands (IoU >= 0.5)
    from torchvision.ops import box_iou

    at_detection, at_truth = samples.detected, ~samples.detected
    detected, true = samples.boxes[at_detection], samples.boxes[at_truth]
    assert torch.equal(samples.truth[at_detection], samples.truth[at_truth])
    assert bool((box_iou(detected, true).diagonal() >= 0.5).all())
    # the true mesh lies where the face was found: the rendered (visible) box lies within its vertices'
    # bounds, and for most faces (those not cut by the image or their render square) it is those bounds
    inside = samples.true_vertices[at_truth].clamp(0, 256)
    low, high = inside.amin(dim=1), inside.amax(dim=1)
    sizes = true[:, 2:] - true[:, :2]
    assert bool((true[:, :2] >= low - 2).all()) and bool((true[:, 2:] <= high + 2).all())
    mismatch = torch.cat([(low - true[:, :2]).abs(), (high - true[:, 2:]).abs()], dim=1) / sizes.repeat(1, 2)
    assert float(mismatch.max(dim=1).values.median()) < 0.05


def test_a_short_run_teaches_the_head_pose_and_light(samples):
    torch.manual_seed(0)
    head = with_fresh_mesh_head(load_model("mobilenet0.25", mesh=False)).heads.mesh
    before = head_errors(head, samples)
    assert before["rotation_deg"] == before["rotation_deg_zero"] > 5  # zero coefficients: the zero baseline
    history = train_mesh_head(head, samples, MeshHeadTrainConfig(steps=150, batch_size=32, seed=0), report_every=50)
    assert len(history) == 3 and history[-1]["vertex"] < history[0]["vertex"]
    after = head_errors(head, samples)
    assert after["rotation_deg"] < 0.5 * after["rotation_deg_zero"]
    assert after["light_deg"] < 0.5 * after["light_deg_zero"]


def test_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="batch_size"):
        MeshHeadTrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="iou_threshold"):
        MeshHeadTrainConfig(iou_threshold=0)


def test_the_command_writes_weights_with_a_trained_head(tmp_path, capsys):
    from retinaface.cli.train_mesh_head import main

    output = tmp_path / "head.safetensors"
    assert main(["--output", str(output), "--no-progress", "--images=3", "--image_size=192", "--steps=20", "--batch_size=8"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == str(output)
    model = load_model(output, mesh=False)
    assert model.config.mesh_head == "roi"
    assert any(float(p.abs().sum()) > 0 for p in model.heads.mesh.output.parameters())
    _, metadata = read_safetensors(output)
    assert json.loads(metadata["mesh_head_training"])["config"]["steps"] == 20
    released_tensors, _ = read_safetensors(resolve_weights("mobilenet0.25"))
    tensors, _ = read_safetensors(output)
    for key, value in released_tensors.items():  # the detector itself is unchanged
        if not key.startswith(("heads.mesh.", "mesh_branch.")):
            assert torch.equal(tensors[key], value), key


def test_worker_processes_collect_the_same_faces_as_one_process(tmp_path, capsys):
    """--workers 2 splits the images between two processes; the cached faces are those one process reads."""
    from retinaface.cli.train_mesh_head import main

    settings = ["--no-progress", "--images=2", "--image_size=192", "--steps=1", "--batch_size=4", "--seed=3"]
    caches = {}
    for workers in (1, 2):
        caches[workers] = tmp_path / f"faces{workers}.pt"
        assert main(["--output", str(tmp_path / f"head{workers}.safetensors"), "--workers", str(workers), "--samples", str(caches[workers]), *settings]) == 0
    capsys.readouterr()
    one, two = (torch.load(caches[w], weights_only=True) for w in (1, 2))
    assert len(one["pooled"]) > 0
    for key in ("pooled", "pixels", "boxes", "truth", "detected"):
        assert torch.equal(one[key], two[key]), key


def test_the_command_refuses_unknown_settings(tmp_path, capsys):
    from retinaface.cli.train_mesh_head import main

    assert main(["--output", str(tmp_path / "x.safetensors"), "--stepz=3"]) != 0
    assert "stepz" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
