"""Samplers (paper §2 and §3.1): stateless functions over any denoiser `denoise(z, logsnr, **cond) -> x̂`.

Each walks a time grid from t = 1 to t = 0 (float64, :func:`vidiff.schedule.time_grid`) and returns
the final x̂. Randomness comes from `noise`, a :class:`Noise` (per-sample seeds, so that a sample does
not depend on the batch it was drawn in) or a plain `torch.Generator`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from .diffusion import eps_from_x, expand, posterior, q_transition
from .schedule import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma, logsnr_cosine, time_grid

DenoiseFn = Callable[..., torch.Tensor]


class Noise:
    """Standard normal noise drawn per sample from its own seed: row i of every draw depends only on
    seeds[i] and on how many draws came before."""

    def __init__(self, seeds: Sequence[int], device: Union[str, torch.device] = "cpu"):
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"batch of {like.shape[0]} but {len(self.generators)} seeds")
        return torch.stack([torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype)
                            for g in self.generators])


def _noise_fn(noise) -> Callable[[torch.Tensor], torch.Tensor]:
    if noise is None or isinstance(noise, torch.Generator):
        return lambda like: torch.randn(like.shape, generator=noise, device=like.device, dtype=like.dtype)
    return noise


def initial_noise(shape: Sequence[int], noise=None, device="cpu") -> torch.Tensor:
    """z_1 ~ N(0, I) drawn from the same noise source the sampler uses."""
    return _noise_fn(noise)(torch.empty(tuple(shape), device=device))


def _grid(steps: int, logsnr_fn, logsnr_min, logsnr_max):
    return logsnr_fn(time_grid(steps), logsnr_min, logsnr_max)  # λ on the float64 grid, λ_0 = λ_min


def _denoise(denoise: DenoiseFn, z: torch.Tensor, logsnr: torch.Tensor, clip: Optional[float], cond: dict):
    x = denoise(z, torch.full((z.shape[0],), float(logsnr), device=z.device, dtype=torch.float32), **cond)
    return x.clamp(-clip, clip) if clip is not None else x


def ancestral_step(denoise: DenoiseFn, z: torch.Tensor, logsnr_t, logsnr_s, *, gamma: float, clip, noise_fn, cond):
    """One step z_t → z_s of the ancestral sampler:
    z_s = μ̃_{s|t}(z_t, x̂_θ(z_t)) + sqrt((σ̃²_{s|t})^{1−γ} (σ²_{t|s})^γ) ε. Returns (z_s, x̂)."""
    x = _denoise(denoise, z, logsnr_t, clip, cond)
    mean, var_post = posterior(z, x, logsnr_t, logsnr_s)
    _, var_fwd = q_transition(z, logsnr_s, logsnr_t)
    std = (var_post ** (1.0 - gamma) * var_fwd ** gamma).sqrt()
    return mean + std * noise_fn(z), x


def langevin_step(denoise: DenoiseFn, z: torch.Tensor, logsnr, *, delta: float, clip, noise_fn, cond):
    """Langevin correction at noise level λ_s: z_s ← z_s − ½ δ σ_s ε̂_θ(z_s) + sqrt(δ) σ_s ε′,
    i.e. a Langevin step of size δσ_s² on log p(z_s) since ε̂ ≈ −σ_s ∇ log p(z_s)."""
    x = _denoise(denoise, z, logsnr, clip, cond)
    lam = torch.tensor(float(logsnr))
    eps = eps_from_x(z, x, lam)
    sigma = float(alpha_sigma(lam)[1])
    return z - 0.5 * delta * sigma * eps + (delta ** 0.5) * sigma * noise_fn(z)


def sample_ancestral(denoise: DenoiseFn, z: torch.Tensor, steps: int = 256, *, gamma: float = 0.1,
                     clip: Optional[float] = None, noise=None, callback=None,
                     logsnr_fn=logsnr_cosine, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX,
                     **cond) -> torch.Tensor:
    """The paper's ancestral sampler (§2, eq. for z_s with the γ interpolation of the variance between
    σ̃²_{s|t} (γ = 0) and σ²_{t|s} (γ = 1)), `steps` uniform steps from z_1 = `z` to t = 0."""
    return sample_pc(denoise, z, steps, gamma=gamma, corrector_steps=0, clip=clip, noise=noise, callback=callback,
                     logsnr_fn=logsnr_fn, logsnr_min=logsnr_min, logsnr_max=logsnr_max, **cond)


def sample_pc(denoise: DenoiseFn, z: torch.Tensor, steps: int = 256, *, gamma: float = 0.0,
              corrector_steps: int = 1, delta: float = 0.1, clip: Optional[float] = None, noise=None, callback=None,
              logsnr_fn=logsnr_cosine, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX,
              **cond) -> torch.Tensor:
    """Predictor-corrector sampler (§2): each ancestral step is followed by `corrector_steps` Langevin
    corrections with step δ (paper: δ = 0.1). The last step returns x̂(z_{t_{N−1}}) without noise."""
    noise_fn = _noise_fn(noise)
    lam = _grid(steps, logsnr_fn, logsnr_min, logsnr_max)
    for i in range(steps):
        lt, ls = lam[i], lam[i + 1]
        if i == steps - 1:
            x = _denoise(denoise, z, lt, clip, cond)
            if callback is not None:
                callback(i, steps, x)
            return x
        z, x = ancestral_step(denoise, z, lt, ls, gamma=gamma, clip=clip, noise_fn=noise_fn, cond=cond)
        for _ in range(corrector_steps):
            z = langevin_step(denoise, z, ls, delta=delta, clip=clip, noise_fn=noise_fn, cond=cond)
        if callback is not None:
            callback(i, steps, x)
    raise AssertionError("unreachable")


def sample_ddim(denoise: DenoiseFn, z: torch.Tensor, steps: int = 50, *, clip: Optional[float] = None, noise=None,
                callback=None, logsnr_fn=logsnr_cosine, logsnr_min: float = LOGSNR_MIN,
                logsnr_max: float = LOGSNR_MAX, **cond) -> torch.Tensor:
    """Deterministic DDIM sampler (Song et al. 2021; the probability-flow ODE with Euler steps in λ):
    z_s = α_s x̂ + σ_s ε̂, ε̂ = (z_t − α_t x̂)/σ_t. `noise` is accepted for a uniform call signature and unused."""
    lam = _grid(steps, logsnr_fn, logsnr_min, logsnr_max)
    for i in range(steps):
        lt, ls = lam[i], lam[i + 1]
        x = _denoise(denoise, z, lt, clip, cond)
        if i == steps - 1:
            if callback is not None:
                callback(i, steps, x)
            return x
        eps = eps_from_x(z, x, torch.tensor(float(lt)))
        alpha_s, sigma_s = alpha_sigma(expand(ls.to(z.dtype), z))
        z = alpha_s * x + sigma_s * eps
        if callback is not None:
            callback(i, steps, x)
    raise AssertionError("unreachable")


SAMPLERS = {"ancestral": sample_ancestral, "pc": sample_pc, "ddim": sample_ddim}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
