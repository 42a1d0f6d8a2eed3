"""Every sampler against Gaussian data, where the optimal denoiser is exact (vidiff.diffusion.gaussian)."""

from functools import partial

import pytest
import torch

from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.guidance import clipped
from vidiff.diffusion.sampling import (
    Noise,
    get_sampler,
    initial_noise,
    logsnr_grid,
    sample_ancestral,
    sample_ddim,
    sample_pc,
)
from vidiff.diffusion.schedule import logsnr_cosine

N = 8000


@pytest.fixture(scope="module")
def data():
    return GaussianData.video(channels=1, frames=4, height=2, width=2, time_corr=0.9)


def moments(x):
    x = x.reshape(x.shape[0], -1).double()
    return x.mean(0), torch.cov(x.T)


def run(sampler, denoise, z, steps, *, grid="t", logsnr_fn=logsnr_cosine, clip=None, **kw):
    """`sampler` over the grid of `steps` steps the caller builds, with x̂ clipped to [−clip, clip]."""
    return sampler(clipped(denoise, clip), z, logsnr_grid(steps, grid, logsnr_fn), **kw)


def errors(data, sampler, steps, **kw):
    g = torch.Generator().manual_seed(123)
    z = initial_noise((N, *data.shape), g)
    x = run(sampler, data.denoise, z, steps, noise=g, **kw)
    m, c = moments(x)
    return (m - data.mean).abs().max().item(), ((c - data.cov).norm() / data.cov.norm()).item()


# sampling error of the moments with N samples: std of the mean ≈ 0.5/sqrt(N) ≈ 0.006 per element
CASES = [
    ("ancestral γ=0", sample_ancestral, dict(gamma=0.0)),
    ("ancestral γ=0.3", sample_ancestral, dict(gamma=0.3)),
    ("ancestral γ=1", sample_ancestral, dict(gamma=1.0)),
    ("predictor-corrector", sample_pc, dict(corrector_steps=1)),
    ("ddim", sample_ddim, {}),
    ("ancestral, shifted schedule", sample_ancestral, dict(gamma=0.3, logsnr_fn=partial(logsnr_cosine, shift=-2.0))),
    ("dpm++ 2m", get_sampler("dpmpp-2m"), {}),
    ("dpm++ 2m sde", get_sampler("dpmpp-2m-sde"), {}),
]


@pytest.mark.parametrize("name,sampler,kw", CASES, ids=[c[0] for c in CASES])
def test_sampler_matches_gaussian(data, name, sampler, kw):
    mean_err, cov_err = errors(data, sampler, 256, **kw)
    assert mean_err < 0.03, f"{name}: mean error {mean_err:.4f}"
    assert cov_err < 0.05, f"{name}: relative covariance error {cov_err:.4f}"


@pytest.mark.parametrize("name,sampler,kw", [CASES[0], CASES[4]], ids=["ancestral", "ddim"])
def test_error_shrinks_with_steps(data, name, sampler, kw):
    cov_errs = [errors(data, sampler, s, **kw)[1] for s in (8, 32, 128)]
    assert cov_errs[0] > cov_errs[1] > cov_errs[2], f"{name}: {cov_errs}"
    assert cov_errs[2] < 0.5 * cov_errs[0]


def test_sample_does_not_depend_on_batch(data):
    """With per-sample seeds, sample i is the same whether drawn alone or in a batch."""

    def draw(seeds):
        noise = Noise(seeds)
        z = initial_noise((len(seeds), *data.shape), noise)
        return run(sample_ancestral, data.denoise, z, 16, gamma=0.3, noise=noise)

    batch = draw([5, 6, 7])
    alone = draw([6])
    assert torch.equal(batch[1], alone[0])
    assert not torch.allclose(batch[0], batch[1])


def test_clip_and_callback(data):
    seen = []
    z = initial_noise((4, *data.shape), torch.Generator().manual_seed(0))
    x = run(
        sample_pc,
        data.denoise,
        z,
        5,
        clip=0.1,
        noise=torch.Generator().manual_seed(0),
        callback=lambda i, n, x: seen.append((i, n)),
    )
    assert x.abs().max() <= 0.1 + 1e-7
    assert seen == [(i, 5) for i in range(5)]
    with pytest.raises(ValueError, match="steps"):
        sample_ddim(data.denoise, z, logsnr_grid(0))
    with pytest.raises(ValueError, match="steps"):
        sample_ddim(data.denoise, z, logsnr_grid(1)[:1])


@pytest.mark.parametrize("name", ["dpmpp-2m", "dpmpp-2m-sde"])
def test_fast_samplers_in_25_steps(data, name):
    """The DPM-Solver++ samplers reach the Monte-Carlo floor of these moments in 25 steps."""
    mean_err, cov_err = errors(data, get_sampler(name), 25)
    assert mean_err < 0.03 and cov_err < 0.05, f"{name} at 25 steps: mean {mean_err:.4f}, cov {cov_err:.4f}"


def exact_moments(data, name, steps, **kw):
    """A deterministic sampler on Gaussian data is affine in z_1: x = M z + c, so its samples are exactly
    N(c, M Mᵀ). c and M are read off by sampling z = 0 and the basis vectors, in float64."""
    d = data.mean.numel()
    z = torch.cat([torch.zeros(1, d), torch.eye(d)]).double().reshape(d + 1, *data.shape)
    out = run(get_sampler(name), lambda z, logsnr: data.denoise(z.double(), logsnr), z, steps, **kw)
    out = out.reshape(d + 1, d).double()
    m = (out[1:] - out[0]).T
    cov_err = ((m @ m.T - data.cov).norm() / data.cov.norm()).item()
    return cov_err, (out[0] - data.mean).abs().max().item()


def test_order_of_ddim_and_dpm_solver_exactly(data):
    """DDIM is first order (its covariance error halves when the steps double); DPM-Solver++(2M) is
    second order (measured: 3.0–3.7× less per doubling; 4× in the limit), and 20 of its steps beat 80 of
    DDIM's. No Monte-Carlo noise: the errors are exact."""
    steps = (10, 20, 40, 80)
    ddim = [exact_moments(data, "ddim", n)[0] for n in steps]
    dpm = [exact_moments(data, "dpmpp-2m", n)[0] for n in steps]
    for a, b in zip(ddim, ddim[1:]):
        assert 1.7 < a / b < 2.3, f"DDIM covariance errors {ddim}"
    for a, b in zip(dpm, dpm[1:]):
        assert 2.8 < a / b < 4.5, f"DPM-Solver++(2M) covariance errors {dpm}"
    assert dpm[1] < 0.7 * ddim[3], f"DPM-Solver++(2M) at 20 steps {dpm[1]:.4f} vs DDIM at 80 {ddim[3]:.4f}"
    assert exact_moments(data, "dpmpp-2m", 20)[1] < 0.01
    # the grid: uniform in t is the better one on this schedule (uniform in λ wastes steps at its ends)
    assert exact_moments(data, "dpmpp-2m", 20, grid="lambda")[0] > 2 * dpm[1]
