"""`vidiff sample`: videos from a checkpoint, with any registered sampler."""
from __future__ import annotations

from pathlib import Path

from .common import add_sampling_arguments, load_model, report_written, sampling_request, write_videos


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample videos from a checkpoint")
    add_sampling_arguments(p)
    p.add_argument("--frames", type=int, help="frames per video (default: as trained)")
    p.set_defaults(func=run)


def run(args) -> None:
    model = load_model(args)
    videos = model.sample(args.num, frames=args.frames, batch_size=args.batch_size, progress=True,
                          **sampling_request(args))
    write_videos(videos, Path(args.out), fps=args.fps)
    report_written(videos, args.out)
