"""Conditional sampling (paper §3.1) against Gaussian data, where the optimal denoiser and the true
conditional distribution are both exact; the applications and the CLI on a tiny model."""

import pytest
import torch

from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.guidance import classifier_free_guidance, downsample, reconstruction_guidance, replacement
from vidiff.diffusion.process import Denoiser, prediction_target
from vidiff.diffusion.sampling import get_sampler, initial_noise, logsnr_grid, sample_ancestral, sample_ddim, sample_pc
from vidiff.diffusion.schedule import alpha_sigma
from vidiff.errors import ConditioningError
from vidiff.tasks import Window, extend, interpolate, predict, upsample

N = 4000  # std of a sample mean ≈ 0.3/sqrt(N) ≈ 0.005 per element
F, K = 6, 2  # frames, known (first) frames


@pytest.fixture(scope="module")
def temporal():
    """x ~ N(μ, Σ) of shape (1, 6, 2, 2), time correlation 0.95; x^a = the first 2 frames of one draw."""
    data = GaussianData.video(channels=1, frames=F, height=2, width=2, time_corr=0.95)
    x0 = data.sample(1, torch.Generator().manual_seed(1))  # (1 c f h w)
    known = torch.zeros(1, 1, F, 1, 1, dtype=torch.bool)
    known[:, :, :K] = True
    ia = known.expand(1, *data.shape)[0].reshape(-1)
    mu, cov = data.conditional(ia, x0.reshape(-1)[ia])
    return data, x0, known, ia, mu, cov


def draw(data, denoise, sampler=sample_ancestral, steps=128, n=N, **kw):
    g = torch.Generator().manual_seed(0)
    return sampler(denoise, initial_noise((n, *data.shape), g), logsnr_grid(steps), noise=g, **kw)


def moment_errors(x, index, mu, cov):
    """Max abs error of the mean and Frobenius error of the covariance relative to ‖Σ‖, over `index`."""
    xb = x.reshape(x.shape[0], -1)[:, index].double()
    return (xb.mean(0) - mu).abs().max().item(), ((torch.cov(xb.T) - cov).norm() / cov.norm()).item()


def temporal_errors(temporal, wrap, **kw):
    data, x0, known, ia, mu, cov = temporal
    x = draw(data, wrap(data.denoise), **kw)
    assert torch.equal(x[:, :, :K], x0[:, :, :K].expand(N, -1, -1, -1, -1)), "conditioning frames not reproduced"
    return moment_errors(x, ~ia, mu, cov)


def repl(temporal):
    x0, known = temporal[1], temporal[2]
    return lambda d: replacement(d, x0, known, noise=torch.Generator().manual_seed(5))


def recon(temporal, w):
    x0, known = temporal[1], temporal[2]
    return lambda d: reconstruction_guidance(d, x0, known, weight=w, noise=torch.Generator().manual_seed(5))


# Measured (seed 0, N = 4000): replacement mean/cov error ≈ 0.37/1.05 (ancestral), 0.52/1.75 (DDIM),
# 0.31/0.79 (PC); reconstruction guidance (w_r = 3, DDIM 5) ≈ 0.06–0.10 / 0.05–0.3. The guidance is an
# approximation (q(x^a | z_t) ≈ N(x̂^a, σ²/α² I)), so its error does not go to zero; the bounds below
# leave ≈ 1.5× headroom over the measured values and demand ≥ 2.5× less error than replacement.
SAMPLERS = [
    ("ancestral", sample_ancestral, 128, 3.0, 0.12, 0.30),
    ("pc", sample_pc, 64, 3.0, 0.15, 0.40),
    ("ddim", sample_ddim, 128, 5.0, 0.15, 0.40),
    ("dpmpp-2m", get_sampler("dpmpp-2m"), 25, 5.0, 0.15, 0.40),
    ("dpmpp-2m-sde", get_sampler("dpmpp-2m-sde"), 25, 3.0, 0.12, 0.30),
]


@pytest.mark.parametrize("name,sampler,steps,w,mean_tol,cov_tol", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_reconstruction_guidance_beats_replacement(temporal, name, sampler, steps, w, mean_tol, cov_tol):
    rm, rc = temporal_errors(temporal, repl(temporal), sampler=sampler, steps=steps)
    gm, gc = temporal_errors(temporal, recon(temporal, w), sampler=sampler, steps=steps)
    msg = (
        f"{name}: replacement mean err {rm:.3f}, cov err {rc:.3f}; "
        f"reconstruction guidance (w_r={w:g}) mean err {gm:.3f}, cov err {gc:.3f}"
    )
    assert gm < mean_tol and gc < cov_tol, msg
    assert rm > 2.5 * gm and rc > 2.5 * gc, msg
    assert rm > 0.25 and rc > 0.6, "replacement should be visibly inconsistent here: " + msg


def test_guided_denoiser_matches_closed_form(temporal):
    """x̂ = μ + G(z − αμ) for the Gaussian, so x̃^b = x̂^b + w_r α G_ba (x^a − x̂^a), with z^a replaced
    by α x^a (zero noise here), and x̃^a = x^a."""
    data, x0, known, ia, *_ = temporal
    w, lam = 4.0, torch.tensor([0.7])
    z = torch.randn(1, *data.shape, generator=torch.Generator().manual_seed(3))
    guided = reconstruction_guidance(data.denoise, x0, known, weight=w, noise=lambda like: torch.zeros_like(like))
    out = guided(z, lam).reshape(-1).double()
    alpha, sigma = alpha_sigma(lam.double())
    zr = torch.where(known, alpha.float() * x0, z)
    gain = alpha * data.evals / (alpha**2 * data.evals + sigma**2)
    G = data.evecs @ torch.diag(gain) @ data.evecs.T
    x_hat = data.mean + G @ (zr.reshape(-1).double() - alpha * data.mean)
    r = x0.reshape(-1).double()[ia] - x_hat[ia]
    expected_b = x_hat[~ia] + w * alpha * G[~ia][:, ia] @ r
    torch.testing.assert_close(out[~ia], expected_b, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[ia].float(), x0.reshape(-1)[ia])


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_every_parameterisation_and_cfg(temporal, prediction):
    """The wrappers see only x̂: the same samples for ε-, v- and x-prediction networks, and under
    classifier-free guidance of a network that ignores its class (so the guided x̂ is unchanged)."""
    data, x0, known, *_ = temporal

    def net(z, logsnr, **cond):
        x = data.denoise(z, logsnr)
        return prediction_target(
            x,
            (z - alpha_sigma(logsnr.reshape(-1, 1, 1, 1, 1))[0] * x) / alpha_sigma(logsnr.reshape(-1, 1, 1, 1, 1))[1],
            logsnr,
            prediction,
        )

    ref = draw(data, recon(temporal, 3.0)(data.denoise), sample_ddim, 16, n=64)
    den = Denoiser(net, prediction)
    out = draw(data, recon(temporal, 3.0)(den), sample_ddim, 16, n=64)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-3)
    cfg = classifier_free_guidance(den, 2.0, null=lambda c: {"class_labels": torch.full_like(c["class_labels"], -1)})
    out = draw(
        data, recon(temporal, 3.0)(cfg), sample_ddim, 16, n=64, cond={"class_labels": torch.zeros(64, dtype=torch.long)}
    )
    torch.testing.assert_close(out, ref, atol=5e-4, rtol=1e-3)


def linear_conditional(data, obs, y):
    """x | O x = y for x ~ N(μ, Σ): μ + Σ Oᵀ (O Σ Oᵀ)⁺ (y − O μ), Σ − Σ Oᵀ (O Σ Oᵀ)⁺ O Σ."""
    s = data.cov
    k = s @ obs.T @ torch.linalg.pinv(obs @ s @ obs.T)
    return data.mean + k @ (y - obs @ data.mean), s - k @ obs @ s


def area_matrix(shape, size):
    d = int(torch.tensor(shape).prod())
    return downsample(torch.eye(d).reshape(d, *shape), size).reshape(d, -1).T.double()


def test_spatial_guidance_matches_linear_gaussian_conditional():
    """A 1×2×4×4 Gaussian observed through 2× area downsampling y = D x: the guided samples reproduce
    y and follow the exact conditional of x given D x."""
    data = GaussianData.video(channels=1, frames=2, height=4, width=4, time_corr=0.9, space_corr=0.8)
    x0 = data.sample(1, torch.Generator().manual_seed(1))
    y = downsample(x0, (2, 2))
    D = area_matrix(data.shape, (2, 2))
    mu, cov = linear_conditional(data, D, y.reshape(-1).double())
    x = draw(data, reconstruction_guidance(data.denoise, low_res=y, weight=8.0))
    obs_err = (downsample(x, (2, 2)) - y).abs().max().item()
    mean_err = (x.reshape(N, -1).double().mean(0) - mu).abs().max().item()
    cov_err = ((torch.cov(x.reshape(N, -1).double().T) - cov).norm() / data.cov.norm()).item()
    prior_err = (data.mean - mu).abs().max().item()
    msg = (
        f"spatial (w=8): max |D(x) − y| {obs_err:.4f}, mean err {mean_err:.4f} (prior mean is {prior_err:.3f} "
        f"away), cov err {cov_err:.4f} relative to ‖Σ‖"
    )
    assert obs_err < 0.1 and mean_err < 0.05 and cov_err < 0.03, msg


def test_temporal_and_spatial_at_once():
    """Known first high-res frame and a low-res version of all frames: both terms add."""
    data = GaussianData.video(channels=1, frames=3, height=4, width=4, time_corr=0.9, space_corr=0.8)
    x0 = data.sample(1, torch.Generator().manual_seed(2))
    known = torch.zeros(1, 1, 3, 1, 1, dtype=torch.bool)
    known[:, :, 0] = True
    y = downsample(x0, (2, 2))
    ia = known.expand(1, *data.shape)[0].reshape(-1)
    sel = torch.eye(ia.numel(), dtype=torch.float64)[ia]
    obs = torch.cat([sel, area_matrix(data.shape, (2, 2))])
    mu, _ = linear_conditional(data, obs, torch.cat([x0.reshape(-1)[ia].double(), y.reshape(-1).double()]))
    guided = reconstruction_guidance(
        data.denoise, x0, known, weight=3.0, low_res=y, spatial_weight=8.0, noise=torch.Generator().manual_seed(5)
    )
    x = draw(data, guided, n=2000)
    assert torch.equal(x[:, :, :1], x0[:, :, :1].expand(2000, -1, -1, -1, -1))
    obs_err = (downsample(x, (2, 2)) - y).abs().max().item()
    mean_err = (x.reshape(2000, -1).double().mean(0) - mu).abs().max().item()
    assert obs_err < 0.1 and mean_err < 0.06, f"temporal+spatial: max |D(x) − y| {obs_err:.4f}, mean err {mean_err:.4f}"


def test_bad_wrapper_input(temporal):
    data, x0, known, *_ = temporal
    with pytest.raises(ConditioningError, match="boolean"):
        replacement(data.denoise, x0, known.float())
    with pytest.raises(ConditioningError, match="needs x_a"):
        reconstruction_guidance(data.denoise, weight=1.0)
    with pytest.raises(ConditioningError, match="downsampling"):
        reconstruction_guidance(data.denoise, low_res=x0, mode="nearest", weight=1.0)


# ---- applications on a tiny random model ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from vidiff.pipeline import VideoDiffusion
    from vidiff.presets import get_preset

    torch.manual_seed(0)
    return VideoDiffusion(get_preset("cpu-tiny")).eval()  # window 4 frames, 16×16, 3 channels


def test_predict_shapes_and_context(tiny):
    ctx = torch.rand(2, 3, 2, 16, 16) * 2 - 1
    for method in ("reconstruction", "replacement"):
        out = predict(tiny, ctx, method=method, steps=2)
        assert out.shape == (2, 3, 4, 16, 16)
        assert torch.equal(out[:, :, :2], ctx)
    out = predict(tiny, ctx, 7, steps=2, sampler="ancestral")
    assert out.shape == (2, 3, 7, 16, 16) and torch.equal(out[:, :, :2], ctx)
    assert torch.equal(predict(tiny, ctx[1:], 7, steps=2, sampler="ancestral", seed=1), out[1:]), (
        "a sample depends on the batch it was drawn in"
    )
    with pytest.raises(ConditioningError, match="shorter than the model's window"):
        predict(tiny, torch.zeros(1, 3, 4, 16, 16))
    with pytest.raises(ConditioningError, match="16×16"):
        predict(tiny, torch.zeros(1, 3, 2, 8, 8))


def test_extend_four_windows(tiny, monkeypatch):
    import vidiff.tasks as C

    calls = []
    orig = C.sample_window

    def spy(setup, n, frames, **kw):
        x = orig(setup, n, frames, **kw)
        calls.append(None if kw.get("known") is None else int(kw["known"].sum()))
        if kw.get("x_a") is not None:
            assert torch.equal(x[:, :, : calls[-1]], kw["x_a"][:, :, : calls[-1]])
        return x

    monkeypatch.setattr(C, "sample_window", spy)
    start = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    out = extend(tiny, start, 16, overlap=2, steps=2)
    assert out.shape == (1, 3, 16, 16, 16) and torch.equal(out[:, :, :2], start)
    assert calls == [2] * 7  # 2 given + 7 windows × 2 new frames
    calls.clear()
    out = extend(tiny, None, 15, overlap=1, num=2, steps=2, method="replacement")
    assert out.shape == (2, 3, 15, 16, 16)
    assert calls == [None, 1, 1, 1, 2]  # 4 + 3 + 3 + 3 + 2 = 15; the last window takes 2 context frames


def test_interpolate_and_upsample(tiny):
    video = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    out = interpolate(tiny, video, 2, steps=2)
    assert out.shape == (1, 3, 7, 16, 16) and torch.equal(out[:, :, ::2], video)
    with pytest.raises(ConditioningError, match="factor 4"):
        interpolate(tiny, video, 4)
    low = torch.rand(1, 3, 6, 8, 8) * 2 - 1
    out = upsample(tiny, low, steps=2, overlap=2)
    assert out.shape == (1, 3, 6, 16, 16)
    out = upsample(tiny, low[:, :, :4], steps=2, mode="bilinear")
    assert out.shape == (1, 3, 4, 16, 16)
    with pytest.raises(ConditioningError, match="smaller than"):
        upsample(tiny, torch.zeros(1, 3, 4, 16, 16))


# ---- CLI end to end -----------------------------------------------------------------------------
def test_cli_predict_on_a_trained_checkpoint(tmp_path, capsys):
    from vidiff.cli import main
    from vidiff.data import MovingShapes
    from vidiff.io.video import write_mp4
    from vidiff.presets import get_preset
    from vidiff.train import train

    cfg = get_preset("cpu-tiny").override(
        ["train.steps=2", "train.save_every=2", "train.num_samples=1", "sample.steps=2"]
    )
    train(cfg, tmp_path / "run", progress=False)
    video = MovingShapes(frames=6, size=24, seed=3)[0]["video"]  # (c f h w), resized to 16×16 on reading
    write_mp4(tmp_path / "in.mp4", video)
    out = tmp_path / "pred"
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "run"),
            "--video",
            str(tmp_path / "in.mp4"),
            "--context",
            "2",
            "--frames",
            "6",
            "--num",
            "2",
            "--steps",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert (out / "sample_001.mp4").is_file() and (out / "grid.gif").is_file()
    from safetensors.torch import load_file

    assert load_file(out / "samples.safetensors")["videos"].shape == (2, 3, 6, 16, 16)
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "run"),
            "--video",
            str(tmp_path / "in.mp4"),
            "--context",
            "4",
            "--steps",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 2 and "--context 4" in capsys.readouterr().err
    rc = main(
        [
            "extend",
            "--checkpoint",
            str(tmp_path / "run"),
            "--length",
            "8",
            "--num",
            "1",
            "--steps",
            "2",
            "--method",
            "replacement",
            "--out",
            str(tmp_path / "ext"),
        ]
    )
    assert rc == 0


def test_plain_denoiser_api(temporal):
    """The applications also take any denoiser with the window's shape."""
    data, x0, *_ = temporal
    out = predict(
        Window(data.denoise, frames=F, size=2, channels=1), x0[:, :, :K].expand(3, -1, -1, -1, -1), 9, steps=16
    )
    assert out.shape == (3, 1, 9, 2, 2) and torch.equal(out[:, :, :K], x0[:, :, :K].expand(3, -1, -1, -1, -1))
    with pytest.raises(ConditioningError, match="VideoDiffusion or a Window"):
        predict(data.denoise, x0[:, :, :K])


def test_interpolate_reads_a_long_clip_frame_by_frame(tiny, tmp_path, capsys):
    """A long clip (3000 frames, 100 s at 30 fps): without --max-frames it is refused before reading,
    naming the limit and the flag; with it, the command says what it reads, shows progress, and never
    holds the file's frames at their own size: memory stays at the result's."""
    import tracemalloc

    import av
    import numpy as np

    from vidiff.cli import main
    from vidiff.cli.common import read_clip

    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 64
        for i in range(3000):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i % 251, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    tracemalloc.start()
    try:
        clip = read_clip(path, 8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert clip.shape == (1, 3, 3000, 8, 8)
    assert peak < 3000 * 64 * 64 * 3 / 4, peak  # the frames at 64×64 take 37 MB; at 8×8, 0.6 MB
    model = tmp_path / "model"
    tiny.save_pretrained(model)
    args = [
        "interpolate",
        "--checkpoint",
        str(model),
        "--video",
        str(path),
        "--factor",
        "2",
        "--steps",
        "1",
        "--num",
        "1",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3000 frames (100 s at 30 fps), more than the 512" in err, err
    assert "give --max-frames N" in err
    assert main([*args, "--max-frames", "5"]) == 0
    err = capsys.readouterr().err
    assert "reading 5 of the 3000 frames of" in err and "reading long.mp4: 100%" in err and "interpolating" in err
    from safetensors.torch import load_file

    assert load_file(tmp_path / "out" / "samples.safetensors")["videos"].shape == (1, 3, 9, 16, 16)


@pytest.mark.parametrize(
    "draw", [lambda m: m.sample(1, steps=2), lambda m: predict(m, torch.zeros(1, 3, 2, 16, 16), steps=2)]
)
def test_an_error_while_sampling_gives_back_the_training_mode(tiny, monkeypatch, draw):
    def broken(*args, **kwargs):
        raise RuntimeError("the network broke")

    monkeypatch.setattr(tiny.denoiser, "forward", broken)
    tiny.train()
    try:
        with pytest.raises(RuntimeError, match="the network broke"):
            draw(tiny)
        assert tiny.training and all(m.training for m in tiny.modules())
    finally:
        tiny.eval()
