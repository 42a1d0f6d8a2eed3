import math

import pytest
import torch

from vidiff.diffusion.loss import DiffusionLoss
from vidiff.diffusion.process import (
    PREDICTIONS,
    Denoiser,
    posterior,
    prediction_target,
    prediction_to_x_eps,
    q_sample,
    q_transition,
)
from vidiff.diffusion.schedule import alpha_sigma, logsnr_cosine, t_from_logsnr, time_grid


@pytest.fixture(autouse=True)
def float64():
    """These checks compare closed forms to 1e-8..1e-12: run them in float64, only them."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_schedule_invariants():
    t = torch.linspace(0, 1, 1001)
    lam = logsnr_cosine(t)
    a, s = alpha_sigma(lam)
    assert torch.allclose(a**2 + s**2, torch.ones_like(a), atol=1e-12)
    assert (lam[1:] < lam[:-1]).all(), "λ must decrease in t"
    assert lam[0].item() == pytest.approx(20.0, abs=1e-9) and lam[-1].item() == pytest.approx(-20.0, abs=1e-9)
    assert torch.allclose(t_from_logsnr(lam), t, atol=1e-9)
    # the unclipped cosine schedule: α_t = cos(πt/2)
    tt = torch.tensor([0.3, 0.5, 0.7])
    a_unclipped, _ = alpha_sigma(logsnr_cosine(tt, -60.0, 60.0))
    assert torch.allclose(a_unclipped, torch.cos(math.pi * tt / 2), atol=1e-9)
    g = time_grid(8)
    assert g.dtype == torch.float64 and g[0] == 1 and g[-1] == 0 and len(g) == 9


@pytest.mark.parametrize("shift", [-3.0, 2.0])
def test_shifted_schedule(shift):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    lam = logsnr_cosine(t, shift=shift)
    assert (lam[1:] < lam[:-1]).all()
    assert lam[0].item() == pytest.approx(20.0, abs=1e-9) and lam[-1].item() == pytest.approx(-20.0, abs=1e-9)
    assert torch.allclose(t_from_logsnr(lam, shift=shift), t, atol=1e-9)
    # away from the clipped ends the whole curve moves by the shift: λ_shift(t) ≈ λ(t) + shift
    mid = slice(200, 801)
    assert torch.allclose(lam[mid], logsnr_cosine(t, -60.0, 60.0)[mid] + shift, atol=3e-3)


def test_transition_composes_with_marginal():
    """q(z_t|x) = ∫ q(z_t|z_s) q(z_s|x): mean α_t x and variance σ_t²."""
    x = torch.randn(5, 7)
    ls, lt = torch.tensor(2.0), torch.tensor(-1.0)
    a_s, s_s = alpha_sigma(ls)
    a_t, s_t = alpha_sigma(lt)
    mean_s = a_s * x
    m, var = q_transition(mean_s, ls, lt)
    assert torch.allclose(m, a_t * x)
    total = (a_t / a_s) ** 2 * s_s**2 + var[0, 0]
    assert total.item() == pytest.approx((s_t**2).item(), rel=1e-12)


def test_posterior_matches_bayes():
    """q(z_s|z_t,x) ∝ q(z_t|z_s) q(z_s|x): product of Gaussians in z_s, done by hand."""
    x, z_t = torch.randn(3, 4), torch.randn(3, 4)
    ls, lt = torch.tensor(1.5), torch.tensor(0.2)
    a_s, s_s = alpha_sigma(ls)
    a_t, _ = alpha_sigma(lt)
    _, var_ts = q_transition(torch.zeros(1, 1), ls, lt)
    var_ts = var_ts.item()
    r = a_t / a_s  # z_t = r z_s + noise(var_ts)
    prec = 1 / s_s**2 + r**2 / var_ts
    mean = (a_s * x / s_s**2 + r * z_t / var_ts) / prec
    m, v = posterior(z_t, x, lt, ls)
    assert torch.allclose(m, mean, atol=1e-12)
    assert v[0, 0].item() == pytest.approx((1 / prec).item(), rel=1e-10)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_parameterisation_round_trip(prediction):
    x, eps = torch.randn(6, 3, 2, 4, 4), torch.randn(6, 3, 2, 4, 4)
    lam = torch.linspace(-8, 8, 6)
    z = q_sample(x, lam, eps)
    out = prediction_target(x, eps, lam, prediction)
    x_hat, eps_hat = prediction_to_x_eps(out, z, lam, prediction)
    assert torch.allclose(x_hat, x, atol=1e-8) and torch.allclose(eps_hat, eps, atol=1e-8)


def test_unknown_prediction_is_named():
    with pytest.raises(ValueError, match="unknown prediction type 'eps'"):
        Denoiser(torch.nn.Identity(), "eps")
    with pytest.raises(ValueError, match="unknown loss weighting"):
        DiffusionLoss("snr")


class _Oracle(torch.nn.Module):
    """A 'network' that outputs the exact target for a known (x, ε), to check the loss wiring."""

    def __init__(self, prediction, x):
        super().__init__()
        self.prediction, self.x = prediction, x

    def forward(self, z, logsnr):
        a, s = alpha_sigma(logsnr.reshape(-1, 1, 1, 1, 1))
        eps = (z - a * self.x) / s
        return prediction_target(self.x, eps, logsnr, self.prediction)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("weighting", ["epsilon", "v", "x"])
def test_loss_zero_for_perfect_model_and_weights(prediction, weighting):
    x = torch.randn(4, 3, 2, 4, 4)
    den = Denoiser(_Oracle(prediction, x), prediction)
    loss = DiffusionLoss(weighting)(den, x, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (4,) and loss.abs().max() < 1e-6
    # a model that always predicts x̂ = 0: ε weighting gives e^λ ‖x‖², x weighting ‖x‖²
    zero_x = Denoiser(lambda z, logsnr: torch.zeros_like(z), "sample")
    g = torch.Generator().manual_seed(1)
    loss = DiffusionLoss(weighting)(zero_x, x, generator=g)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(4, generator=g, dtype=torch.float64)
    lam = logsnr_cosine(t)
    w = {"epsilon": lam.exp(), "v": 1 + lam.exp(), "x": torch.ones_like(lam)}[weighting]
    assert torch.allclose(loss, w * x.pow(2).flatten(1).mean(1), rtol=1e-6)
