"""`vidiff extend`: autoregressive extension beyond the model's window."""
from __future__ import annotations

from .common import add_task_arguments, load_model, read_clip, repeat, save_results, task_request


def register(sub) -> None:
    p = sub.add_parser("extend", help="autoregressive extension beyond the model's window")
    add_task_arguments(p)
    p.add_argument("--length", type=int, required=True, help="frames of the result")
    p.add_argument("--video", help="start from this video's frames (default: an unconditional window)")
    p.add_argument("--overlap", type=int, help="frames each new window is conditioned on (default half)")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..tasks import extend
    model = load_model(args)
    start = None
    if args.video:
        start = repeat(read_clip(args.video, model.config.data.size, max_frames=args.length), args.num)
    videos = extend(model, start, args.length, overlap=args.overlap, num=args.num, **task_request(args))
    save_results(videos, args, "extended")
