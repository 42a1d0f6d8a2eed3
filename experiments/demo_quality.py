"""How coherent a moving-shapes model's samples are (issue: train and sample end to end, `make demo`).

Samples `--num` videos from a run and reads each back with `vidiff.data.describe_video`: a shape is
found, it moves, and it keeps one colour and one shape through the clip (the first and the second
half of the frames are described separately and compared). Real clips from the built-in dataset are
measured the same way as the reference. Variety: the share of each colour and each shape among the
samples, and each sampler's largest gap to the real clips' shares in points (`colour_gap`,
`shape_gap`; the target is within 10 points: `--max-gap`).

    python -m experiments.demo_quality --checkpoint runs/demo [--num 32] [--samplers ancestral:100,ddim:50] [--ema 0.1]
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

# the real shares are the reference of the variety gaps: 64 real clips of another seed lie within 4–7
# points of 256 (40 clips: 10–12), so the reference has at least 256
REAL_CLIPS = 256


def coherence(videos: torch.Tensor, palette) -> dict:
    """Fractions of videos with a foreground, with motion, and with the same colour / shape in both
    halves of the clip; `colour_changes` lists the others as (index, first half's colour, second's)."""
    found = moving = same_shape = 0
    changes = []
    described = [describe_video(v, palette) for v in videos]
    for i, (v, d) in enumerate(zip(videos, described)):
        half = v.shape[1] // 2
        a, b = describe_video(v[:, :half], palette), describe_video(v[:, half:], palette)
        found += d["color"] != "none"
        moving += d["direction"] != "none"
        same_shape += a["shape"] != "none" and a["shape"] == b["shape"]
        if a["color"] == "none" or a["color"] != b["color"]:
            changes.append((i, a["color"], b["color"]))
    n = len(videos)
    return dict(
        **mix(described),
        found=found / n,
        moving=moving / n,
        same_color=1 - len(changes) / n,
        same_shape=same_shape / n,
        n=n,
        colour_changes=changes,
    )


def mix(described: list) -> dict:
    """The share of each colour and each shape ("none" where none is found) among whole-clip
    descriptions (`describe_video`'s)."""
    return {
        key: {k: sum(d[field] == k for d in described) / len(described) for k in sorted({d[field] for d in described})}
        for key, field in (("colours", "color"), ("shapes", "shape"))
    }


def mix_gaps(samples: dict, real: dict) -> dict:
    """The largest difference, in points, between the samples' and the real clips' share of any colour
    (`colour_gap`) and of any shape (`shape_gap`); a share missing on one side counts as 0."""
    gap = {}
    for key, name in (("colours", "colour_gap"), ("shapes", "shape_gap")):
        values = set(samples[key]) | set(real[key])
        gap[name] = 100 * max(abs(samples[key].get(v, 0.0) - real[key].get(v, 0.0)) for v in values)
    return gap


def shares(r: dict) -> str:
    return "; ".join(" ".join(f"{k} {v:.0%}" for k, v in r[key].items()) for key in ("colours", "shapes"))


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
    ap.add_argument("--ema", type=float, help="a post-hoc EMA's σ_rel (a run trained with train.ema=power)")
    ap.add_argument("--max-gap", type=float, default=10.0, help="the variety target: points from the real shares")
    args = ap.parse_args()
    model = VideoDiffusion.from_pretrained(args.checkpoint, ema=args.ema)
    dc = model.config.data
    n_real = max(args.num, REAL_CLIPS)
    real = MovingShapes(num_videos=n_real, frames=dc.frames, size=dc.size, seed=12345)
    palette = list(real.colors)
    report = {"real": coherence(torch.stack([real[i]["video"] for i in range(n_real)]), palette)}
    sc = model.config.sample
    for spec in (args.samplers or f"{sc.sampler}:{sc.steps}").split(","):
        name, steps, *extra = spec.split(":")
        options = {} if args.gamma is None else {"gamma": args.gamma}
        options |= {k: int(v) if v.isdigit() else float(v) for k, v in (o.split("=") for o in extra)}
        videos = model.sample(args.num, sampler=name, steps=int(steps), options=options, seed=args.seed)
        report[spec] = coherence(videos, palette)
        report[spec] |= mix_gaps(report[spec], report["real"])
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
        print(f"{'':12s} {shares(r)}")
        if k != "real":
            within = max(r["colour_gap"], r["shape_gap"]) <= args.max_gap
            print(
                f"{'':12s} largest gap to the real shares: colour {r['colour_gap']:.0f} points, shape "
                f"{r['shape_gap']:.0f} points ({'within' if within else 'NOT within'} {args.max_gap:.0f})"
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
