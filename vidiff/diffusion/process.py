"""Continuous-time Gaussian diffusion (paper §2): forward process, posterior, parameterisations and
the denoiser interface (the losses are in :mod:`vidiff.diffusion.loss`).

Notation: x data, z_t = α_t x + σ_t ε, λ_t = log(α_t²/σ_t²), 0 ≤ s < t ≤ 1.
The model's raw output is converted to x̂ and ε̂ in one place, :func:`prediction_to_x_eps`.
"""

from __future__ import annotations

import torch
from torch import nn

from vidiff.diffusion.schedule import alpha_sigma

PREDICTIONS = ("epsilon", "v_prediction", "sample")


def expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example values (b,) (or a scalar) → shape (b, 1, …, 1) broadcastable against `like`."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    if v.ndim == 0:
        v = v.expand(like.shape[0])
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x: torch.Tensor, logsnr: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A sample of q(z_t | x) = N(α_t x, σ_t² I)."""
    alpha, sigma = alpha_sigma(expand(logsnr, x))
    return alpha * x + sigma * noise


def q_transition(z_s: torch.Tensor, logsnr_s, logsnr_t) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(z_t | z_s) = N((α_t/α_s) z_s, σ²_{t|s} I), σ²_{t|s} = (1 − e^{λ_t − λ_s}) σ_t²."""
    ls, lt = expand(logsnr_s, z_s), expand(logsnr_t, z_s)
    alpha_s, _ = alpha_sigma(ls)
    alpha_t, sigma_t = alpha_sigma(lt)
    var = -torch.expm1(lt - ls) * sigma_t**2
    return (alpha_t / alpha_s) * z_s, var


def posterior(z_t: torch.Tensor, x: torch.Tensor, logsnr_t, logsnr_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(z_s | z_t, x):
    μ̃_{s|t} = e^{λ_t − λ_s}(α_s/α_t) z_t + (1 − e^{λ_t − λ_s}) α_s x,  σ̃²_{s|t} = (1 − e^{λ_t − λ_s}) σ_s²."""
    lt, ls = expand(logsnr_t, z_t), expand(logsnr_s, z_t)
    alpha_t, _ = alpha_sigma(lt)
    alpha_s, sigma_s = alpha_sigma(ls)
    r = torch.exp(lt - ls)  # e^{λ_t − λ_s} = SNR(t)/SNR(s) < 1
    one_minus_r = -torch.expm1(lt - ls)
    mean = r * (alpha_s / alpha_t) * z_t + one_minus_r * alpha_s * x
    return mean, one_minus_r * sigma_s**2


def eps_from_x(z: torch.Tensor, x: torch.Tensor, logsnr) -> torch.Tensor:
    """ε̂ = (z − α x̂)/σ."""
    alpha, sigma = alpha_sigma(expand(logsnr, z))
    return (z - alpha * x) / sigma


def v_target(x: torch.Tensor, eps: torch.Tensor, logsnr) -> torch.Tensor:
    """v = α ε − σ x (Salimans & Ho 2022)."""
    alpha, sigma = alpha_sigma(expand(logsnr, x))
    return alpha * eps - sigma * x


def prediction_target(x: torch.Tensor, eps: torch.Tensor, logsnr, prediction: str) -> torch.Tensor:
    """What a network of the given parameterisation should output for (x, ε)."""
    if prediction == "epsilon":
        return eps
    if prediction == "v_prediction":
        return v_target(x, eps, logsnr)
    if prediction == "sample":
        return x
    raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")


def prediction_to_x_eps(
    out: torch.Tensor, z: torch.Tensor, logsnr, prediction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one place where a network output becomes (x̂, ε̂)."""
    alpha, sigma = alpha_sigma(expand(logsnr, z))
    if prediction == "epsilon":
        return (z - sigma * out) / alpha, out
    if prediction == "v_prediction":
        return alpha * z - sigma * out, sigma * z + alpha * out  # x̂ = αz − σv̂, ε̂ = σz + αv̂
    if prediction == "sample":
        return out, (z - alpha * out) / sigma
    raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")


class Denoiser(nn.Module):
    """Wraps a network `net(z, logsnr, **cond) -> raw output` of a given parameterisation into the
    library's one interface, `denoiser(z, logsnr, **cond) -> x̂`. Samplers, guidance and losses
    see only this interface; :meth:`predict` also returns ε̂ without a lossy round trip."""

    def __init__(self, net: nn.Module, prediction: str = "epsilon"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")
        self.net = net
        self.prediction = prediction

    def predict(self, z: torch.Tensor, logsnr: torch.Tensor, **cond) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(z, logsnr, **cond)
        return prediction_to_x_eps(out.to(z.dtype), z, logsnr, self.prediction)

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, **cond) -> torch.Tensor:
        return self.predict(z, logsnr, **cond)[0]


def ddim_step(z: torch.Tensor, x: torch.Tensor, lam_t, lam_s) -> torch.Tensor:
    """z_s = α_s x̂ + σ_s ε̂ with ε̂ = (z_t − α_t x̂)/σ_t: the deterministic (η = 0) step t → s."""
    eps = eps_from_x(z, x, lam_t)
    alpha_s, sigma_s = alpha_sigma(expand(torch.as_tensor(lam_s).to(z.dtype), z))
    return alpha_s * x + sigma_s * eps
