"""Guidance wraps a denoiser and returns a denoiser (paper §3.1, §3.3); the network never sees a
guidance weight. Every wrapper composes with every sampler, every parameterisation and every other
wrapper; :func:`compose` stacks them in the one order the pipeline and the tasks use.

Classifier-free guidance, ε̃ = (1 + w) ε̂(z, c) − w ε̂(z, ∅). For a fixed z_t and λ_t, x̂ and ε̂ are
affine images of each other (x̂ = (z − σ ε̂)/α) and so is v̂, so the same combination of x̂ (or of v̂)
with weights (1 + w, −w) is exactly the guided ε̃ converted back: guidance applied on the x̂ that the
denoiser returns is consistent for every parameterisation (ε, v and x-prediction alike).

Conditional sampling from an unconditional model (§3.1, "Reconstruction-guided sampling for
improved conditional generation"): x = [x^a, x^b], x^a given, x^b drawn from a model of the joint p(x).

* :func:`replacement` — z^a is replaced at every step by a sample of q(z_t^a | x^a) = N(α_t x^a, σ_t² I).
  Samplers only see the denoiser, so the replacement happens where it is called: the z it receives at
  level λ_t has its a-part overwritten by α_t x^a + σ_t ε (ε fresh, from a noise source the wrapper
  holds) before the model runs, and the x̂ it returns has x̂^a := x^a. Whatever the sampler then does
  to z^a is overwritten at the next call, and its final x̂ carries x^a exactly.
* :func:`reconstruction_guidance` — x̃^b = x̂^b − (w_r α_t / 2) ∇_{z_t^b} ‖x^a − x̂^a(z_t)‖² together
  with the replacement of z^a; and/or the spatial version x̃ = x̂ − (w_r α_t / 2) ∇_{z_t} ‖x^a − D(x̂(z_t))‖²
  with D a differentiable per-frame downsampling. Both terms add when both are given. Only here does
  a gradient flow through the network (a forward pass under `torch.enable_grad()` with respect to z).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from vidiff.diffusion.process import expand
from vidiff.diffusion.sampling import noise_fn
from vidiff.diffusion.schedule import alpha_sigma
from vidiff.errors import ConditioningError

DenoiseFn = Callable[..., torch.Tensor]
DOWNSAMPLE_MODES = ("area", "bilinear")


def _cat_cond(a: dict, b: dict) -> dict:
    """The conditions of two batches as one (every entry of a condition is per sample, (b, …))."""
    return {k: torch.cat([a[k], b[k]]) for k in a}


def classifier_free_guidance(denoise: DenoiseFn, weight: float, null: Callable[[dict], dict]) -> DenoiseFn:
    """x̃ = (1 + w) x̂(z, c) − w x̂(z, ∅), the conditional and unconditional passes in one batched call.
    `null` maps a batch's condition to its null condition ∅ (the model's conditioning object knows it)."""
    if weight == 0:
        return denoise

    def guided(z, logsnr, **cond):
        if not cond:
            raise ConditioningError("classifier-free guidance needs a condition (a prompt or a class)")
        both = denoise(torch.cat([z, z]), torch.cat([logsnr, logsnr]), **_cat_cond(cond, null(cond)))
        x_c, x_u = both.chunk(2)
        return (1 + weight) * x_c - weight * x_u

    return guided


def clipped(denoise: DenoiseFn, clip: Optional[float] = 1.0) -> DenoiseFn:
    """x̂ clamped to [−clip, clip], the range of the data (None: the denoiser unchanged)."""
    if clip is None:
        return denoise

    def clamped(z, logsnr, **cond):
        return denoise(z, logsnr, **cond).clamp(-clip, clip)

    return clamped


def compose(
    denoise: DenoiseFn,
    *,
    guidance: float = 0.0,
    null: Optional[Callable[[dict], dict]] = None,
    condition: Optional[Callable[[DenoiseFn], DenoiseFn]] = None,
    clip: Optional[float] = None,
) -> DenoiseFn:
    """The denoiser a sampler walks with: classifier-free guidance innermost (it needs the network's
    condition and its null ∅), then `condition` (a wrapper such as :func:`replacement` or
    :func:`reconstruction_guidance` with its arguments bound: its gradient flows through the guided x̂),
    then clipping outermost, so that the sampler sees x̂ in the data's range."""
    if guidance:
        denoise = classifier_free_guidance(denoise, guidance, null)
    if condition is not None:
        denoise = condition(denoise)
    return clipped(denoise, clip)


# ---- conditioning an unconditional model (§3.1) ------------------------------------------------
def downsample(video: torch.Tensor, size: Sequence[int], mode: str = "area") -> torch.Tensor:
    """D: differentiable per-frame downsampling of (b c f h w) to spatial `size` = (h', w')."""
    if mode not in DOWNSAMPLE_MODES:
        raise ConditioningError(f"unknown downsampling {mode!r}; choose one of {DOWNSAMPLE_MODES}")
    b = video.shape[0]
    x = rearrange(video, "b c f h w -> (b f) c h w")
    if mode == "area":
        x = F.interpolate(x, size=tuple(size), mode="area")
    else:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(x, "(b f) c h w -> b c f h w", b=b)


def _check_known(x_a: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x_a.ndim != 5:
        raise ConditioningError(f"x_a must be a (b c f h w) video, got shape {tuple(x_a.shape)}")
    known = torch.as_tensor(known, device=x_a.device)
    if known.dtype != torch.bool:
        raise ConditioningError(f"known must be a boolean mask, got dtype {known.dtype}")
    try:
        torch.broadcast_shapes(known.shape, x_a.shape)
    except RuntimeError:
        raise ConditioningError(
            f"mask known {tuple(known.shape)} does not broadcast to x_a {tuple(x_a.shape)}"
        ) from None
    return x_a, known


def _replace(z: torch.Tensor, logsnr: torch.Tensor, x_a: torch.Tensor, known: torch.Tensor, draw) -> torch.Tensor:
    """z with its a-part overwritten by a fresh sample of q(z_t^a | x^a) = N(α_t x^a, σ_t² I)."""
    alpha, sigma = alpha_sigma(expand(logsnr, z))
    return torch.where(known, alpha * x_a.to(z.dtype) + sigma * draw(z), z)


def replacement(denoise: DenoiseFn, x_a: torch.Tensor, known: torch.Tensor, *, noise=None) -> DenoiseFn:
    """The replacement method: before each call of the model, z_t^a ← α_t x^a + σ_t ε; after it, x̂^a := x^a.

    x_a: (b c f h w) (or batch 1), values where `known` is False are ignored; known: boolean mask
    broadcastable to the video, e.g. (1, 1, f, 1, 1) over frames; noise: a :class:`Noise`, a
    `torch.Generator` or None (global RNG) for the ε of the replaced z^a."""
    x_a, known = _check_known(x_a, known)
    draw = noise_fn(noise)

    def conditioned(z, logsnr, **cond):
        x = denoise(_replace(z, logsnr, x_a, known, draw), logsnr, **cond)
        return torch.where(known, x_a.to(x.dtype), x)

    return conditioned


def reconstruction_guidance(
    denoise: DenoiseFn,
    x_a: Optional[torch.Tensor] = None,
    known: Optional[torch.Tensor] = None,
    *,
    weight: float,
    low_res: Optional[torch.Tensor] = None,
    spatial_weight: Optional[float] = None,
    mode: str = "area",
    replace: bool = True,
    noise=None,
) -> DenoiseFn:
    """Reconstruction guidance, temporal (`x_a`, `known`, weight w_r) and/or spatial (`low_res`, a
    (b c f h' w') video observed through :func:`downsample` with `mode`, weight `spatial_weight`,
    default w_r). With `x_a`, z^a is also replaced as in :func:`replacement` (unless `replace=False`)
    and x̃^a := x^a; `weight=0` is then the replacement method."""
    if x_a is None and low_res is None:
        raise ConditioningError("reconstruction guidance needs x_a and known (temporal) or low_res (spatial)")
    if (x_a is None) != (known is None):
        raise ConditioningError("x_a and known go together")
    if x_a is not None:
        x_a, known = _check_known(x_a, known)
    if low_res is not None and low_res.ndim != 5:
        raise ConditioningError(f"low_res must be a (b c f h w) video, got shape {tuple(low_res.shape)}")
    if mode not in DOWNSAMPLE_MODES:
        raise ConditioningError(f"unknown downsampling {mode!r}; choose one of {DOWNSAMPLE_MODES}")
    w_s = weight if spatial_weight is None else spatial_weight
    draw = noise_fn(noise)

    def guided(z, logsnr, **cond):
        if x_a is not None and replace:
            z = _replace(z, logsnr, x_a, known, draw)
        if low_res is not None and (low_res.shape[2] != z.shape[2] or low_res.shape[1] != z.shape[1]):
            raise ConditioningError(
                f"low_res {tuple(low_res.shape)} does not match the video {tuple(z.shape)} in channels and frames"
            )
        alpha, _ = alpha_sigma(expand(logsnr, z))
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            x = denoise(zg, logsnr, **cond)
            err = x.new_zeros(())
            if x_a is not None and weight:
                # w_r ‖x^a − x̂^a(z_t)‖², summed over the batch
                err = err + weight * ((x_a.to(x.dtype) - x) ** 2 * known).sum()
            if low_res is not None and w_s:
                err = err + w_s * ((low_res.to(x.dtype) - downsample(x, low_res.shape[-2:], mode)) ** 2).sum()
            grad = torch.autograd.grad(err, zg)[0] if err.requires_grad else torch.zeros_like(z)
        # x̃ = x̂ − (w α_t / 2) ∇_{z_t} err; per example, as samples do not interact in the network
        x = x.detach() - 0.5 * alpha * grad
        return torch.where(known, x_a.to(x.dtype), x) if x_a is not None else x

    return guided
