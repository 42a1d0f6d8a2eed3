"""`vidiff interpolate`: temporal interpolation, K−1 new frames between each pair of a video's frames."""

from __future__ import annotations

import sys
from dataclasses import replace

from vidiff.cli.common import (
    add_task_arguments,
    command_bar,
    in_batches,
    load_model,
    read_clip,
    repeat,
    sampling_request,
    save_results,
)

# frames read without --max-frames: each becomes K frames to sample, in windows of the model's length, so a
# long file (minutes) means hours of sampling and its frames held in memory; past this, the user says how many
DEFAULT_MAX_FRAMES = 512


def register(sub) -> None:
    p = sub.add_parser("interpolate", help="temporal interpolation: K−1 new frames between each pair")
    add_task_arguments(p)
    p.add_argument("--video", required=True)
    p.add_argument("--factor", type=int, required=True, help="frame-rate factor K")
    p.add_argument(
        "--max-frames",
        type=int,
        help=f"read at most this many frames of the video (a video longer than {DEFAULT_MAX_FRAMES} frames needs it)",
    )
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.errors import ConditioningError
    from vidiff.io.video import probe
    from vidiff.tasks import interpolate, interpolation_windows

    if args.max_frames is not None and args.max_frames < 2:
        raise ConditioningError(f"--max-frames {args.max_frames}: interpolation needs at least 2 frames")
    model = load_model(args)
    info = probe(args.video)
    frames = min(info.num_frames, args.max_frames or info.num_frames)
    if args.max_frames is None and frames > DEFAULT_MAX_FRAMES:
        raise ConditioningError(
            f"{args.video}: {frames} frames ({frames / float(info.fps):.0f} s at {float(info.fps):g} fps), more than "
            f"the {DEFAULT_MAX_FRAMES} vidiff interpolate reads unless told: give --max-frames N to interpolate its "
            f"first N frames into (N−1)×{args.factor}+1 (--max-frames {frames} for all of it)"
        )
    size = model.config.data.size
    print(
        f"reading {frames} of the {info.num_frames} frames of {args.video} ({info.width}×{info.height}, "
        f"{float(info.fps):g} fps) at {size}×{size}",
        file=sys.stderr,
    )
    clip = read_clip(args.video, size, max_frames=frames, progress=True)
    request = sampling_request(args)
    windows = interpolation_windows(clip.shape[2], args.factor, model.config.data.frames)
    with command_bar(args, windows, "interpolating", unit="window") as bar:  # one bar over every batch
        videos = in_batches(
            args,
            lambda seed, n: interpolate(
                model, repeat(clip, n), args.factor, progress=bar, request=replace(request, seed=seed)
            ),
        )
    save_results(videos, args, "interpolated")
