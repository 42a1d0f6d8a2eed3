"""`vidiff predict | extend | interpolate | upsample`: conditional generation from a checkpoint
(paper §3.1). Parses arguments, reads videos, calls :mod:`vidiff.conditional`, writes the results."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from .cli import add_sampling_arguments, load_model, write_videos
from .conditional import DEFAULT_GUIDANCE_WEIGHT, ConditioningError, extend, interpolate, predict, upsample


def read_clip(path, size, max_frames=None) -> torch.Tensor:
    """A video file → float (1 c f h w) in [−1, 1]: resized (area) so that it covers `size` (h, w),
    keeping the aspect ratio, then centre-cropped."""
    from .data.transforms import cover_shape
    from .videoio import read_video
    frames = read_video(path, max_frames=max_frames)  # (f h w c) uint8
    x = rearrange(frames, "f h w c -> f c h w").float() / 127.5 - 1
    h, w = size
    ch, cw = cover_shape(x.shape[-2], x.shape[-1], h, w)
    if (ch, cw) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(ch, cw), mode="area" if ch <= x.shape[-2] else "bilinear")
    top, left = (ch - h) // 2, (cw - w) // 2
    x = x[:, :, top:top + h, left:left + w].clamp(-1, 1)
    return rearrange(x, "f c h w -> 1 c f h w")


def _size(model):
    s = model.config.data.size
    return (s, s) if isinstance(s, int) else tuple(s)


def _common(p: argparse.ArgumentParser, method: bool = True) -> None:
    add_sampling_arguments(p)
    if method:
        p.add_argument("--method", choices=["reconstruction", "replacement"], default="reconstruction",
                       help="conditioning method (paper §3.1); default reconstruction guidance")
    p.add_argument("--guidance-weight", type=float, help=f"reconstruction guidance weight w_r "
                   f"(default {DEFAULT_GUIDANCE_WEIGHT:g}; the paper used 50 for BAIR, 9 for Kinetics)")


def _kw(args, model) -> dict:
    kw = dict(sampler=args.sampler, steps=args.steps, seed=args.seed, gamma=args.gamma, prompt=args.prompt,
              class_label=args.class_label, guidance=args.guidance)
    if getattr(args, "method", None):
        kw["method"] = args.method
    if args.guidance_weight is not None:
        kw["guidance_weight"] = args.guidance_weight
    return kw


def _repeat(video: torch.Tensor, num: int) -> torch.Tensor:
    if num < 1:
        raise ConditioningError(f"--num must be at least 1, got {num}")
    return video.expand(num, *video.shape[1:]).contiguous()  # (num c f h w): one context, num samples


def _write(videos, args, what):
    write_videos(videos, Path(args.out), fps=args.fps)
    print(f"wrote {len(videos)} {what} videos ({tuple(videos.shape[1:])}) to {args.out}: sample_*.mp4, "
          f"sample_*.gif, grid.gif, samples.safetensors")


def cmd_predict(args):
    model = load_model(args)
    window = model.config.data.frames
    if args.context < 1 or args.context >= window:
        raise ConditioningError(f"--context {args.context} must be between 1 and {window - 1}: shorter than the "
                                f"model's window of {window} frames")
    clip = read_clip(args.video, _size(model), max_frames=args.context)
    if clip.shape[2] < args.context:
        raise ConditioningError(f"{args.video}: the video has {clip.shape[2]} frames, fewer than --context "
                                f"{args.context}")
    videos = predict(model, _repeat(clip, args.num), args.frames or window, **_kw(args, model))
    _write(videos.clamp(-1, 1).cpu(), args, "predicted")


def cmd_extend(args):
    model = load_model(args)
    start = None
    if args.video:
        start = _repeat(read_clip(args.video, _size(model), max_frames=args.length), args.num)
    videos = extend(model, start, args.length, overlap=args.overlap, num=args.num, **_kw(args, model))
    _write(videos.clamp(-1, 1).cpu(), args, "extended")


def cmd_interpolate(args):
    model = load_model(args)
    clip = read_clip(args.video, _size(model), max_frames=args.max_frames)
    videos = interpolate(model, _repeat(clip, args.num), args.factor, **_kw(args, model))
    _write(videos.clamp(-1, 1).cpu(), args, "interpolated")


def cmd_upsample(args):
    model = load_model(args)
    from .videoio import read_video
    frames = read_video(args.video, max_frames=args.max_frames)  # (f h w c) uint8, kept at its resolution
    low = rearrange(frames, "f h w c -> 1 c f h w").float() / 127.5 - 1
    h, w = low.shape[-2:]
    s = min(h, w)  # centre-crop to the model's (square) aspect
    low = low[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    kw = _kw(args, model)
    videos = upsample(model, _repeat(low, args.num), overlap=args.overlap, mode=args.downsample,
                      spatial_weight=args.spatial_weight, **kw)
    _write(videos.clamp(-1, 1).cpu(), args, "upsampled")


def add_conditional_commands(sub) -> None:
    p = sub.add_parser("predict", help="video prediction: continue the first K frames of a video")
    _common(p)
    p.add_argument("--video", required=True, help="video file whose first frames are the context")
    p.add_argument("--context", type=int, required=True, help="number of context frames K")
    p.add_argument("--frames", type=int, help="total frames of the result (default: the model's window)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("extend", help="autoregressive extension beyond the model's window")
    _common(p)
    p.add_argument("--length", type=int, required=True, help="frames of the result")
    p.add_argument("--video", help="start from this video's frames (default: an unconditional window)")
    p.add_argument("--overlap", type=int, help="frames each new window is conditioned on (default half)")
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("interpolate", help="temporal interpolation: K−1 new frames between each pair")
    _common(p)
    p.add_argument("--video", required=True)
    p.add_argument("--factor", type=int, required=True, help="frame-rate factor K")
    p.add_argument("--max-frames", type=int, help="read at most this many frames of the video")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("upsample", help="spatial super-resolution of a low-resolution video")
    _common(p)
    p.add_argument("--video", required=True, help="low-resolution video")
    p.add_argument("--overlap", type=int, help="frames each new window is conditioned on (default half)")
    p.add_argument("--spatial-weight", type=float, help="weight of the low-resolution term (default 2·s_h·s_w)")
    p.add_argument("--downsample", choices=["area", "bilinear"], default="area", help="the observation model D")
    p.add_argument("--max-frames", type=int, help="read at most this many frames of the video")
    p.set_defaults(func=cmd_upsample)
