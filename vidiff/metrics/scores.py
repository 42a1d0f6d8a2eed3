"""Inception Score and kernel distances (KID on Inception features, KVD on I3D features).

- IS (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)), averaged over splits.
- KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³, averaged over random subsets. KVD is the same on I3D features.
"""

from __future__ import annotations

import numpy as np

from vidiff.errors import MetricsError
from vidiff.metrics.frechet import _as_float64


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` equal parts of exp(mean KL(p(y|x) ‖ p(y))), p = softmax(logits)."""
    x = _as_float64(logits)
    if x.ndim != 2:
        raise MetricsError(f"logits must be (n, classes), got {x.shape}")
    if not 1 <= splits <= x.shape[0]:
        raise MetricsError(f"splits must be in [1, n = {x.shape[0]}], got {splits}")
    log_p = x - x.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log softmax, (n, classes)
    scores = []
    for part in np.array_split(log_p, splits):
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0))  # log of the marginal p(y) over the split
        kl = (p * (part - log_py)).sum(axis=1)  # KL(p(y|x) ‖ p(y)) per sample
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (xᵀy / d + coef0)^degree, the KID kernel; (n, d), (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD²: mean of k over pairs i ≠ j within each set, minus twice the mean across."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x, degree), polynomial_kernel(y, y, degree), polynomial_kernel(x, y, degree)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kernel_distance(
    feats1, feats2, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0, degree: int = 3
) -> tuple[float, float]:
    """KID / KVD: (mean, std) of the unbiased MMD² over `num_subsets` random subsets of size
    min(subset_size, n₁, n₂), drawn without replacement from each set (seeded)."""
    x, y = _as_float64(feats1), _as_float64(feats2)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise MetricsError(f"features must be (n, d) and (m, d), got {x.shape} and {y.shape}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise MetricsError("kernel distance needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(
            x[rng.choice(x.shape[0], size, replace=False)], y[rng.choice(y.shape[0], size, replace=False)], degree
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
