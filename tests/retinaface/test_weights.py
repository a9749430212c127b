import pickle

import pytest
import torch

from retinaface.config import config_to_dict, model_preset
from retinaface.model.retinaface import build_retinaface
from retinaface.errors import WeightsError
from retinaface.model.weights import load_model, read_safetensors, save_safetensors


def test_safetensors_round_trip_rebuilds_model_from_file(tmp_path):
    torch.manual_seed(1)
    model = build_retinaface(model_preset("resnet50")).eval()
    path = tmp_path / "r50.safetensors"
    save_safetensors(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_checkpoint_loads_with_config(tmp_path):
    model = build_retinaface(model_preset("mobilenet0.25"))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": config_to_dict(model.config), "epoch": 3}, path)
    loaded = load_model(path)
    assert torch.equal(loaded.heads.box.convs[1].weight, model.heads.box.convs[1].weight)


class _Payload:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_checkpoint_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Payload(), "model_config": {}}, handle)
    with pytest.raises(WeightsError, match="not a loadable checkpoint"):
        load_model(path)
    assert not (tmp_path / "PWNED").exists()


def test_bad_weights_give_one_sentence_errors(tmp_path):
    with pytest.raises(WeightsError, match="neither a released name"):
        load_model("mobilenet0.5")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_model(junk)
    partial = tmp_path / "partial.safetensors"
    model = build_retinaface(model_preset("mobilenet0.25"))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(partial), metadata={"model_config": '{"backbone": "mobilenet0.25"}'})
    with pytest.raises(WeightsError, match="does not match"):
        load_model(partial)


def test_released_weights_have_metadata_and_a_trained_roi_mesh_head():
    import json

    from retinaface.model.weights import resolve_weights

    tensors, metadata = read_safetensors(resolve_weights("mobilenet0.25"))
    assert "biubug6" in metadata["upstream"]
    assert json.loads(metadata["model_config"])["mesh_head"] == "roi"
    training = json.loads(metadata["mesh_head_training"])  # how the head was trained: the command's settings
    assert training["config"]["images"] >= 1000 and training["config"]["steps"] >= 1000
    weights = [k for k in tensors if k.startswith("heads.mesh.") and k.endswith("weight")]
    assert "heads.mesh.output.weight" in weights and all(float(tensors[k].abs().sum()) > 0 for k in weights)
