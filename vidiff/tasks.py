"""Conditional generation from an unconditional model (paper §3.1): video prediction, autoregressive
extension, temporal interpolation and spatial super-resolution.

Each task takes a :class:`~vidiff.pipeline.VideoDiffusion` (or a plain denoiser in a :class:`Window`),
conditions windows of the model's length on known frames and/or a low-resolution video with the
replacement method or reconstruction guidance (:mod:`vidiff.diffusion.guidance`), and slides the window over
longer videos. Each takes one :class:`~vidiff.request.SampleRequest` (or its fields as
keywords), resolved by :func:`vidiff.request.resolve_sampling`, so every registered sampler,
classifier-free guidance and class/text conditioning compose with every task.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional, Union

import torch

from vidiff.config import DiffusionConfig, SampleConfig
from vidiff.diffusion.guidance import DOWNSAMPLE_MODES, reconstruction_guidance, replacement
from vidiff.diffusion.sampling import Noise, initial_noise
from vidiff.errors import ConditioningError
from vidiff.io.frames import parse_size
from vidiff.pipeline import evaluating
from vidiff.request import SamplerCall, SampleRequest, resolve_sampling

METHODS = ("reconstruction", "replacement")


@dataclass(frozen=True)
class Window:
    """A plain denoiser `denoise(z, logsnr, **cond) -> x̂` with the window it works on (frames, size,
    channels) and the configuration it samples with (defaults: vidiff's)."""

    denoise: Callable
    frames: int
    size: Union[int, tuple]
    channels: int
    sample: SampleConfig = field(default_factory=SampleConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass
class _Setup:
    """A denoiser with its window, its sampler call and how the windows are conditioned."""

    denoise: Callable  # the network's denoiser, before any wrapper
    null: Optional[Callable]  # condition → its null ∅, for classifier-free guidance (None: unconditional)
    channels: int
    frames: int
    size: tuple
    call: SamplerCall
    cond: dict
    device: torch.device
    method: str
    seed: int
    mode: str = "area"
    spatial_weight: Optional[float] = None


def _prepare(model, n: int, request: SampleRequest, *, mode: str = "area", frames: Optional[int] = None) -> _Setup:
    if request.method not in METHODS:
        raise ConditioningError(f"unknown conditioning method {request.method!r}; choose one of {METHODS}")
    if mode not in DOWNSAMPLE_MODES:
        raise ConditioningError(f"unknown downsampling {mode!r}; choose one of {DOWNSAMPLE_MODES}")
    if isinstance(model, Window):
        if request.prompt is not None or request.class_label is not None or request.guidance:
            raise ConditioningError("a plain denoiser takes no prompt, class or guidance weight")
        call = resolve_sampling(model.sample, model.diffusion, request)
        return _Setup(
            model.denoise,
            None,
            model.channels,
            frames or model.frames,
            parse_size(model.size),
            call,
            {},
            torch.device("cpu"),
            request.method,
            request.seed,
            mode,
        )
    from vidiff.pipeline import VideoDiffusion

    if not isinstance(model, VideoDiffusion):
        raise ConditioningError(
            f"model must be a VideoDiffusion or a Window around a denoiser, got {type(model).__name__}"
        )
    call = model.sampling(request)
    device = next(model.parameters()).device
    cfg = model.config
    cond = model.condition(n, request.prompt, request.class_label, device=device)
    null = model.conditioning.null if model.conditioning.guidable else None
    return _Setup(
        model.denoiser,
        null,
        cfg.model.in_channels,
        frames or cfg.data.frames,
        parse_size(cfg.data.size),
        call,
        cond,
        device,
        request.method,
        request.seed,
        mode,
    )


@contextlib.contextmanager
def _inference(model):
    """Eval mode and no gradients anywhere, except inside reconstruction guidance (which turns them on
    for its one network pass, with respect to z only)."""
    with evaluating(model), torch.no_grad():
        yield


def _seeds(seed: int, n: int, window: int, stream: int) -> list:
    """Per-sample seeds: sample i of window j uses its own stream, independent of the batch."""
    return [((seed + i) * 100_003 + window) * 2 + stream for i in range(n)]


def sample_window(
    setup: _Setup, n: int, frames: int, *, x_a=None, known=None, low_res=None, window_index: int = 0
) -> torch.Tensor:
    """One window (n c frames h w) conditioned on frames `known` = x_a and/or a low-res video."""
    noise = Noise(_seeds(setup.seed, n, window_index, 0), device=setup.device)
    repl_noise = Noise(_seeds(setup.seed, n, window_index, 1), device=setup.device)
    w_r = setup.call.reconstruction_weight
    condition = None
    if low_res is not None or (x_a is not None and setup.method == "reconstruction"):
        condition = partial(
            reconstruction_guidance,
            x_a=x_a,
            known=known,
            low_res=low_res,
            noise=repl_noise,
            mode=setup.mode,
            weight=w_r if setup.method == "reconstruction" else 0.0,
            spatial_weight=setup.spatial_weight if setup.spatial_weight is not None else w_r,
        )
    elif x_a is not None:
        condition = partial(replacement, x_a=x_a, known=known, noise=repl_noise)
    denoise = setup.call.denoiser(setup.denoise, null=setup.null, condition=condition)
    z = initial_noise((n, setup.channels, frames, *setup.size), noise, device=setup.device)
    x = setup.call(denoise, z, noise, cond=setup.cond)
    if x_a is not None:
        x = torch.where(known, x_a.to(x.dtype), x)  # exact, also where a sampler clips
    return x


def _as_video(v: torch.Tensor, name: str, setup: _Setup, spatial: bool = True) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or v.ndim != 5:
        raise ConditioningError(
            f"{name} must be a (b c f h w) tensor, got "
            f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
        )
    if v.shape[1] != setup.channels:
        raise ConditioningError(f"{name} has {v.shape[1]} channels but the model has {setup.channels}")
    if spatial and tuple(v.shape[-2:]) != setup.size:
        raise ConditioningError(
            f"{name} is {v.shape[-2]}×{v.shape[-1]} but the model works at "
            f"{setup.size[0]}×{setup.size[1]}; resize it first"
        )
    return v.to(setup.device, torch.float32)


def _check_overlap(m: int, setup: _Setup) -> None:
    if not 1 <= m < setup.frames:
        raise ConditioningError(f"overlap={m} must be between 1 and the window length minus one ({setup.frames - 1})")


def _autoregress(
    setup: _Setup,
    start: Optional[torch.Tensor],
    n: int,
    target: int,
    overlap: int,
    low_res: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Generate windows of `setup.frames` frames, each conditioned on the last `overlap` frames so far
    (the last window on more, so that it stays full length), and stitch them to `target` frames."""
    window = setup.frames
    j = 0
    if start is None:
        lr = None if low_res is None else low_res[:, :, :window]
        video = sample_window(setup, n, window, low_res=lr, window_index=j)[:, :, :target]
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
        x_a[:, :, :m] = video[:, :, have - m :]
        lr = None if low_res is None else low_res[:, :, have - m : have - m + window]
        x = sample_window(setup, n, window, x_a=x_a, known=known, low_res=lr, window_index=j)
        video = torch.cat([video, x[:, :, m : m + new]], dim=2)
        j += 1
    return video


def predict(
    model,
    context: torch.Tensor,
    total_frames: Optional[int] = None,
    *,
    request: Optional[SampleRequest] = None,
    **changes,
) -> torch.Tensor:
    """Video prediction: given the first k frames `context` (b c k h w), generate the rest of a video of
    `total_frames` (default the model's window) frames; beyond the window, autoregressively with the last
    k frames as context. Returns (b c total_frames h w) whose first k frames are `context` exactly.
    The :class:`SampleRequest` (or its fields as keywords) says how: `method`, `reconstruction_weight`
    w_r (default: the model's `sample.reconstruction_weight`), the sampler, `guidance` (classifier-free
    guidance's w for a conditional model), `seed`."""
    setup = _prepare(model, context.shape[0], SampleRequest.of(request, **changes))
    context = _as_video(context, "context", setup)
    k = context.shape[2]
    total = setup.frames if total_frames is None else total_frames
    if k < 1:
        raise ConditioningError("context has no frames")
    if k >= setup.frames:
        raise ConditioningError(
            f"context of {k} frames must be shorter than the model's window of {setup.frames} frames"
        )
    if total <= k:
        raise ConditioningError(f"total_frames={total} must exceed the {k} context frames")
    with _inference(model):
        return _autoregress(setup, context, context.shape[0], total, k)


def extend(
    model,
    video: Optional[torch.Tensor],
    target_frames: int,
    *,
    window: Optional[int] = None,
    overlap: Optional[int] = None,
    num: int = 1,
    request: Optional[SampleRequest] = None,
    **changes,
) -> torch.Tensor:
    """Autoregressive extension to `target_frames` frames: start from `video` (b c k h w) or, if None,
    from `num` unconditional windows; then repeatedly generate the next window conditioned on the last
    `overlap` (default half the window) frames, and stitch. The given frames are kept exactly."""
    b = num if video is None else video.shape[0]
    setup = _prepare(model, b, SampleRequest.of(request, **changes), frames=window)
    m = setup.frames // 2 if overlap is None else overlap
    _check_overlap(m, setup)
    if video is not None:
        video = _as_video(video, "video", setup)
        if video.shape[2] < 1:
            raise ConditioningError("video has no frames")
        if video.shape[2] > target_frames:
            raise ConditioningError(
                f"video already has {video.shape[2]} frames, more than target_frames={target_frames}"
            )
    if target_frames < 1:
        raise ConditioningError(f"target_frames must be positive, got {target_frames}")
    with _inference(model):
        return _autoregress(setup, video, b, target_frames, m)


def interpolate(
    model,
    video: torch.Tensor,
    factor: int,
    *,
    progress: bool = False,
    request: Optional[SampleRequest] = None,
    **changes,
) -> torch.Tensor:
    """Temporal interpolation by `factor` k: frame i of `video` (b c n h w) becomes frame k·i of the
    result, (b c (n−1)k+1 h w), and the k−1 frames between are generated. Each window of the model
    conditions on the keyframes at 0, k, 2k, … in it; windows advance by the largest multiple of k
    that fits, sharing one keyframe (frames after a window's last keyframe are dropped). `progress`:
    True for a bar over the windows, or a tqdm bar to advance by b per window (one bar over a command:
    :func:`interpolation_windows` windows per video)."""
    setup = _prepare(model, video.shape[0], SampleRequest.of(request, **changes))
    video = _as_video(video, "video", setup)
    n, window = video.shape[2], setup.frames
    if not isinstance(factor, int) or factor < 2:
        raise ConditioningError(f"interpolation factor must be an integer >= 2, got {factor!r}")
    if factor >= window:
        raise ConditioningError(
            f"interpolation factor {factor} needs two keyframes in a window: it must be "
            f"smaller than the model's window of {window} frames"
        )
    if n < 2:
        raise ConditioningError(f"video has {n} frame(s); interpolation needs at least 2")
    with _inference(model):
        return _interpolate(setup, video, factor, progress)


def _window_starts(frames: int, factor: int, window: int) -> range:
    """The first frame of each window that interpolates `frames` keyframes by `factor` in windows of
    `window` frames: windows advance by the frames between a window's first and last keyframe."""
    return range(0, (frames - 1) * factor, factor * ((window - 1) // factor))


def interpolation_windows(frames: int, factor: int, window: int) -> int:
    """How many windows :func:`interpolate` samples for a video of `frames` frames."""
    return len(_window_starts(frames, factor, window))


def _interpolate(setup: _Setup, video: torch.Tensor, factor: int, progress=False) -> torch.Tensor:
    from tqdm.auto import tqdm

    b, c, n = video.shape[:3]
    window = setup.frames
    starts = _window_starts(n, factor, window)
    stride, total = starts.step, (n - 1) * factor + 1
    out = torch.zeros(b, c, total, *setup.size, device=setup.device)
    out[:, :, ::factor] = video
    own = not hasattr(progress, "update")  # else the caller's bar, over more than this call
    bar = tqdm(total=len(starts), desc="interpolating", unit="window", disable=not progress) if own else progress
    for j, start in enumerate(starts):
        pos = torch.arange(window, device=setup.device)
        known = ((pos % factor == 0) & (start + pos < total)).reshape(1, 1, window, 1, 1)
        x_a = torch.zeros(b, c, window, *setup.size, device=setup.device)
        avail = min(window, total - start)
        x_a[:, :, :avail] = out[:, :, start : start + avail]
        x = sample_window(setup, b, window, x_a=x_a, known=known, window_index=j)
        end = min(start + stride, total - 1)
        out[:, :, start : end + 1] = x[:, :, : end + 1 - start]
        bar.update(1 if own else b)
    if own:
        bar.close()
    out[:, :, ::factor] = video  # the keyframes, exactly
    return out


def upsample(
    model,
    low_res: torch.Tensor,
    *,
    spatial_weight: Optional[float] = None,
    overlap: Optional[int] = None,
    mode: str = "area",
    request: Optional[SampleRequest] = None,
    **changes,
) -> torch.Tensor:
    """Spatial super-resolution: a high-resolution model guided by `low_res` (b c f h' w'),
    x̃ = x̂ − (w_s α_t / 2) ∇_{z_t} ‖x^a − D(x̂(z_t))‖². Longer than the window, it goes on
    autoregressively, each window also conditioned (temporally, by `method`, weight w_r) on the last
    `overlap` high-resolution frames: both terms add. Returns (b c f h w) at the model's size.

    D averages s_h·s_w pixels, so near t = 0 the correction is (w_s / (s_h s_w)) times the upsampled
    residual; the default w_s = 2 s_h s_w keeps that gain at 2 (much larger gains overshoot and, unclipped,
    diverge; see bench/conditional_gaussian.py)."""
    setup = _prepare(model, low_res.shape[0], SampleRequest.of(request, **changes), mode=mode)
    low_res = _as_video(low_res, "low_res", setup, spatial=False)
    h, w = low_res.shape[-2:]
    if h > setup.size[0] or w > setup.size[1] or (h, w) == setup.size:
        raise ConditioningError(
            f"low_res is {h}×{w}: it must be smaller than the model's {setup.size[0]}×{setup.size[1]}"
        )
    m = setup.frames // 2 if overlap is None else overlap
    _check_overlap(m, setup)
    setup.spatial_weight = 2.0 * (setup.size[0] / h) * (setup.size[1] / w) if spatial_weight is None else spatial_weight
    f = low_res.shape[2]
    if f < setup.frames:
        raise ConditioningError(f"low_res has {f} frames, fewer than the model's window of {setup.frames}")
    with _inference(model):
        return _autoregress(setup, None, low_res.shape[0], f, m, low_res)
