"""The one sampler registry: a sampler added here, in the test, is usable from the API, from
`vidiff sample --sampler` (with a flag for its option) and from `vidiff predict`, and an option the
chosen sampler does not take is an error that names it."""
import pytest
import torch

from vidiff.cli import main
from vidiff.gaussian import GaussianData
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.sampling import SAMPLERS, SamplerError, get_sampler, initial_noise, register_sampler
from vidiff.sampling_setup import resolve_sampling
from vidiff.schedule import LOGSNR_MAX, LOGSNR_MIN, logsnr_cosine, time_grid

CALLS = []


def sample_toy(denoise, z, steps, noise=None, *, cond=None, callback=None, clip=None, logsnr_fn=logsnr_cosine,
               logsnr_min=LOGSNR_MIN, logsnr_max=LOGSNR_MAX, shrink: float = 1.0):
    """A toy: `steps` denoiser calls at the grid's log-SNRs, each x̂ shrunk towards 0."""
    lam = logsnr_fn(torch.linspace(1.0, 0.0, steps, dtype=torch.float64), logsnr_min, logsnr_max)
    for lt in lam:
        x = shrink * denoise(z, torch.full((z.shape[0],), float(lt)), **(cond or {}))
        z = x
    CALLS.append({"steps": steps, "shrink": shrink, "cond": sorted(cond or {})})
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
    rc = main(["sample", "--checkpoint", str(checkpoint), "--sampler", "toy", "--steps", "2", "--shrink", "0.25",
               "--num", "1", "--out", str(tmp_path / "s")])
    assert rc == 0 and CALLS[-1] == {"steps": 2, "shrink": 0.25, "cond": []}
    from vidiff.videoio import write_mp4
    write_mp4(tmp_path / "in.mp4", torch.rand(3, 4, 16, 16) * 2 - 1)
    rc = main(["predict", "--checkpoint", str(checkpoint), "--sampler", "toy", "--steps", "2", "--video",
               str(tmp_path / "in.mp4"), "--context", "2", "--num", "1", "--out", str(tmp_path / "p")])
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
        get_sampler("ancestral")(data.denoise, z, 4, gama=0.3)
    with pytest.raises(TypeError, match="gama"):  # a denoiser takes no stray keywords either
        data.denoise(z, torch.zeros(2), gama=0.3)
    with pytest.raises(SamplerError, match="unknown sampler .dim.; choose one of ancestral, ddim, dpmpp-2m, "):
        get_sampler("dim")


def test_unknown_option_from_the_command_line(checkpoint, tmp_path, capsys):
    rc = main(["sample", "--checkpoint", str(checkpoint), "--sampler", "ddim", "--gamma", "0.3", "--num", "1",
               "--out", str(tmp_path / "s")])
    assert rc == 2 and "'ddim' takes no option 'gamma'" in capsys.readouterr().err


def test_resolver_precedence_and_schedule():
    cfg = get_preset("cpu-demo")  # pc, 200 steps, γ 0.1, 10 corrector steps at λ ≥ −2, log-SNR shift −2
    call = resolve_sampling(cfg.sample, cfg.diffusion)
    assert (call.name, call.steps, call.options) == ("pc", 200, {"gamma": 0.1, "corrector_steps": 10, "delta": 0.1,
                                                                 "corrector_min_logsnr": -2.0,
                                                                 "corrector_max_logsnr": LOGSNR_MAX})
    lam = logsnr_cosine(time_grid(200), -20, 20, shift=-2.0)[1:200]  # the levels the steps land on
    assert call.evaluations == 200 + 10 * int((lam >= -2.0).sum())
    call = resolve_sampling(cfg.sample, cfg.diffusion, sampler="ancestral", steps=10, options={"gamma": 0.5})
    assert (call.steps, call.options, call.evaluations) == (10, {"gamma": 0.5}, 10)
    t = torch.tensor([0.5], dtype=torch.float64)
    assert torch.allclose(call.schedule["logsnr_fn"](t, -20, 20), logsnr_cosine(t, shift=-2.0))
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
