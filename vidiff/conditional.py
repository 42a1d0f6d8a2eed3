"""Conditional sampling from an unconditional model (paper §3.1, "Reconstruction-guided sampling for
improved conditional generation"): x = [x^a, x^b], x^a given, x^b drawn from a model of the joint p(x).

Two wrappers, each a function that takes a denoiser `denoise(z, logsnr, **cond) -> x̂` and returns one,
so they compose with every sampler, with classifier-free guidance and with every parameterisation:

* :func:`replacement` — z^a is replaced at every step by a sample of q(z_t^a | x^a) = N(α_t x^a, σ_t² I).
  Samplers only see the denoiser, so the replacement happens where it is called: the z it receives at
  level λ_t has its a-part overwritten by α_t x^a + σ_t ε (ε fresh, from a noise source the wrapper
  holds) before the model runs, and the x̂ it returns has x̂^a := x^a. Whatever the sampler then does
  to z^a is overwritten at the next call, and its final x̂ carries x^a exactly.
* :func:`reconstruction_guidance` — x̃^b = x̂^b − (w_r α_t / 2) ∇_{z_t^b} ‖x^a − x̂^a(z_t)‖² together
  with the replacement of z^a; and/or the spatial version x̃ = x̂ − (w_r α_t / 2) ∇_{z_t} ‖x^a − D(x̂(z_t))‖²
  with D a differentiable per-frame downsampling. Both terms add when both are given. Only here does
  a gradient flow through the network (a forward pass under `torch.enable_grad()` with respect to z).

The applications (:func:`predict`, :func:`extend`, :func:`interpolate`, :func:`upsample`) take a
:class:`~vidiff.pipeline.VideoDiffusion` or any denoiser with the window's shape, and slide the model's
fixed-length window over longer videos.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from .diffusion import expand
from .guidance import classifier_free_guidance
from .sampling import Noise, _noise_fn, get_sampler, initial_noise
from .schedule import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma

DenoiseFn = Callable[..., torch.Tensor]
METHODS = ("reconstruction", "replacement")
DOWNSAMPLE_MODES = ("area", "bilinear")
DEFAULT_GUIDANCE_WEIGHT = 9.0  # the paper's w_r for Kinetics-600 (50 for BAIR)


class ConditioningError(ValueError):
    """Conditioning data that does not fit the model or the request (too short, too long, wrong size)."""


# ---- the two wrappers --------------------------------------------------------------------------
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
        raise ConditioningError(f"mask known {tuple(known.shape)} does not broadcast to x_a {tuple(x_a.shape)}") from None
    return x_a, known


def _replace(z: torch.Tensor, logsnr: torch.Tensor, x_a: torch.Tensor, known: torch.Tensor, noise_fn) -> torch.Tensor:
    """z with its a-part overwritten by a fresh sample of q(z_t^a | x^a) = N(α_t x^a, σ_t² I)."""
    alpha, sigma = alpha_sigma(expand(logsnr, z))
    return torch.where(known, alpha * x_a.to(z.dtype) + sigma * noise_fn(z), z)


def replacement(denoise: DenoiseFn, x_a: torch.Tensor, known: torch.Tensor, *, noise=None) -> DenoiseFn:
    """The replacement method: before each call of the model, z_t^a ← α_t x^a + σ_t ε; after it, x̂^a := x^a.

    x_a: (b c f h w) (or batch 1), values where `known` is False are ignored; known: boolean mask
    broadcastable to the video, e.g. (1, 1, f, 1, 1) over frames; noise: a :class:`Noise`, a
    `torch.Generator` or None (global RNG) for the ε of the replaced z^a."""
    x_a, known = _check_known(x_a, known)
    noise_fn = _noise_fn(noise)

    def conditioned(z, logsnr, **cond):
        x = denoise(_replace(z, logsnr, x_a, known, noise_fn), logsnr, **cond)
        return torch.where(known, x_a.to(x.dtype), x)

    return conditioned


def reconstruction_guidance(denoise: DenoiseFn, x_a: Optional[torch.Tensor] = None,
                            known: Optional[torch.Tensor] = None, *, weight: float = DEFAULT_GUIDANCE_WEIGHT,
                            low_res: Optional[torch.Tensor] = None, spatial_weight: Optional[float] = None,
                            mode: str = "area", replace: bool = True, noise=None) -> DenoiseFn:
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
    noise_fn = _noise_fn(noise)

    def guided(z, logsnr, **cond):
        if x_a is not None and replace:
            z = _replace(z, logsnr, x_a, known, noise_fn)
        if low_res is not None and (low_res.shape[2] != z.shape[2] or low_res.shape[1] != z.shape[1]):
            raise ConditioningError(f"low_res {tuple(low_res.shape)} does not match the video {tuple(z.shape)} "
                                    f"in channels and frames")
        alpha, _ = alpha_sigma(expand(logsnr, z))
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            x = denoise(zg, logsnr, **cond)
            err = x.new_zeros(())
            if x_a is not None and weight:
                err = err + weight * ((x_a.to(x.dtype) - x) ** 2 * known).sum()  # w_r ‖x^a − x̂^a(z_t)‖², summed over the batch
            if low_res is not None and w_s:
                err = err + w_s * ((low_res.to(x.dtype) - downsample(x, low_res.shape[-2:], mode)) ** 2).sum()
            grad = torch.autograd.grad(err, zg)[0] if err.requires_grad else torch.zeros_like(z)
        # x̃ = x̂ − (w α_t / 2) ∇_{z_t} err; per example, as samples do not interact in the network
        x = x.detach() - 0.5 * alpha * grad
        return torch.where(known, x_a.to(x.dtype), x) if x_a is not None else x

    return guided


# ---- applications ------------------------------------------------------------------------------
@dataclass
class _Setup:
    """A denoiser with the window it was trained on and how to sample from it."""
    denoise: DenoiseFn
    channels: int
    frames: int
    size: tuple
    sample_fn: Callable
    steps: int
    kwargs: dict
    cond: dict = field(default_factory=dict)
    device: torch.device = torch.device("cpu")


def _resolve(model, *, frames=None, size=None, channels=None, sampler=None, steps=None, gamma=None, clip=None,
             prompt=None, class_label=None, guidance=None, num=1) -> _Setup:
    from .pipeline import VideoDiffusion
    if isinstance(model, VideoDiffusion):
        sc, cfg = model.config.sample, model.config
        sampler = sampler or sc.sampler
        steps = steps or sc.steps
        gamma = sc.gamma if gamma is None else gamma
        clip = sc.clip if clip is None else clip
        guidance = sc.guidance if guidance is None else guidance
        device = next(model.parameters()).device
        cond = model.condition(num, prompt, class_label, device=device)
        denoise = model.denoiser
        if guidance and cond:
            denoise = classifier_free_guidance(model.denoiser, guidance)
        frames = frames or cfg.data.frames
        size = size or cfg.data.size
        channels = channels or cfg.model.in_channels
        logsnr = cfg.diffusion.schedule()
        extra = dict(corrector_steps=sc.corrector_steps, delta=sc.delta)
    else:
        if not callable(model):
            raise ConditioningError(f"model must be a VideoDiffusion or a denoiser, got {type(model).__name__}")
        if frames is None or size is None or channels is None:
            raise ConditioningError("with a plain denoiser, give the window: frames=, size= and channels=")
        sampler, steps = sampler or "ancestral", steps or 256
        gamma = 0.1 if gamma is None else gamma
        denoise, cond, device = model, {}, torch.device("cpu")
        logsnr = dict(logsnr_min=LOGSNR_MIN, logsnr_max=LOGSNR_MAX)
        extra = {}
    kwargs = dict(clip=1.0 if clip else None, **logsnr)
    if sampler != "ddim":
        kwargs["gamma"] = gamma
    if sampler == "pc":
        kwargs.update(extra)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return _Setup(denoise, channels, frames, (h, w), get_sampler(sampler), steps, kwargs, cond, device)


@contextlib.contextmanager
def _inference(model):
    """Eval mode and no gradients anywhere, except inside reconstruction guidance (which turns them on
    for its one network pass, with respect to z only)."""
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _seeds(seed: int, n: int, window: int, stream: int) -> list:
    """Per-sample seeds: sample i of window j uses its own stream, independent of the batch."""
    return [((seed + i) * 100_003 + window) * 2 + stream for i in range(n)]


def _check_method(method: str, mode: str) -> None:
    if method not in METHODS:
        raise ConditioningError(f"unknown conditioning method {method!r}; choose one of {METHODS}")
    if mode not in DOWNSAMPLE_MODES:
        raise ConditioningError(f"unknown downsampling {mode!r}; choose one of {DOWNSAMPLE_MODES}")


def sample_window(setup: _Setup, n: int, frames: int, *, x_a=None, known=None, low_res=None,
                  method: str = "reconstruction", guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT,
                  spatial_weight: Optional[float] = None, mode: str = "area", seed: int = 0,
                  window_index: int = 0) -> torch.Tensor:
    """One window (n c frames h w) conditioned on frames `known` = x_a and/or a low-res video."""
    noise = Noise(_seeds(seed, n, window_index, 0), device=setup.device)
    repl_noise = Noise(_seeds(seed, n, window_index, 1), device=setup.device)
    denoise = setup.denoise
    if low_res is not None or (x_a is not None and method == "reconstruction"):
        denoise = reconstruction_guidance(denoise, x_a, known, low_res=low_res, noise=repl_noise, mode=mode,
                                          weight=guidance_weight if method == "reconstruction" else 0.0,
                                          spatial_weight=spatial_weight if spatial_weight is not None
                                          else guidance_weight)
    elif x_a is not None:
        denoise = replacement(denoise, x_a, known, noise=repl_noise)
    z = initial_noise((n, setup.channels, frames, *setup.size), noise, device=setup.device)
    x = setup.sample_fn(denoise, z, setup.steps, noise=noise, **setup.kwargs, **setup.cond)
    if x_a is not None:
        x = torch.where(known, x_a.to(x.dtype), x)  # exact, also where a sampler clips
    return x


def _as_video(v: torch.Tensor, name: str, setup: _Setup, spatial: bool = True) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or v.ndim != 5:
        raise ConditioningError(f"{name} must be a (b c f h w) tensor, got "
                                f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    if v.shape[1] != setup.channels:
        raise ConditioningError(f"{name} has {v.shape[1]} channels but the model has {setup.channels}")
    if spatial and tuple(v.shape[-2:]) != setup.size:
        raise ConditioningError(f"{name} is {v.shape[-2]}×{v.shape[-1]} but the model works at "
                                f"{setup.size[0]}×{setup.size[1]}; resize it first")
    return v.to(setup.device, torch.float32)


def _autoregress(setup: _Setup, start: Optional[torch.Tensor], n: int, target: int, overlap: int,
                 low_res: Optional[torch.Tensor], opts: dict) -> torch.Tensor:
    """Generate windows of `setup.frames` frames, each conditioned on the last `overlap` frames so far
    (the last window on more, so that it stays full length), and stitch them to `target` frames."""
    window = setup.frames
    j = 0
    if start is None:
        lr = None if low_res is None else low_res[:, :, :window]
        video = sample_window(setup, n, window, low_res=lr, window_index=j, **opts)[:, :, :target]
        j += 1
    else:
        video = start
    while video.shape[2] < target:
        have, need = video.shape[2], target - video.shape[2]
        m = min(have, max(overlap, window - need))  # context frames of this window
        new = min(window - m, need)
        known = torch.zeros(1, 1, window, 1, 1, dtype=torch.bool, device=setup.device)
        known[:, :, :m] = True
        x_a = torch.zeros(n, setup.channels, window, *setup.size, device=setup.device)
        x_a[:, :, :m] = video[:, :, have - m:]
        lr = None if low_res is None else low_res[:, :, have - m:have - m + window]
        x = sample_window(setup, n, window, x_a=x_a, known=known, low_res=lr, window_index=j, **opts)
        video = torch.cat([video, x[:, :, m:m + new]], dim=2)
        j += 1
    return video


def _run(model, fn):
    with _inference(model):
        return fn()


def predict(model, context: torch.Tensor, total_frames: Optional[int] = None, *,
            method: str = "reconstruction", guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT,
            sampler: Optional[str] = None, steps: Optional[int] = None, seed: int = 0, **options) -> torch.Tensor:
    """Video prediction: given the first k frames `context` (b c k h w), generate the rest of a video of
    `total_frames` (default the model's window) frames; beyond the window, autoregressively with the last
    k frames as context. Returns (b c total_frames h w) whose first k frames are `context` exactly.
    Other keywords: gamma, clip, prompt, class_label, guidance (classifier-free), mode, frames/size/channels
    (the window, for a plain denoiser)."""
    _check_method(method, options.get("mode", "area"))
    setup = _resolve(model, sampler=sampler, steps=steps, num=context.shape[0], **_setup_keys(options))
    context = _as_video(context, "context", setup)
    k = context.shape[2]
    total = total_frames or setup.frames
    if k < 1:
        raise ConditioningError("context has no frames")
    if k >= setup.frames:
        raise ConditioningError(f"context of {k} frames must be shorter than the model's window of "
                                f"{setup.frames} frames")
    if total <= k:
        raise ConditioningError(f"total_frames={total} must exceed the {k} context frames")
    opts = _opts(method, guidance_weight, seed, options)
    return _run(model, lambda: _autoregress(setup, context, context.shape[0], total, k, None, opts))


def extend(model, video: Optional[torch.Tensor], target_frames: int, *, window: Optional[int] = None,
           overlap: Optional[int] = None, num: int = 1, method: str = "reconstruction",
           guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT, sampler: Optional[str] = None,
           steps: Optional[int] = None, seed: int = 0, **options) -> torch.Tensor:
    """Autoregressive extension to `target_frames` frames: start from `video` (b c k h w) or, if None,
    from `num` unconditional windows; then repeatedly generate the next window conditioned on the last
    `overlap` (default half the window) frames, and stitch. The given frames are kept exactly."""
    _check_method(method, options.get("mode", "area"))
    b = num if video is None else video.shape[0]
    setup = _resolve(model, sampler=sampler, steps=steps, num=b, **_setup_keys(options, frames=window))
    m = setup.frames // 2 if overlap is None else overlap
    if not 1 <= m < setup.frames:
        raise ConditioningError(f"overlap={m} must be between 1 and the window length minus one ({setup.frames - 1})")
    if video is not None:
        video = _as_video(video, "video", setup)
        if video.shape[2] < 1:
            raise ConditioningError("video has no frames")
        if video.shape[2] > target_frames:
            raise ConditioningError(f"video already has {video.shape[2]} frames, more than target_frames={target_frames}")
    if target_frames < 1:
        raise ConditioningError(f"target_frames must be positive, got {target_frames}")
    opts = _opts(method, guidance_weight, seed, options)
    return _run(model, lambda: _autoregress(setup, video, b, target_frames, m, None, opts))


def interpolate(model, video: torch.Tensor, factor: int, *, method: str = "reconstruction",
                guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT, sampler: Optional[str] = None,
                steps: Optional[int] = None, seed: int = 0, **options) -> torch.Tensor:
    """Temporal interpolation by `factor` k: frame i of `video` (b c n h w) becomes frame k·i of the
    result, (b c (n−1)k+1 h w), and the k−1 frames between are generated. Each window of the model
    conditions on the keyframes at 0, k, 2k, … in it; windows advance by the largest multiple of k
    that fits, sharing one keyframe (frames after a window's last keyframe are dropped)."""
    _check_method(method, options.get("mode", "area"))
    setup = _resolve(model, sampler=sampler, steps=steps, num=video.shape[0], **_setup_keys(options))
    video = _as_video(video, "video", setup)
    b, c, n = video.shape[:3]
    window = setup.frames
    if not isinstance(factor, int) or factor < 2:
        raise ConditioningError(f"interpolation factor must be an integer >= 2, got {factor!r}")
    if factor >= window:
        raise ConditioningError(f"interpolation factor {factor} needs two keyframes in a window: it must be "
                                f"smaller than the model's window of {window} frames")
    if n < 2:
        raise ConditioningError(f"video has {n} frame(s); interpolation needs at least 2")
    stride = factor * ((window - 1) // factor)  # frames between a window's first and last keyframe
    total = (n - 1) * factor + 1
    opts = _opts(method, guidance_weight, seed, options)

    def run():
        out = torch.zeros(b, c, total, *setup.size, device=setup.device)
        out[:, :, ::factor] = video
        for j, start in enumerate(range(0, total - 1, stride)):
            pos = torch.arange(window, device=setup.device)
            known = ((pos % factor == 0) & (start + pos < total)).reshape(1, 1, window, 1, 1)
            x_a = torch.zeros(b, c, window, *setup.size, device=setup.device)
            avail = min(window, total - start)
            x_a[:, :, :avail] = out[:, :, start:start + avail]
            x = sample_window(setup, b, window, x_a=x_a, known=known, window_index=j, **opts)
            end = min(start + stride, total - 1)
            out[:, :, start:end + 1] = x[:, :, :end + 1 - start]
        out[:, :, ::factor] = video  # the keyframes, exactly
        return out

    return _run(model, run)


def upsample(model, low_res: torch.Tensor, *, spatial_weight: Optional[float] = None, overlap: Optional[int] = None,
             guidance_weight: float = DEFAULT_GUIDANCE_WEIGHT, method: str = "reconstruction", mode: str = "area",
             sampler: Optional[str] = None, steps: Optional[int] = None, seed: int = 0, **options) -> torch.Tensor:
    """Spatial super-resolution: a high-resolution model guided by `low_res` (b c f h' w'),
    x̃ = x̂ − (w_s α_t / 2) ∇_{z_t} ‖x^a − D(x̂(z_t))‖². Longer than the window, it goes on
    autoregressively, each window also conditioned (temporally, by `method`, weight `guidance_weight`)
    on the last `overlap` high-resolution frames: both terms add. Returns (b c f h w) at the model's size.

    D averages s_h·s_w pixels, so near t = 0 the correction is (w_s / (s_h s_w)) times the upsampled
    residual; the default w_s = 2 s_h s_w keeps that gain at 2 (much larger gains overshoot and, unclipped,
    diverge; see bench/conditional_gaussian.py)."""
    _check_method(method, mode)
    setup = _resolve(model, sampler=sampler, steps=steps, num=low_res.shape[0], **_setup_keys(options))
    low_res = _as_video(low_res, "low_res", setup, spatial=False)
    h, w = low_res.shape[-2:]
    if h > setup.size[0] or w > setup.size[1] or (h, w) == setup.size:
        raise ConditioningError(f"low_res is {h}×{w}: it must be smaller than the model's "
                                f"{setup.size[0]}×{setup.size[1]}")
    f = low_res.shape[2]
    m = setup.frames // 2 if overlap is None else overlap
    if not 1 <= m < setup.frames:
        raise ConditioningError(f"overlap={m} must be between 1 and the window length minus one ({setup.frames - 1})")
    if spatial_weight is None:
        spatial_weight = 2.0 * (setup.size[0] / h) * (setup.size[1] / w)
    opts = _opts(method, guidance_weight, seed, {**options, "mode": mode, "spatial_weight": spatial_weight})
    if f < setup.frames:
        raise ConditioningError(f"low_res has {f} frames, fewer than the model's window of {setup.frames}")
    return _run(model, lambda: _autoregress(setup, None, low_res.shape[0], f, m, low_res, opts))


_SETUP_KEYS = ("frames", "size", "channels", "gamma", "clip", "prompt", "class_label", "guidance")


def _setup_keys(options: dict, frames: Optional[int] = None) -> dict:
    bad = set(options) - set(_SETUP_KEYS) - {"mode", "spatial_weight"}
    if bad:
        raise TypeError(f"unexpected keyword argument(s) {sorted(bad)}")
    out = {k: options[k] for k in _SETUP_KEYS if k in options}
    if frames is not None:
        out["frames"] = frames
    return out


def _opts(method, guidance_weight, seed, options) -> dict:
    return dict(method=method, guidance_weight=guidance_weight, seed=seed, mode=options.get("mode", "area"),
                spatial_weight=options.get("spatial_weight"))
