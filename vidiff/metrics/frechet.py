"""Fréchet distance between Gaussians fitted to two feature sets (FID, FVD).

d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½      (Dowson & Landau 1982)

tr (Σ₁ Σ₂)^½ is computed as the sum of the square roots of the eigenvalues of the symmetric PSD
matrix Σ₁^½ Σ₂ Σ₁^½ (same spectrum as Σ₁Σ₂), in float64 with `eigh`; eigenvalues below the
numerical-rank tolerance (tiny negatives included) are rounding noise and clamped to 0. Unlike
`scipy.linalg.sqrtm(Σ₁ Σ₂)` this stays right when the covariances are singular, as they are with
fewer videos than feature dimensions (256 videos, 400-d I3D logits).
"""

from __future__ import annotations

import numpy as np
import torch

from vidiff.errors import MetricsError


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (divided by n − 1) of features `(n, d)`, in float64."""
    x = _as_float64(feats)
    if x.ndim != 2 or x.shape[0] < 2:
        raise MetricsError(f"need features of shape (n >= 2, d), got {x.shape}")
    mu = x.mean(axis=0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)  # (d, d)


def _clamp_noise(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise set to 0: those below the numerical-rank
    tolerance d·ε·λ_max (as numpy's matrix_rank), negative ones included. Their square roots would
    otherwise add sqrt(ε)·λ_max each to the trace once per null direction of a singular Σ."""
    tol = max(w.max(initial=0.0), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix via eigh, rounding noise clamped to 0."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(_clamp_noise(w))) @ v.T  # V diag(√w) Vᵀ


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr (Σ₁ Σ₂)^½ = Σᵢ sqrt(λᵢ(Σ₁^½ Σ₂ Σ₁^½)) for PSD Σ₁, Σ₂ (similar matrices, same spectrum)."""
    s1 = psd_sqrt(_as_float64(sigma1))
    m = s1 @ _as_float64(sigma2) @ s1  # symmetric PSD
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(_clamp_noise(w)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), float64."""
    mu1, mu2 = _as_float64(mu1), _as_float64(mu2)
    sigma1, sigma2 = _as_float64(sigma1), _as_float64(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise MetricsError(f"shape mismatch: μ {mu1.shape} {mu2.shape}, Σ {sigma1.shape} {sigma2.shape}")
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(d2, 0.0))  # rounding can push an exact 0 slightly negative


def frechet_distance_from_feats(feats1, feats2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets `(n₁, d)` and `(n₂, d)`.

    With fewer samples than dimensions the covariance Σᵢ = BᵢBᵢᵀ, Bᵢ = Xᵢᶜᵀ / sqrt(nᵢ − 1) (d × nᵢ,
    Xᵢᶜ centred) has rank < d, and Σ₁^½ Σ₂ Σ₁^½ has the nonzero spectrum of the small PSD matrix
    B₁ᵀ Σ₂ B₁ (n₁ × n₁). So tr(Σ₁Σ₂)^½ is computed there: the singular values of B₁ᵀB₂ when both
    sets are small, else the eigenvalues of B₁ᵀΣ₂B₁. Same value, far cheaper at d = 2048.
    """
    x1, x2 = _as_float64(feats1), _as_float64(feats2)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1] or min(len(x1), len(x2)) < 2:
        raise MetricsError(f"need features (n >= 2, d) and (m >= 2, d), got {x1.shape} and {x2.shape}")
    d = x1.shape[1]
    if len(x1) > len(x2):
        x1, x2 = x2, x1  # the distance is symmetric; x1 is the smaller set
    if len(x1) > d:
        return frechet_distance(*gaussian_stats(x1), *gaussian_stats(x2))
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    b1 = (x1 - mu1).T / np.sqrt(len(x1) - 1)  # (d, n₁), Σ₁ = b1 b1ᵀ
    b2 = (x2 - mu2).T / np.sqrt(len(x2) - 1)  # (d, n₂), Σ₂ = b2 b2ᵀ
    if len(x2) <= d:
        trace_sqrt = np.linalg.svd(b1.T @ b2, compute_uv=False).sum()  # σᵢ(B₁ᵀB₂) = sqrt λᵢ(Σ₁^½Σ₂Σ₁^½)
    else:
        m = b1.T @ (b2 @ (b2.T @ b1))  # B₁ᵀ Σ₂ B₁, (n₁, n₁) symmetric PSD
        trace_sqrt = np.sqrt(_clamp_noise(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    d2 = diff @ diff + np.sum(b1 * b1) + np.sum(b2 * b2) - 2 * trace_sqrt  # tr Σᵢ = ‖Bᵢ‖²_F
    return float(max(d2, 0.0))
