"""`vidiff predict`: video prediction, continuing the first K frames of a video (paper §3.1)."""

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
    p = sub.add_parser("predict", help="video prediction: continue the first K frames of a video")
    add_task_arguments(p)
    p.add_argument("--video", required=True, help="video file whose first frames are the context")
    p.add_argument("--context", type=int, required=True, help="number of context frames K")
    p.add_argument("--frames", type=int, help="total frames of the result (default: the model's window)")
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.errors import ConditioningError
    from vidiff.tasks import predict

    model = load_model(args)
    window = model.config.data.frames
    if args.context < 1 or args.context >= window:
        raise ConditioningError(
            f"--context {args.context} must be between 1 and {window - 1}: shorter than the "
            f"model's window of {window} frames"
        )
    clip = read_clip(args.video, model.config.data.size, max_frames=args.context)
    if clip.shape[2] < args.context:
        raise ConditioningError(
            f"{args.video}: the video has {clip.shape[2]} frames, fewer than --context {args.context}"
        )
    request = sampling_request(args)
    videos = in_batches(
        args, lambda seed, n: predict(model, repeat(clip, n), args.frames, request=replace(request, seed=seed))
    )
    save_results(videos, args, "predicted")
