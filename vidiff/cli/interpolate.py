"""`vidiff interpolate`: temporal interpolation, K−1 new frames between each pair of a video's frames."""
from __future__ import annotations

from .common import add_task_arguments, in_batches, load_model, read_clip, repeat, save_results, task_request


def register(sub) -> None:
    p = sub.add_parser("interpolate", help="temporal interpolation: K−1 new frames between each pair")
    add_task_arguments(p)
    p.add_argument("--video", required=True)
    p.add_argument("--factor", type=int, required=True, help="frame-rate factor K")
    p.add_argument("--max-frames", type=int, help="read at most this many frames of the video")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..tasks import interpolate
    model = load_model(args)
    clip = read_clip(args.video, model.config.data.size, max_frames=args.max_frames)
    request = task_request(args)
    videos = in_batches(args, lambda seed, n: interpolate(model, repeat(clip, n), args.factor,
                                                          **{**request, "seed": seed}))
    save_results(videos, args, "interpolated")
