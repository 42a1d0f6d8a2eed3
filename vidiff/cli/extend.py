"""`vidiff extend`: autoregressive extension beyond the model's window."""

from __future__ import annotations

from dataclasses import replace

from vidiff.cli.common import (
    add_task_arguments,
    in_batches,
    load_model,
    read_clip,
    repeat,
    sampling_request,
    save_results,
)


def register(sub) -> None:
    p = sub.add_parser("extend", help="autoregressive extension beyond the model's window")
    add_task_arguments(p)
    p.add_argument("--length", type=int, required=True, help="frames of the result")
    p.add_argument("--video", help="start from this video's frames (default: an unconditional window)")
    p.add_argument("--overlap", type=int, help="frames each new window is conditioned on (default half)")
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.tasks import extend

    model = load_model(args)
    clip = read_clip(args.video, model.config.data.size, max_frames=args.length) if args.video else None
    request = sampling_request(args)
    videos = in_batches(
        args,
        lambda seed, n: extend(
            model,
            None if clip is None else repeat(clip, n),
            args.length,
            overlap=args.overlap,
            num=n,
            request=replace(request, seed=seed),
        ),
    )
    save_results(videos, args, "extended")
