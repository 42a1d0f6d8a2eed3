"""The one sampler registry: a sampler added here, in the test, is usable from the API, from
`vidiff sample --sampler` (with a flag for its option) and from `vidiff predict`, and an option the
chosen sampler does not take is an error that names it."""

import pytest
import torch

from vidiff.cli import main
from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.sampling import SAMPLERS, SamplerError, get_sampler, initial_noise, logsnr_grid, register_sampler
from vidiff.diffusion.schedule import LOGSNR_MAX, LOGSNR_MIN, logsnr_cosine, time_grid
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.request import resolve_sampling

CALLS = []


def sample_toy(denoise, z, lambdas, noise=None, *, cond=None, callback=None, shrink: float = 1.0):
    """A toy: a denoiser call at each level λ_0 … λ_{N−1} of the grid, each x̂ shrunk towards 0."""
    for lt in lambdas[:-1]:
        x = shrink * denoise(z, torch.full((z.shape[0],), float(lt)), **(cond or {}))
        z = x
    CALLS.append({"steps": len(lambdas) - 1, "shrink": shrink, "cond": sorted(cond or {})})
    return x


@pytest.fixture
def toy():
    register_sampler("toy", sample_toy, "a toy sampler for the registry test")
    CALLS.clear()
    yield
    SAMPLERS.pop("toy")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "tiny"
    VideoDiffusion(get_preset("cpu-tiny")).save_pretrained(path)
    return path


def test_toy_sampler_from_the_api(toy, checkpoint):
    model = VideoDiffusion.from_pretrained(checkpoint)
    videos = model.sample(2, sampler="toy", steps=3, options={"shrink": 0.5})
    assert videos.shape == (2, 3, 4, 16, 16)
    assert CALLS == [{"steps": 3, "shrink": 0.5, "cond": []}]
    assert SAMPLERS["toy"].options == {"shrink": 1.0}


def test_toy_sampler_from_sample_and_predict_commands(toy, checkpoint, tmp_path):
    rc = main(
        [
            "sample",
            "--checkpoint",
            str(checkpoint),
            "--sampler",
            "toy",
            "--steps",
            "2",
            "--shrink",
            "0.25",
            "--num",
            "1",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert rc == 0 and CALLS[-1] == {"steps": 2, "shrink": 0.25, "cond": []}
    from vidiff.io.video import write_mp4

    write_mp4(tmp_path / "in.mp4", torch.rand(3, 4, 16, 16) * 2 - 1)
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--sampler",
            "toy",
            "--steps",
            "2",
            "--video",
            str(tmp_path / "in.mp4"),
            "--context",
            "2",
            "--num",
            "1",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert rc == 0 and CALLS[-1]["steps"] == 2 and len(CALLS) == 2  # one window: 4 frames, 2 known


def test_sample_help_lists_the_registry(toy, capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = capsys.readouterr().out
    assert "toy" in text and "--shrink" in text and "--corrector-steps" in text


def test_unknown_option_is_named():
    with pytest.raises(SamplerError, match=r"'gama'.*it takes gamma, corrector_steps, delta"):
        resolve_sampling(sampler="pc", options={"gama": 0.3})
    with pytest.raises(SamplerError, match="'ddim' takes no option 'gamma'; it takes no options"):
        resolve_sampling(sampler="ddim", options={"gamma": 0.3})
    data = GaussianData.video(channels=1, frames=2, height=2, width=2)
    z = initial_noise((2, *data.shape))
    with pytest.raises(TypeError, match="gama"):  # called directly: Python names it too
        get_sampler("ancestral")(data.denoise, z, logsnr_grid(4), gama=0.3)
    with pytest.raises(TypeError, match="gama"):  # a denoiser takes no stray keywords either
        data.denoise(z, torch.zeros(2), gama=0.3)
    with pytest.raises(SamplerError, match="unknown sampler .dim.; choose one of ancestral, ddim, dpmpp-2m, "):
        get_sampler("dim")


def test_unknown_option_from_the_command_line(checkpoint, tmp_path, capsys):
    rc = main(
        [
            "sample",
            "--checkpoint",
            str(checkpoint),
            "--sampler",
            "ddim",
            "--gamma",
            "0.3",
            "--num",
            "1",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert rc == 2 and "'ddim' takes no option 'gamma'" in capsys.readouterr().err


def test_resolver_precedence_and_schedule():
    cfg = get_preset("cpu-demo")  # pc, 200 steps, γ 0.1, 10 corrector steps at λ ≥ −2, log-SNR shift −2
    call = resolve_sampling(cfg.sample, cfg.diffusion)
    assert (call.name, call.steps, call.options) == (
        "pc",
        200,
        {
            "gamma": 0.1,
            "corrector_steps": 10,
            "delta": 0.1,
            "corrector_min_logsnr": -2.0,
            "corrector_max_logsnr": LOGSNR_MAX,
        },
    )
    lam = logsnr_cosine(time_grid(200), -20, 20, shift=-2.0)[1:200]  # the levels the steps land on
    assert call.evaluations == 200 + 10 * int((lam >= -2.0).sum())
    call = resolve_sampling(cfg.sample, cfg.diffusion, sampler="ancestral", steps=10, options={"gamma": 0.5})
    assert (call.steps, call.options, call.evaluations) == (10, {"gamma": 0.5}, 10)
    t = torch.tensor([0.5], dtype=torch.float64)
    assert torch.allclose(call.schedule["logsnr_fn"](t, -20, 20), logsnr_cosine(t, shift=-2.0))
    assert torch.equal(call.lambdas, logsnr_cosine(time_grid(10), -20, 20, shift=-2.0))
    plain = resolve_sampling(logsnr_shift=1.0)  # the defaults of a plain denoiser keep a requested shift
    assert torch.allclose(plain.schedule["logsnr_fn"](t, -20, 20), logsnr_cosine(t, shift=1.0))
    assert resolve_sampling(get_preset("bair-64x64").sample).reconstruction_weight == 50.0


def test_corrections_only_within_the_given_log_snrs():
    """`corrector_min_logsnr` / `corrector_max_logsnr` limit the Langevin corrections to a range of
    noise levels; the count of network evaluations that SamplerCall reports is the count the sampler
    makes."""
    cfg = get_preset("cpu-demo")
    seen = []

    def denoise(z, logsnr, **cond):
        seen.append(float(logsnr[0]))
        return torch.zeros_like(z)

    counts = {}
    for low, high in ((LOGSNR_MIN, LOGSNR_MAX), (LOGSNR_MIN, -2.0), (-2.0, LOGSNR_MAX), (LOGSNR_MIN, LOGSNR_MIN - 1)):
        seen.clear()
        options = {"corrector_steps": 3, "corrector_min_logsnr": low, "corrector_max_logsnr": high}
        call = resolve_sampling(cfg.sample, cfg.diffusion, steps=200, options=options)
        call(denoise, torch.zeros(1, 3, 2, 4, 4), noise=torch.Generator().manual_seed(0))
        assert len(seen) == call.evaluations
        levels = torch.tensor(seen)
        repeats = levels[1:][levels[1:] == levels[:-1]]  # a correction re-evaluates the level just reached
        assert len(repeats) == call.evaluations - 200 and ((repeats >= low) & (repeats <= high)).all()
        counts[low, high] = (call.evaluations - 200) // 3
    assert counts[LOGSNR_MIN, LOGSNR_MAX] == 199 and counts[LOGSNR_MIN, LOGSNR_MIN - 1] == 0
    assert counts[LOGSNR_MIN, -2.0] + counts[-2.0, LOGSNR_MAX] == 199 and counts[LOGSNR_MIN, -2.0] > 0


def sample_toy_on_steps(
    denoise,
    z,
    steps,
    noise=None,
    *,
    cond=None,
    callback=None,
    clip=None,
    logsnr_fn=logsnr_cosine,
    logsnr_min=LOGSNR_MIN,
    logsnr_max=LOGSNR_MAX,
    shrink: float = 1.0,
):
    """The toy in the signature of vidiff 0.1: it builds its own t-grid from `steps` and the schedule."""
    lam = logsnr_fn(time_grid(steps), logsnr_min, logsnr_max)
    CALLS.append({"levels": lam, "clip": clip})
    return sample_toy(denoise, z, lam, noise, cond=cond, callback=callback, shrink=shrink)


def test_a_sampler_on_steps_is_adapted_with_a_warning(checkpoint):
    """A sampler written for `steps` and a schedule still registers (with a DeprecationWarning that says
    what to change) and walks exactly the caller's grid, shifted schedule and λ grid alike."""
    with pytest.warns(DeprecationWarning, match=r"write it as fn\(denoise, z, lambdas, noise=None, \*, cond=None"):
        spec = register_sampler("toy-on-steps", sample_toy_on_steps, "the toy, in the old signature")
    try:
        assert spec.options == {"shrink": 1.0}
        model = VideoDiffusion.from_pretrained(checkpoint)
        CALLS.clear()
        for grid in ("t", "lambda"):
            model.sample(1, sampler="toy-on-steps", steps=5, grid=grid, options={"shrink": 0.5})
            levels = model.sampling(sampler="toy-on-steps", steps=5, grid=grid).lambdas
            assert torch.equal(CALLS[-2]["levels"], levels) and CALLS[-2]["clip"] is None
            assert CALLS[-1] == {"steps": 5, "shrink": 0.5, "cond": []}
    finally:
        SAMPLERS.pop("toy-on-steps")


def test_a_sampler_in_no_known_signature_is_named():
    def no_grid(denoise, z, noise=None, *, cond=None, callback=None):
        return z

    with pytest.raises(SamplerError, match=r"'no-grid': the function must be fn\(denoise, z, lambdas.* lacks lambdas"):
        register_sampler("no-grid", no_grid, "a sampler without a grid")
    assert "no-grid" not in SAMPLERS


def test_a_config_with_the_samplers_options_as_fields_loads(checkpoint, tmp_path):
    """config.json of runs and checkpoints written before `sample.options` held PC's options as fields
    of `sample`: they load, into sample.options, and sample as before."""
    import json
    import shutil

    from vidiff.config import Config

    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["sample"] = {
        "sampler": "pc",
        "steps": 3,
        "gamma": 0.2,
        "corrector_steps": 2,
        "delta": 0.05,
        "corrector_min_logsnr": -20.0,
        "corrector_max_logsnr": 20.0,
        "guidance": 0.0,
        "reconstruction_weight": 9.0,
        "clip": True,
    }
    (old / "config.json").write_text(json.dumps(cfg))
    model = VideoDiffusion.from_pretrained(old)
    assert model.config.sample.options == {
        "gamma": 0.2,
        "corrector_steps": 2,
        "delta": 0.05,
        "corrector_min_logsnr": -20.0,
        "corrector_max_logsnr": 20.0,
    }
    assert Config.from_dict(model.config.to_dict()) == model.config
    options = {k: cfg["sample"][k] for k in ("gamma", "corrector_steps", "delta")}
    assert torch.equal(
        model.sample(1, seed=3),
        VideoDiffusion.from_pretrained(checkpoint).sample(1, sampler="pc", steps=3, options=options, seed=3),
    )


def test_sample_options_are_checked_against_the_registry():
    from dataclasses import replace

    from vidiff.config import Config, ConfigError, validate

    cfg = get_preset("cpu-tiny")
    assert cfg.override(["sample.options.corrector_steps=3"]).sample.options == {"gamma": 0.1, "corrector_steps": 3}
    assert cfg.override(["sample.gamma=0.5"]).sample.options == {"gamma": 0.5}  # the field's old name
    with pytest.raises(ConfigError, match=r"sample.options.gama: no registered sampler takes an option 'gama'"):
        cfg.override(["sample.options.gama=0.5"])
    with pytest.raises(ConfigError, match=r"sample.options.corrector_steps=.x.: expected a value of type int"):
        cfg.override(["sample.options.corrector_steps=x"])
    d = cfg.to_dict()
    d["sample"]["options"] = {"corrector_steps": 1.5}
    with pytest.raises(ConfigError, match=r"sample.options.corrector_steps must be of type int, got 1.5"):
        Config.from_dict(d)
    with pytest.raises(ConfigError, match=r"sample.options.gama: no registered sampler takes an option 'gama'"):
        validate(replace(cfg, sample=replace(cfg.sample, options={"gama": 0.5})))
    d["sample"]["options"], d["sample"]["grid"] = {}, "log"
    with pytest.raises(ConfigError, match=r"sample.grid must be one of t, lambda, got 'log'"):
        Config.from_dict(d)


def test_the_grid_is_every_samplers():
    """`grid` is a field of the request (and of sample config), not an option of one sampler."""
    cfg = get_preset("cpu-tiny").override(["sample.grid=lambda"])
    for name in ("ddim", "pc", "dpmpp-2m"):
        call = resolve_sampling(cfg.sample, cfg.diffusion, sampler=name, steps=10)
        assert call.grid == "lambda" and torch.equal(call.lambdas, logsnr_grid(10, "lambda", **call.schedule))
    assert resolve_sampling(cfg.sample, cfg.diffusion, grid="t", steps=10).grid == "t"
    with pytest.raises(SamplerError, match="takes no option 'grid'.*grid='lambda' \\(--grid lambda\\)"):
        resolve_sampling(sampler="dpmpp-2m", options={"grid": "lambda"})
    with pytest.raises(SamplerError, match="unknown grid 'log'; choose one of t, lambda"):
        resolve_sampling(grid="log")


def test_the_docs_table_lists_every_registered_sampler_and_its_options():
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "sampling.md"
    lines = [line for line in page.read_text().splitlines() if line.startswith("| `")]
    rows = {line.split("|")[1].strip().strip("`"): line for line in lines}
    for name, spec in SAMPLERS.items():
        if not spec.fn.__module__.startswith("vidiff."):  # registered by a test
            continue
        assert name in rows, f"docs/sampling.md: the table of samplers has no row for {name!r}"
        for option in spec.options:
            assert f"`{option}`" in rows[name], f"docs/sampling.md: the row of {name!r} does not name `{option}`"
