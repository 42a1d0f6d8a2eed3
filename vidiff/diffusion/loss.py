"""The training losses (paper §2): the weighted MSE of the denoiser with t uniform, and progressive
distillation's. A loss is a callable `(denoiser, x, cond) -> per-example loss` that draws its own
times and noise and weights itself."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from vidiff.diffusion.process import PREDICTIONS, Denoiser, ddim_step, expand, q_sample, v_target
from vidiff.diffusion.schedule import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma, logsnr_cosine

WEIGHTINGS = ("epsilon", "v", "x", "min_snr")


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
