"""`vidiff sample`: videos from a checkpoint, with any registered sampler."""

from __future__ import annotations

from dataclasses import replace

from vidiff.cli.common import (
    add_sampling_arguments,
    command_bar,
    in_batches,
    load_model,
    sampling_request,
    save_results,
)


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample videos from a checkpoint")
    add_sampling_arguments(p)
    p.add_argument("--frames", type=int, help="frames per video (default: as trained)")
    p.set_defaults(func=run)


def run(args) -> None:
    model = load_model(args)
    request = sampling_request(args)
    steps = model.sampling(request).steps
    with command_bar(args, steps) as bar:
        videos = in_batches(
            args,
            lambda seed, n: model.sample(
                n, replace(request, seed=seed), frames=args.frames, batch_size=n, progress=bar
            ),
        )
    save_results(videos, args)
