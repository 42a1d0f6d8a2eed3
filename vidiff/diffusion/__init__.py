"""The diffusion maths, samplers and guidance (paper §2–3), free of the network, the data and files.

    schedule.py   the cosine log-SNR λ(t), α, σ, time grids
    process.py    q(z_t|x), q(z_t|z_s), the posterior, ε / v / x conversions, Denoiser
    loss.py       the training losses: the weighted MSE (ε, v, x, min-SNR-γ weighting), distillation's
    gaussian.py   Gaussian data with its exact optimal denoiser (the samplers' and guidance's check)
    sampling.py   samplers that walk a log-SNR grid the caller builds, and their registry
    guidance.py   wrappers of a denoiser: classifier-free, replacement, reconstruction, clipping

The package itself gives the names of the process and the losses (``from vidiff.diffusion import Denoiser``).
"""

from vidiff.diffusion.loss import WEIGHTINGS, DiffusionLoss, DistillationLoss
from vidiff.diffusion.process import (
    PREDICTIONS,
    Denoiser,
    ddim_step,
    eps_from_x,
    expand,
    posterior,
    prediction_target,
    prediction_to_x_eps,
    q_sample,
    q_transition,
    v_target,
)

__all__ = [
    "PREDICTIONS",
    "WEIGHTINGS",
    "Denoiser",
    "DiffusionLoss",
    "DistillationLoss",
    "ddim_step",
    "eps_from_x",
    "expand",
    "posterior",
    "prediction_target",
    "prediction_to_x_eps",
    "q_sample",
    "q_transition",
    "v_target",
]
