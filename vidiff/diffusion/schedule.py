"""Noise schedules as pure functions of continuous time t ∈ [0, 1] (paper §2).

Everything is written in the log signal-to-noise ratio λ_t = log(α_t² / σ_t²) of a variance
preserving process (α_t² + σ_t² = 1), so α_t² = sigmoid(λ_t) and σ_t² = sigmoid(−λ_t).
"""

from __future__ import annotations

import math

import torch

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def _cosine_ab(logsnr_min: float, logsnr_max: float, shift: float) -> tuple[float, float]:
    b = math.atan(math.exp(-0.5 * (logsnr_max - shift)))
    return math.atan(math.exp(-0.5 * (logsnr_min - shift))) - b, b


def logsnr_cosine(
    t: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX, shift: float = 0.0
) -> torch.Tensor:
    """Cosine schedule λ(t) = −2 log tan(a t + b) + shift, with a, b chosen so that λ(0) = logsnr_max
    and λ(1) = logsnr_min (the paper clips to [−20, 20], Appendix A). With shift 0 and without the
    clipping this is α_t = cos(πt/2), the cosine schedule of Nichol & Dhariwal. A shift (beyond the
    paper: the shifted cosine schedule of Hoogeboom et al. 2023, "simple diffusion") moves the
    schedule's middle: shift < 0 spends more of t, in training and in sampling, at high noise, where
    the coarse content shared by all frames (a shape's colour and path) is decided."""
    a, b = _cosine_ab(logsnr_min, logsnr_max, shift)
    return -2.0 * torch.log(torch.tan(a * t + b)) + shift


def t_from_logsnr(
    logsnr: torch.Tensor, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX, shift: float = 0.0
) -> torch.Tensor:
    """Inverse of :func:`logsnr_cosine`."""
    a, b = _cosine_ab(logsnr_min, logsnr_max, shift)
    return (torch.atan(torch.exp(-0.5 * (logsnr - shift))) - b) / a


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """α = sqrt(sigmoid(λ)), σ = sqrt(sigmoid(−λ)); α² + σ² = 1."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def time_grid(steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniform grid t_0 = 1 > t_1 > … > t_steps = 0 (float64), the paper's sampling grid."""
    if steps < 1:
        raise ValueError(f"number of sampling steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype)
