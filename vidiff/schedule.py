"""Noise schedules as pure functions of continuous time t ∈ [0, 1] (paper §2).

Everything is written in the log signal-to-noise ratio λ_t = log(α_t² / σ_t²) of a variance
preserving process (α_t² + σ_t² = 1), so α_t² = sigmoid(λ_t) and σ_t² = sigmoid(−λ_t).
"""
from __future__ import annotations

import math

import torch

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def logsnr_cosine(t: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> torch.Tensor:
    """Cosine schedule λ(t) = −2 log tan(a t + b), with a, b chosen so that λ(0) = logsnr_max and
    λ(1) = logsnr_min (the paper clips to [−20, 20], Appendix A). Without the clipping this is
    α_t = cos(πt/2), the cosine schedule of Nichol & Dhariwal."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return -2.0 * torch.log(torch.tan(a * t + b))


def t_from_logsnr(logsnr: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> torch.Tensor:
    """Inverse of :func:`logsnr_cosine`."""
    b = math.atan(math.exp(-0.5 * logsnr_max))
    a = math.atan(math.exp(-0.5 * logsnr_min)) - b
    return (torch.atan(torch.exp(-0.5 * logsnr)) - b) / a


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)); α² + σ² = 1."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def time_grid(steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniform grid t_0 = 1 > t_1 > … > t_steps = 0 (float64), the paper's sampling grid."""
    if steps < 1:
        raise ValueError(f"number of sampling steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype)
