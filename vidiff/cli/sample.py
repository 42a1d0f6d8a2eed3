"""`vidiff sample`: videos from a checkpoint, with any registered sampler."""
from __future__ import annotations

from .common import add_sampling_arguments, load_model, sampling_request, save_results


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample videos from a checkpoint")
    add_sampling_arguments(p)
    p.add_argument("--frames", type=int, help="frames per video (default: as trained)")
    p.add_argument("--batch-size", type=int, default=16, help="videos sampled at once")
    p.set_defaults(func=run)


def run(args) -> None:
    model = load_model(args)
    videos = model.sample(args.num, frames=args.frames, batch_size=args.batch_size, progress=True,
                          **sampling_request(args))
    save_results(videos, args)
