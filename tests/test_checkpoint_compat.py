"""Checkpoints written by vidiff 0.1.0 (tests/fixtures/v0_1, made by make_v0_1_checkpoints.py) load and
sample exactly as they did then: model, EMA and optimizer state under today's weight names."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidiff import VideoDiffusion
from vidiff.checkpoint import load_config, renamed
from vidiff.config import Config
from vidiff.errors import ConfigError
from vidiff.train import train

FIXTURES = Path(__file__).parent / "fixtures"
V0_1 = FIXTURES / "v0_1"
_spec = importlib.util.spec_from_file_location("make_v0_1", FIXTURES / "make_v0_1_checkpoints.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def test_old_weight_names_map_to_the_blocks():
    assert renamed("down.level1.res.0.conv1.weight") == "down.1.block0.res.conv1.weight"
    assert renamed("up.level0.cross.2.null_kv") == "up.0.block2.cross.null_kv"
    assert renamed("down.level0.downsample.conv.weight") == "down.0.downsample.conv.weight"
    assert renamed("middle.temporal.1.rel_pos.bias.weight") == "middle.block1.temporal.rel_pos.bias.weight"
    assert renamed("time_pool.cov") == "extensions.time_pool.cov"
    assert renamed("down.1.block0.res.conv1.weight") == "down.1.block0.res.conv1.weight"


@pytest.mark.parametrize("name", ["class-product", "text-product"])
def test_a_v0_1_model_samples_as_it_did(name):
    model = VideoDiffusion.from_pretrained(V0_1 / name)
    assert torch.equal(make.draw(model, name), load_file(V0_1 / f"{name}.samples.safetensors")["samples"])


def test_a_v0_1_run_samples_and_resumes_as_it_did(tmp_path):
    expected = load_file(V0_1 / "tiny-run.samples.safetensors")
    for weights, use_ema in (("ema", True), ("model", False)):
        model = VideoDiffusion.from_pretrained(V0_1 / "tiny-run", use_ema=use_ema)
        assert torch.equal(make.draw(model, "tiny-run"), expected[weights]), weights
    run = tmp_path / "run"
    shutil.copytree(V0_1 / "tiny-run", run)
    cfg = load_config(run / "checkpoints" / "step_0000002").override(["train.steps=3"])
    train(cfg, run, resume=True, progress=False, tensorboard=False)  # Adam's moments: saved by parameter position
    net = VideoDiffusion.from_pretrained(run, use_ema=False).net
    with torch.no_grad():
        assert torch.equal(net(*make.net_input(net)), expected["resumed"])


def _v0_1_config(**model) -> dict:
    d = json.loads((V0_1 / "class-product" / "config.json").read_text())
    d["model"].update(model)
    return d


def test_removed_options_turned_off_are_dropped():
    for model in ({"conditioned_arrow": False}, {"rel_pos_init": "zeros"}, {"rel_pos_init": "normal"}):
        assert Config.from_dict(_v0_1_config(**model)).model.rel_pos_init == model.get("rel_pos_init", "normal")


def test_removed_options_turned_on_are_one_clear_error(tmp_path):
    removed = "was removed after vidiff 0.1.0 .measured not to help: docs/findings/arrow-of-time.md.: remove"
    with pytest.raises(ConfigError, match=rf"model.conditioned_arrow=true {removed} model.conditioned_arrow"):
        Config.from_dict(_v0_1_config(conditioned_arrow=True))
    with pytest.raises(ConfigError, match=rf"model.rel_pos_init=neighbours {removed} model.rel_pos_init"):
        Config.from_dict(_v0_1_config(rel_pos_init="neighbours"))
    ck = tmp_path / "arrow"
    shutil.copytree(V0_1 / "class-product", ck)
    (ck / "config.json").write_text(json.dumps(_v0_1_config(conditioned_arrow=True)))
    with pytest.raises(ConfigError, match=r"config.json'.*this checkpoint's weights use it.*vidiff==0.1.0"):
        VideoDiffusion.from_pretrained(ck)


def test_a_checkpoint_that_started_from_neighbours_loads_with_a_warning(tmp_path):
    """The neighbours start only chose the bias's first values: the trained bias is in the weights."""
    ck = tmp_path / "neighbours"
    shutil.copytree(V0_1 / "class-product", ck)
    (ck / "config.json").write_text(json.dumps(_v0_1_config(rel_pos_init="neighbours")))
    with pytest.warns(UserWarning, match="rel_pos_init=neighbours was removed"):
        model = VideoDiffusion.from_pretrained(ck)
    expected = load_file(V0_1 / "class-product.samples.safetensors")["samples"]
    assert torch.equal(make.draw(model, "class-product"), expected)


def test_the_parameters_keep_their_v0_1_positions():
    """Adam's state is saved by parameter position: each saved moment has its parameter's shape."""
    ck = V0_1 / "tiny-run" / "checkpoints" / "step_0000002"
    moments = load_file(ck / "optimizer.safetensors")
    params = list(VideoDiffusion(load_config(ck)).net.parameters())
    assert [moments[f"state.{i}.exp_avg"].shape for i in range(len(params))] == [p.shape for p in params]
