import pytest

from retinaface.errors import ConfigError
from retinaface.config import InferenceConfig, ModelConfig, apply_overrides, config_from_dict, config_to_dict, model_preset


def test_presets_differ_in_backbone_and_width():
    assert model_preset("mobilenet0.25").backbone == "mobilenet0.25"
    assert model_preset("resnet50").fpn_channels == 256
    with pytest.raises(ConfigError, match="unknown model preset"):
        model_preset("vgg16")


def test_overrides_parse_types():
    cfg = apply_overrides(InferenceConfig(), ["--score_threshold=0.3", "max-size=640", "nms_threshold=1"])
    assert cfg.score_threshold == 0.3 and cfg.max_size == 640 and cfg.nms_threshold == 1.0
    assert isinstance(cfg.nms_threshold, float)
    cfg = apply_overrides(cfg, ["max_size=none"])
    assert cfg.max_size is None
    model = apply_overrides(ModelConfig(), ["anchor_sizes=[[8, 16], [32, 64], [128, 256]]"])
    assert model.anchor_sizes == ((8, 16), (32, 64), (128, 256))


@pytest.mark.parametrize(
    "override, message",
    [
        ("scor_threshold=0.3", "unknown config key"),
        ("score_threshold=high", "expected a number"),
        ("max_size=6.5", "expected an integer"),
        ("score_threshold", "key=value"),
        ("pre_nms_top_k=true", "expected an integer"),
    ],
)
def test_bad_overrides_fail(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(InferenceConfig(), [override])


def test_dict_round_trip():
    cfg = model_preset("resnet50")
    assert config_from_dict(ModelConfig, config_to_dict(cfg)) == cfg
    with pytest.raises(ConfigError):
        config_from_dict(ModelConfig, {**config_to_dict(cfg), "extra": 1})
