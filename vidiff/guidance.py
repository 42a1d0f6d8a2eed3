"""Guidance wraps a denoiser and returns a denoiser (paper §3.1, §3.3); the network never sees a
guidance weight.

Classifier-free guidance, ε̃ = (1 + w) ε̂(z, c) − w ε̂(z). For a fixed z_t and λ_t, x̂ and ε̂ are affine
images of each other (x̂ = (z − σ ε̂)/α) and so is v̂, so the same combination of x̂ (or of v̂) with
weights (1 + w, −w) is exactly the guided ε̃ converted back: guidance applied on the x̂ that the
denoiser returns is consistent for every parameterisation (ε, v and x-prediction alike).
"""
from __future__ import annotations

from typing import Callable

import torch

DenoiseFn = Callable[..., torch.Tensor]


def null_condition(cond: dict) -> dict:
    """The null condition of the same batch: class −1, text with an all-False mask."""
    out = {}
    for k, v in cond.items():
        if k == "class_labels":
            out[k] = torch.full_like(v, -1)
        elif k == "text_mask":
            out[k] = torch.zeros_like(v)
        else:
            out[k] = v
    return out


def _cat_cond(a: dict, b: dict) -> dict:
    out = {}
    for k in a:
        if k == "temporal_mask" and a[k].ndim == 2:
            out[k] = a[k]
        else:
            out[k] = torch.cat([a[k], b[k]])
    return out


def classifier_free_guidance(denoise: DenoiseFn, weight: float) -> DenoiseFn:
    """x̃ = (1 + w) x̂(z, c) − w x̂(z, ∅), the conditional and unconditional passes in one batched call."""
    if weight == 0:
        return denoise

    def guided(z, logsnr, **cond):
        if not any(k in cond for k in ("class_labels", "text_mask")):
            raise ValueError("classifier-free guidance needs a condition (class_labels or text_tokens/text_mask)")
        both = denoise(torch.cat([z, z]), torch.cat([logsnr, logsnr]), **_cat_cond(cond, null_condition(cond)))
        x_c, x_u = both.chunk(2)
        return (1 + weight) * x_c - weight * x_u

    return guided
