"""Every sampler against Gaussian data, where the optimal denoiser is exact (vidiff.gaussian)."""
from functools import partial

import pytest
import torch

from vidiff.gaussian import GaussianData
from vidiff.sampling import Noise, initial_noise, sample_ancestral, sample_ddim, sample_pc
from vidiff.schedule import logsnr_cosine

N = 8000


@pytest.fixture(scope="module")
def data():
    return GaussianData.video(channels=1, frames=4, height=2, width=2, time_corr=0.9)


def moments(x):
    x = x.reshape(x.shape[0], -1).double()
    return x.mean(0), torch.cov(x.T)


def errors(data, sampler, steps, **kw):
    g = torch.Generator().manual_seed(123)
    z = initial_noise((N, *data.shape), g)
    x = sampler(data.denoise, z, steps, noise=g, **kw)
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
        return sample_ancestral(data.denoise, z, 16, gamma=0.3, noise=noise)
    batch = draw([5, 6, 7])
    alone = draw([6])
    assert torch.equal(batch[1], alone[0])
    assert not torch.allclose(batch[0], batch[1])


def test_clip_and_callback(data):
    seen = []
    z = initial_noise((4, *data.shape), torch.Generator().manual_seed(0))
    x = sample_pc(data.denoise, z, 5, clip=0.1, noise=torch.Generator().manual_seed(0),
                  callback=lambda i, n, x: seen.append((i, n)))
    assert x.abs().max() <= 0.1 + 1e-7
    assert seen == [(i, 5) for i in range(5)]
    with pytest.raises(ValueError, match="steps"):
        sample_ddim(data.denoise, z, 0)
