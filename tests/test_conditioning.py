"""Conditioning in one place: each kind's training, request and null conditions; class names;
values the data decides; configurations of an earlier vidiff."""

import json

import pytest
import torch

from vidiff.conditioning import ClassConditioning, ConditioningConfig, build_conditioning
from vidiff.config import Config, ConfigError
from vidiff.errors import ConditioningError
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset

CLASSES = ConditioningConfig(kind="class", classes=("red circle", "blue square", "green triangle"))


def test_class_requests_by_name_or_index():
    c = ClassConditioning(CLASSES, num_classes=3)
    assert c.request(2, class_label="blue square")["class_labels"].tolist() == [1, 1]
    assert c.request(3, class_label=["green triangle", 0, "-1"])["class_labels"].tolist() == [2, 0, -1]
    with pytest.raises(ConditioningError, match="unknown class 'purple'.*'red circle', 'blue square'"):
        c.request(1, class_label="purple")
    with pytest.raises(ConditioningError, match="class 3 out of range: this model has 3 classes"):
        c.request(1, class_label=3)
    with pytest.raises(ConditioningError, match="not a prompt"):
        c.request(1, prompt="a red circle")
    with pytest.raises(ConditioningError, match="2 classes for 3 samples"):
        c.request(3, class_label=[0, 1])


def test_training_condition_drops_to_null():
    c = ClassConditioning(CLASSES, num_classes=3)
    cond = c.training({"label": torch.tensor([0, 2, 1])}, torch.tensor([True, False, True]), "cpu")
    assert cond["class_labels"].tolist() == [0, -1, 1]
    assert (
        build_conditioning(ConditioningConfig()).training({"label": torch.zeros(2)}, torch.ones(2, dtype=bool), "cpu")
        == {}
    )
    with pytest.raises(ConditioningError, match="unconditional"):
        build_conditioning(ConditioningConfig()).request(1, prompt="x")


def test_values_the_data_decides_cannot_be_set_by_hand():
    cfg = get_preset("cpu-tiny")
    for key in ("model.num_classes=5", "model.text_dim=384", "conditioning.classes=1"):
        with pytest.raises(ConfigError, match="cannot be set: it is .* read from the data"):
            cfg.override([key])


def test_derived_values_must_agree_with_the_data():
    from vidiff.data import MovingShapes
    from vidiff.train.setup import derive_config

    data = MovingShapes(num_videos=4, frames=4, size=16)
    cfg = get_preset("cpu-tiny").override(["conditioning.kind=class"])
    derived = derive_config(cfg, data)
    assert derived.model.num_classes == 12 and derived.conditioning.classes[0] == "red circle"
    assert derive_config(derived, data) == derived  # a run's own config.json agrees with its data
    wrong = Config.from_dict({**derived.to_dict(), "model": {**derived.to_dict()["model"], "num_classes": 5}})
    with pytest.raises(ConfigError, match="model.num_classes=5 in the configuration, but the data gives 12"):
        derive_config(wrong, data)


def test_config_of_an_earlier_vidiff_loads(tmp_path):
    """Before conditioning had its own section: train.conditioning / text_encoder, top-level classes."""
    torch.manual_seed(0)
    cfg = get_preset("cpu-tiny").override(["conditioning.kind=class"])
    old = cfg.to_dict()
    old["model"]["num_classes"] = 2
    old["train"].update(conditioning="class", text_encoder="", text_max_length=32)
    del old["conditioning"], old["sample"]["reconstruction_weight"]
    old["classes"] = ["cat", "dog"]
    model = VideoDiffusion(Config.from_dict(old))
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(old))
    loaded = VideoDiffusion.from_pretrained(tmp_path / "m")
    assert loaded.conditioning.kind == "class" and loaded.classes == ["cat", "dog"]
    assert loaded.config.sample.reconstruction_weight == 9.0
    assert loaded.sample(1, class_label="dog", steps=2).shape == (1, 3, 4, 16, 16)


def test_state_dict_has_each_weight_once():
    model = VideoDiffusion(get_preset("cpu-tiny"))
    keys = list(model.state_dict())
    assert keys and all(k.startswith("net.") for k in keys)
    assert len(keys) == len(model.net.state_dict())
