"""How coherent a moving-shapes model's samples are (issue: train and sample end to end, `make demo`).

Samples `--num` videos from a run and reads each back with `vidiff.data.describe_video`: a shape is
found, it moves, and it keeps one colour and one shape through the clip (the first and the second
half of the frames are described separately and compared). Real clips from the built-in dataset are
measured the same way as the reference.

    python -m experiments.demo_quality --checkpoint runs/demo [--num 32] [--samplers ancestral:100,ddim:50]
        [--samplers pc:200:corrector_steps=1,pc:200:corrector_steps=3:delta=0.2]

`--samplers` lists sampler:steps pairs, each with the sampler's own options after further colons
(default: the model's own sampler, steps and options); each one's
samples are also written as a filmstrip PNG (a row per video) next to the checkpoint's run folder
unless `--no-png`, and the clips whose colour changes as another (`..._colour_changes.png`; the JSON
lists them with the colours of both halves).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vidiff import VideoDiffusion
from vidiff.data import MovingShapes, describe_video
from vidiff.io.video import write_filmstrip


def coherence(videos: torch.Tensor, palette) -> dict:
    """Fractions of videos with a foreground, with motion, and with the same colour / shape in both
    halves of the clip; `colour_changes` lists the others as (index, first half's colour, second's)."""
    found = moving = same_shape = 0
    changes = []
    for i, v in enumerate(videos):
        d = describe_video(v, palette)
        half = v.shape[1] // 2
        a, b = describe_video(v[:, :half], palette), describe_video(v[:, half:], palette)
        found += d["color"] != "none"
        moving += d["direction"] != "none"
        same_shape += a["shape"] != "none" and a["shape"] == b["shape"]
        if a["color"] == "none" or a["color"] != b["color"]:
            changes.append((i, a["color"], b["color"]))
    n = len(videos)
    return dict(
        found=found / n,
        moving=moving / n,
        same_color=1 - len(changes) / n,
        same_shape=same_shape / n,
        n=n,
        colour_changes=changes,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--num", type=int, default=32)
    ap.add_argument(
        "--samplers",
        help="sampler:steps[:option=value...],... e.g. pc:200:corrector_steps=1 (default: the model's sample config)",
    )
    ap.add_argument("--gamma", type=float)
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model = VideoDiffusion.from_pretrained(args.checkpoint)
    dc = model.config.data
    real = MovingShapes(num_videos=args.num, frames=dc.frames, size=dc.size, seed=12345)
    palette = list(real.colors)
    report = {"real": coherence(torch.stack([real[i]["video"] for i in range(args.num)]), palette)}
    sc = model.config.sample
    for spec in (args.samplers or f"{sc.sampler}:{sc.steps}").split(","):
        name, steps, *extra = spec.split(":")
        options = {} if args.gamma is None else {"gamma": args.gamma}
        options |= {k: int(v) if v.isdigit() else float(v) for k, v in (o.split("=") for o in extra)}
        videos = model.sample(args.num, sampler=name, steps=int(steps), options=options, seed=args.seed)
        report[spec] = coherence(videos, palette)
        if not args.no_png:
            png = Path(args.checkpoint) / f"frames_{spec.replace(':', '_')}.png"
            write_filmstrip(png, videos[:16])
            print(f"wrote {png}")
            changed = [i for i, *_ in report[spec]["colour_changes"]]
            if changed:  # the clips that lose their colour, a row each
                write_filmstrip(png.with_name(png.stem + "_colour_changes.png"), videos[changed[:16]])
    for k, r in report.items():
        print(
            f"{k:12s} n={r['n']}: shape found {r['found']:.0%}  moving {r['moving']:.0%}  "
            f"same colour in both halves {r['same_color']:.0%}  same shape {r['same_shape']:.0%}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
