"""Continuous-time Gaussian diffusion (paper §2): forward process, posterior, parameterisations,
the denoiser interface and the training loss.

Notation: x data, z_t = α_t x + σ_t ε, λ_t = log(α_t²/σ_t²), 0 ≤ s < t ≤ 1.
The model's raw output is converted to x̂ and ε̂ in one place, :func:`prediction_to_x_eps`.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from vidiff.diffusion.schedule import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma, logsnr_cosine

PREDICTIONS = ("epsilon", "v_prediction", "sample")
WEIGHTINGS = ("epsilon", "v", "x", "min_snr")


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


class DiffusionLoss:
    """Weighted MSE of the paper, E_{ε,t}[w(λ_t) ‖x̂_θ(z_t) − x‖²] with t ~ U[0, 1], returned per example.

    weighting: "epsilon" → ‖ε̂ − ε‖² = e^{λ}‖x̂ − x‖² (the paper's default), "v" → ‖v̂ − v‖² =
    (1 + e^{λ})‖x̂ − x‖², "x" → ‖x̂ − x‖², "min_snr" → min(e^{λ}, γ)‖x̂ − x‖² (Hang et al. 2023),
    written as the weighted error of the denoiser's own output (:func:`min_snr_weight`)."""

    def __init__(
        self,
        weighting: str = "epsilon",
        logsnr_min: float = LOGSNR_MIN,
        logsnr_max: float = LOGSNR_MAX,
        logsnr_fn: Callable = logsnr_cosine,
        min_snr_gamma: float = 5.0,
    ):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {WEIGHTINGS}")
        self.weighting, self.logsnr_min, self.logsnr_max, self.logsnr_fn = weighting, logsnr_min, logsnr_max, logsnr_fn
        self.min_snr_gamma = min_snr_gamma

    def __call__(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: Optional[dict] = None,
        generator: Optional[torch.Generator] = None,
        t: Optional[torch.Tensor] = None,
        eps: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """`t` (b,) and `eps` (like x) may be given (e.g. drawn for a global batch and sharded)."""
        b = x.shape[0]
        if t is None:
            t = torch.rand(b, device=x.device, generator=generator, dtype=torch.float64)
        logsnr = self.logsnr_fn(t.double(), self.logsnr_min, self.logsnr_max).to(x.dtype)
        if eps is None:
            eps = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        z = q_sample(x, logsnr, eps)
        x_hat, eps_hat = denoiser.predict(z, logsnr, **(cond or {}))
        if self.weighting == "min_snr":
            return self._min_snr(denoiser.prediction, x, eps, x_hat, eps_hat, logsnr)
        if self.weighting == "epsilon":
            err = eps_hat - eps
        elif self.weighting == "x":
            err = x_hat - x
        else:
            alpha, sigma = alpha_sigma(expand(logsnr, x))
            err = (alpha * eps_hat - sigma * x_hat) - v_target(x, eps, logsnr)
        sq = err.to(torch.promote_types(err.dtype, torch.float32)) ** 2
        return sq.flatten(1).mean(1)

    def _min_snr(self, prediction: str, x, eps, x_hat, eps_hat, logsnr) -> torch.Tensor:
        """min(SNR, γ)‖x̂ − x‖², computed as w · ‖out − target‖² in the network's own output space, whose
        error is O(1) at every λ (x-space errors are tiny at high noise)."""
        if prediction == "epsilon":
            err = eps_hat - eps
        elif prediction == "sample":
            err = x_hat - x
        else:
            alpha, sigma = alpha_sigma(expand(logsnr, x))
            err = (alpha * eps_hat - sigma * x_hat) - v_target(x, eps, logsnr)
        sq = err.to(torch.promote_types(err.dtype, torch.float32)) ** 2
        return min_snr_weight(logsnr, self.min_snr_gamma, prediction).to(sq.dtype) * sq.flatten(1).mean(1)


def min_snr_weight(logsnr: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-γ (Hang et al. 2023): the x-space weight min(SNR, γ), SNR = e^{λ}, as the weight of the
    squared error of the given parameterisation: ‖ε̂ − ε‖² = SNR‖x̂ − x‖² and ‖v̂ − v‖² = (SNR + 1)‖x̂ − x‖²,
    so ε: min(SNR, γ)/SNR, v: min(SNR, γ)/(SNR + 1), x: min(SNR, γ). Written in λ so that no SNR overflows."""
    lam = logsnr.double()
    log_gamma = math.log(gamma)
    if prediction == "epsilon":
        w = torch.exp(torch.clamp(log_gamma - lam, max=0.0))  # min(1, γ/SNR)
    elif prediction == "v_prediction":  # SNR/(SNR + 1) = sigmoid(λ) below γ, γ/(SNR + 1) = γ sigmoid(−λ) above
        w = torch.where(lam <= log_gamma, torch.sigmoid(lam), gamma * torch.sigmoid(-lam))
    elif prediction == "sample":
        w = torch.exp(torch.clamp(lam, max=log_gamma))  # min(SNR, γ)
    else:
        raise ValueError(f"unknown prediction type {prediction!r}; choose one of {PREDICTIONS}")
    return w.to(logsnr.dtype)


class DistillationLoss:
    """Progressive distillation (Salimans & Ho 2022, Algorithm 2): the student learns in one DDIM step
    from t to t − 1/N what its teacher does in two (t → t − ½/N → t − 1/N), on the student's grid of N
    steps t = i/N. The target x̃ is the x̂ with which one DDIM step from z_t lands on the teacher's z_{t''}:
        x̃ = (z_{t''} − (σ_{t''}/σ_t) z_t) / (α_{t''} − (σ_{t''}/σ_t) α_t),
    weighted by max(SNR_t, 1) ("truncated SNR", the paper's choice for x-space errors). Times drawn
    uniformly in [0, 1] (as the trainer draws them) are rounded up onto the grid."""

    def __init__(
        self,
        teacher: Callable,
        student_steps: int,
        logsnr_min: float = LOGSNR_MIN,
        logsnr_max: float = LOGSNR_MAX,
        logsnr_fn: Callable = logsnr_cosine,
    ):
        if student_steps < 1:
            raise ValueError(f"the student needs at least one step, got {student_steps}")
        self.teacher, self.n = teacher, student_steps
        self.logsnr = lambda t: logsnr_fn(t, logsnr_min, logsnr_max)

    def _ddim(self, z, lam_t, lam_s, cond):
        x = self.teacher(z, lam_t.to(z.dtype), **cond)
        return ddim_step(z, x, lam_t, lam_s)

    def target(self, x: torch.Tensor, cond: dict, t: torch.Tensor, eps: torch.Tensor):
        """(z_t, λ_t, x̃) for clean `x`, times `t` in [0, 1] (rounded up onto the grid) and noise `eps`."""
        i = torch.ceil(t.double() * self.n).clamp(1, self.n)  # the student's step ends at (i − 1)/n
        lam, lam1, lam2 = (self.logsnr(v) for v in (i / self.n, (i - 0.5) / self.n, (i - 1) / self.n))
        z = q_sample(x, lam.to(x.dtype), eps)
        with torch.no_grad():
            z2 = self._ddim(self._ddim(z, lam, lam1, cond), lam1, lam2, cond)
            a, s = (expand(v.to(x.dtype), x) for v in alpha_sigma(lam))
            a2, s2 = (expand(v.to(x.dtype), x) for v in alpha_sigma(lam2))
            return z, lam, (z2 - (s2 / s) * z) / (a2 - (s2 / s) * a)

    def __call__(
        self,
        denoiser,
        x: torch.Tensor,
        cond: Optional[dict] = None,
        generator=None,
        t: Optional[torch.Tensor] = None,
        eps: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        cond = cond or {}
        if t is None:
            t = torch.rand(x.shape[0], device=x.device, generator=generator, dtype=torch.float64)
        if eps is None:
            eps = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        z, lam, target = self.target(x, cond, t, eps)
        err = denoiser(z, lam.to(x.dtype), **cond) - target
        weight = lam.exp().clamp_min(1.0).to(err.dtype)  # max(SNR_t, 1)
        return weight * (err.float() ** 2).flatten(1).mean(1)


def ddim_step(z: torch.Tensor, x: torch.Tensor, lam_t, lam_s) -> torch.Tensor:
    """z_s = α_s x̂ + σ_s ε̂ with ε̂ = (z_t − α_t x̂)/σ_t: the deterministic (η = 0) step t → s."""
    eps = eps_from_x(z, x, lam_t)
    alpha_s, sigma_s = alpha_sigma(expand(torch.as_tensor(lam_s).to(z.dtype), z))
    return alpha_s * x + sigma_s * eps
