"""`vidiff upsample`: spatial super-resolution of a low-resolution video (reconstruction guidance)."""

from __future__ import annotations

from dataclasses import replace

from vidiff.cli.common import add_task_arguments, in_batches, load_model, repeat, sampling_request, save_results


def register(sub) -> None:
    p = sub.add_parser("upsample", help="spatial super-resolution of a low-resolution video")
    add_task_arguments(p)
    p.add_argument("--video", required=True, help="low-resolution video")
    p.add_argument("--overlap", type=int, help="frames each new window is conditioned on (default half)")
    p.add_argument("--spatial-weight", type=float, help="weight of the low-resolution term (default 2·s_h·s_w)")
    from vidiff.diffusion.guidance import DOWNSAMPLE_MODES

    p.add_argument("--downsample", choices=DOWNSAMPLE_MODES, default="area", help="the observation model D")
    p.add_argument("--max-frames", type=int, help="read at most this many frames of the video")
    p.set_defaults(func=run)


def run(args) -> None:
    from einops import rearrange

    from vidiff.io.video import read_video
    from vidiff.tasks import upsample

    model = load_model(args)
    frames = read_video(args.video, max_frames=args.max_frames)  # (f h w c) uint8, kept at its resolution
    low = rearrange(frames, "f h w c -> 1 c f h w").float() / 127.5 - 1
    h, w = low.shape[-2:]
    s = min(h, w)  # centre-crop to the model's (square) aspect
    low = low[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    request = sampling_request(args)
    videos = in_batches(
        args,
        lambda seed, n: upsample(
            model,
            repeat(low, n),
            overlap=args.overlap,
            mode=args.downsample,
            spatial_weight=args.spatial_weight,
            request=replace(request, seed=seed),
        ),
    )
    save_results(videos, args, "upsampled")
