"""The training levers, each against its closed form: min-SNR-γ loss weighting, the learning-rate
schedules (and their resume), and the post-hoc power-function EMA of EDM2."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vidiff.checkpoint import CheckpointError, resolve_checkpoint
from vidiff.config import ConfigError
from vidiff.diffusion.loss import DiffusionLoss, min_snr_weight
from vidiff.diffusion.process import Denoiser
from vidiff.errors import VidiffError
from vidiff.io.files import save_tensors
from vidiff.nn.ema import PowerEMA, gamma_to_sigma_rel, power_beta, reconstruct, sigma_rel_to_gamma, snapshot_path
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train
from vidiff.train.lr_schedule import lr_factor

TINY = get_preset("cpu-tiny").override(["train.save_every=3", "train.steps=6", "train.num_samples=1", "sample.steps=2"])
LAMBDAS = [-12.0, -3.0, 0.0, math.log(5.0) - 1e-3, math.log(5.0) + 1e-3, 2.5, 12.0]


# ---- min-SNR-γ -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weight_is_the_closed_form(prediction, gamma):
    lam = torch.tensor(LAMBDAS, dtype=torch.float64)
    snr = np.exp(np.array(LAMBDAS))
    expected = {
        "epsilon": np.minimum(snr, gamma) / snr,
        "v_prediction": np.minimum(snr, gamma) / (snr + 1),
        "sample": np.minimum(snr, gamma),
    }[prediction]
    np.testing.assert_allclose(min_snr_weight(lam, gamma, prediction).numpy(), expected, rtol=1e-12)


class _Fixed(torch.nn.Module):
    """A 'network' whose output is a fixed function of its input: 0.3 z + 0.1."""

    def forward(self, z, logsnr):
        return 0.3 * z + 0.1


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_min_snr_loss_is_min_snr_times_the_x_error(prediction):
    """Whatever the parameterisation, the loss is min(SNR, γ)‖x̂ − x‖² (mean over the elements)."""
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(4, 3, 2, 4, 4, generator=g), torch.randn(4, 3, 2, 4, 4, generator=g)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    loss_fn = DiffusionLoss("min_snr", min_snr_gamma=5.0)
    denoiser = Denoiser(_Fixed(), prediction)
    lam = loss_fn.logsnr_fn(t, loss_fn.logsnr_min, loss_fn.logsnr_max).float()
    alpha, sigma = torch.sigmoid(lam).sqrt().view(-1, 1, 1, 1, 1), torch.sigmoid(-lam).sqrt().view(-1, 1, 1, 1, 1)
    z = alpha * x + sigma * eps
    out = 0.3 * z + 0.1
    x_hat = {"epsilon": (z - sigma * out) / alpha, "v_prediction": alpha * z - sigma * out, "sample": out}[prediction]
    expected = torch.clamp(lam.exp(), max=5.0) * ((x_hat - x) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(loss_fn(denoiser, x, t=t, eps=eps), expected, rtol=2e-4, atol=1e-6)


def test_min_snr_loss_by_hand():
    """ε-prediction of 0 at SNR = 10 (λ = log 10), γ = 5: the loss is (5/10)·mean(ε²)."""
    eps = torch.tensor([[1.0, -2.0, 3.0, 0.5]]).view(1, 1, 1, 2, 2)
    x = torch.zeros_like(eps)
    zero = Denoiser(lambda z, logsnr: torch.zeros_like(z), "epsilon")
    loss_fn = DiffusionLoss("min_snr", logsnr_fn=lambda t, lo, hi: torch.full_like(t, math.log(10.0)))
    loss = loss_fn(zero, x, t=torch.tensor([0.5], dtype=torch.float64), eps=eps)
    assert loss.item() == pytest.approx(0.5 * (1 + 4 + 9 + 0.25) / 4, rel=1e-6)


def test_default_weighting_is_unchanged():
    """The presets keep the weighting they had, and min_snr_gamma alone changes no loss."""
    assert [get_preset(p).diffusion.loss_weighting for p in ("cpu-demo", "cpu-tiny", "ucf101-16x64x64")] == [
        "v",
        "v",
        "epsilon",
    ]
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 3, 2, 4, 4, generator=g), torch.randn(2, 3, 2, 4, 4, generator=g)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    denoiser = Denoiser(_Fixed(), "v_prediction")
    a = DiffusionLoss("v")(denoiser, x, t=t, eps=eps)
    assert torch.equal(a, DiffusionLoss("v", min_snr_gamma=1.0)(denoiser, x, t=t, eps=eps))


# ---- learning-rate schedules ---------------------------------------------------------------------
def _tr(**changes):
    return TINY.override([f"train.{k}={v}" for k, v in changes.items()]).train


def test_lr_schedules_are_their_closed_forms():
    const = _tr(warmup_steps=10)
    assert [lr_factor(const, s) for s in (0, 4, 9, 10, 5000)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0])
    inv = _tr(warmup_steps=10, lr_schedule="inverse_sqrt", lr_decay_steps=100)
    assert [lr_factor(inv, s) for s in (0, 50, 100, 400, 10_000)] == pytest.approx([0.1, 1.0, 1.0, 0.5, 0.1])
    inv_default = _tr(warmup_steps=10, lr_schedule="inverse_sqrt")  # t_ref = the warm-up
    assert lr_factor(inv_default, 40) == pytest.approx(math.sqrt(10 / 40))
    cos = _tr(warmup_steps=10, steps=110, lr_schedule="cosine")  # 100 steps of decay after the warm-up
    expected = [0.1, 1.0, 0.5 * (1 + math.cos(math.pi * 0.25)), 0.5, 0.0, 0.0]
    assert [lr_factor(cos, s) for s in (0, 10, 35, 60, 110, 200)] == pytest.approx(expected, abs=1e-12)
    cos_d = _tr(warmup_steps=0, lr_schedule="cosine", lr_decay_steps=20)
    assert lr_factor(cos_d, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 20)))


def test_lr_schedule_continues_on_resume(tmp_path):
    cfg = TINY.override(["train.lr_schedule=cosine", "train.warmup_steps=2", "train.lr_decay_steps=3"])
    train(cfg.override(["train.steps=3"]), tmp_path / "split", progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    # a row's lr is the one set after its update: that of the next step, 0-based index = row's step
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * lr_factor(cfg.train, r["step"]) for r in rows])
    assert rows[-1]["lr"] == pytest.approx(0.0) and rows[2]["lr"] == pytest.approx(1e-3 * 0.75)


def test_lever_options_are_validated():
    for bad, what in (
        ("train.lr_schedule=linear", "train.lr_schedule must be one of"),
        ("train.lr_decay_steps=-1", "train.lr_decay_steps must be >= 0"),
        ("train.ema=karras", "train.ema must be one of"),
        ("diffusion.loss_weighting=snr", "diffusion.loss_weighting must be one of"),
        ("diffusion.min_snr_gamma=0", "diffusion.min_snr_gamma must be a positive number"),
    ):
        with pytest.raises(ConfigError, match=what):
            TINY.override([bad])
    with pytest.raises(ConfigError, match=r"train.ema_sigma_rels must be distinct numbers in \(0, 0.2887\)"):
        TINY.override(["train.ema=power", "train.ema_sigma_rels=0.05,0.3"])
    with pytest.raises(ConfigError, match="train.ema=power needs snapshots"):
        TINY.override(["train.ema=power", "train.save_every=0"])
    assert TINY.override(["train.ema_sigma_rels=[0.04, 0.2]"]).train.ema_sigma_rels == (0.04, 0.2)


# ---- post-hoc EMA --------------------------------------------------------------------------------
def test_sigma_rel_and_gamma_are_eq_3():
    for gamma in (0.0, 1.0, 6.94, 16.97, 100.0):
        assert gamma_to_sigma_rel(gamma) == pytest.approx(math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))
        assert sigma_rel_to_gamma(gamma_to_sigma_rel(gamma)) == pytest.approx(gamma, abs=1e-9)
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2's two profiles
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    assert gamma_to_sigma_rel(0.0) == pytest.approx(12**-0.5)


def test_power_ema_weights_each_step_by_the_profile():
    """After t updates, θ_τ has weight (τ^{γ+1} − (τ − 1)^{γ+1}) / t^{γ+1}: the profile integrated over step τ."""
    gamma, t = 3.0, 9
    net = torch.nn.Linear(t, 1, bias=False)
    power = PowerEMA(net, [gamma_to_sigma_rel(gamma)])
    for step in range(t):
        net.weight.data = torch.nn.functional.one_hot(torch.tensor([step]), t).double().float()  # θ_τ: one-hot τ
        power.update(net, step)
    tau = np.arange(1, t + 1, dtype=np.float64)
    expected = (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / t ** (gamma + 1)
    np.testing.assert_allclose(power.modules[0].weight.detach().numpy()[0], expected, rtol=1e-5, atol=1e-7)
    assert power_beta(gamma, 0) == 0.0


def _toy_run(folder, sigma_rels, steps=1000, every=50):
    """A 'training' whose weights θ_t are a known smooth sequence; the profiles tracked, and snapshotted
    every `every` steps into `folder` as a run does. Returns the profiles after `steps` steps."""
    net = torch.nn.Linear(3, 1)
    power = PowerEMA(net, sigma_rels)
    for step in range(steps):
        u = (step + 1) / 1000
        net.weight.data = torch.tensor([[math.sin(8 * u) + u, math.cos(20 * u) * math.exp(-2 * u), u**0.5]])
        net.bias.data = torch.tensor([math.exp(-3 * u)])
        power.update(net, step)
        if folder is not None and (step + 1) % every == 0:
            snapshot_path(folder, step + 1).parent.mkdir(parents=True, exist_ok=True)
            save_tensors(snapshot_path(folder, step + 1), power.state(), power.metadata(step + 1))
    return [torch.cat([m.weight.detach().flatten(), m.bias.detach()]) for m in power.modules]


@pytest.mark.parametrize("target", [0.03, 0.07, 0.15])
def test_posthoc_ema_equals_the_ema_tracked_directly(tmp_path, target):
    """The EMA of a σ_rel that was not tracked, reconstructed from snapshots of σ_rel 0.05 and 0.10,
    equals that EMA tracked over the same weights (to 1e-3, while the tracked ones are ≥ 0.05 away)."""
    tracked = _toy_run(tmp_path, [0.05, 0.10])
    direct = _toy_run(None, [target])[0]
    weights, meta = reconstruct(tmp_path, target)
    posthoc = torch.cat([weights["weight"].flatten(), weights["bias"]])
    assert meta["step"] == "1000" and meta["snapshots"] == "20"
    assert (posthoc - direct).abs().max() < 1e-3
    assert min((p - direct).abs().max() for p in tracked) > 0.05
    early, _ = reconstruct(tmp_path, target, step=500)  # an earlier step, from its 10 snapshots up to it
    posthoc = torch.cat([early["weight"].flatten(), early["bias"]])
    assert (posthoc - _toy_run(None, [target], steps=500)[0]).abs().max() < 5e-3


@pytest.fixture(scope="module")
def power_run(tmp_path_factory):
    """TINY with train.ema=power: snapshots every 2 steps and at the checkpoints (3, 6)."""
    run = tmp_path_factory.mktemp("power") / "run"
    cfg = TINY.override(["train.ema=power", "train.ema_snapshot_every=2", "train.ema_sigma_rels=0.05,0.15"])
    train(cfg, run, progress=False)
    return run, cfg


def test_power_ema_run_writes_snapshots_and_vidiff_ema_reconstructs(power_run, capsys):
    from vidiff.cli import main

    run, _ = power_run
    assert sorted(p.name for p in (run / "ema_snapshots").iterdir()) == [
        f"step_000000{s}.safetensors" for s in (2, 3, 4, 6)
    ]
    ck = resolve_checkpoint(run)
    profiles, ema = load_file(ck / "ema_power.safetensors"), load_file(ck / "ema.safetensors")
    assert all(torch.equal(profiles[f"0.{k}"], v) for k, v in ema.items())  # ema.safetensors: the first profile
    assert any(not torch.equal(profiles[f"1.{k}"], v) for k, v in ema.items())
    assert main(["ema", str(run), "--sigma-rel", "0.1"]) == 0
    written = run / "ema" / "sigma_rel_0.100_step_0000006.safetensors"
    assert str(written) in capsys.readouterr().out
    model = VideoDiffusion.from_pretrained(run, ema=0.1)
    default = VideoDiffusion.from_pretrained(run)
    assert any(not torch.equal(a, b) for a, b in zip(model.net.parameters(), default.net.parameters()))
    assert all(
        torch.equal(a, b)
        for a, b in zip(VideoDiffusion.from_pretrained(run, ema=written).net.parameters(), model.net.parameters())
    )
    assert model.sample(1, steps=2).shape == (1, 3, 4, 16, 16)
    args = ["sample", "--checkpoint", str(run), "--num-videos", "1", "--steps", "2", "--out", str(run / "s")]
    assert main([*args, "--ema", "0.1"]) == 0 and (run / "s" / "sample_000.mp4").is_file()
    assert main([*args, "--ema", "0.1", "--no-ema"]) == 2
    assert "--ema 0.1 asks for a post-hoc EMA and --no-ema for the raw weights: give one" in capsys.readouterr().err


def test_posthoc_ema_errors_name_the_fix(power_run, tiny_run, capsys):
    from vidiff.cli import main

    run, _ = power_run
    with pytest.raises(
        CheckpointError,
        match=r"no post-hoc EMA of σ_rel 0.2 at step 6: run `vidiff ema .* "
        r"--sigma-rel 0.2 --step 6` first",
    ):
        VideoDiffusion.from_pretrained(run, ema=0.2)
    with pytest.raises(VidiffError, match="use_ema=False for the raw weights: give one"):
        VideoDiffusion.from_pretrained(run, ema=0.1, use_ema=False)
    assert main(["ema", str(run), "--sigma-rel", "0.1", "--step", "5"]) == 2
    assert "no EMA snapshot at step 5" in capsys.readouterr().err
    assert main(["ema", str(tiny_run), "--sigma-rel", "0.1"]) == 2
    assert "holds no snapshots: train the run with --set train.ema=power" in capsys.readouterr().err
    assert main(["ema", str(run), "--sigma-rel", "0.5"]) == 2
    assert "σ_rel of a power EMA must be in (0, 0.2887)" in capsys.readouterr().err


def test_power_ema_resumes_exactly(power_run, tmp_path):
    run, cfg = power_run
    train(cfg.override(["train.steps=3"]), tmp_path / "split", progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a = load_file(resolve_checkpoint(run) / "ema_power.safetensors")
    b = load_file(resolve_checkpoint(tmp_path / "split") / "ema_power.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="train.ema_sigma_rels cannot change on --resume"):
        train(
            cfg.override(["train.steps=8", "train.ema_sigma_rels=0.05,0.1"]),
            tmp_path / "split",
            resume=True,
            progress=False,
        )


def test_power_ema_is_refused_where_it_cannot_work(copy_of_tiny_run):
    from conftest import TINY as TINY_RUN

    from vidiff.train.setup import _power_ema

    cfg = TINY_RUN.override(["train.ema=power", "train.steps=3"])
    with pytest.raises(ConfigError, match="has no ema_power.safetensors: it was trained with train.ema=exponential"):
        train(cfg, copy_of_tiny_run, resume=True, progress=False)
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="train.ema=power keeps whole copies of the network, not shards"):
        _power_ema(cfg, net, net, "fsdp", None)
