"""How often a text-conditioned model's samples match their prompt, without and with classifier-free
guidance (issue: conditioning). Trains `cpu-demo-text` on the built-in moving shapes (or loads
--checkpoint), samples each prompt for each guidance weight, and analyses the frames with
`vidiff.data.describe_video` (colour and kind of the shape, direction of motion).

    python -m experiments.text_guidance --minutes 10 --out runs/text-bench [--checkpoint RUN] [--num 8]
        [--weights 0,1,3,5]
        [--set section.key=value ...] [--sampler ddim --steps 50] [--seed 0]

(`--set model.text_cross_attention=true` trains with cross-attention to the caption's tokens.) Before
sampling it prints how much the denoiser uses each word of the caption (`caption_sensitivity`).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path

import torch

from vidiff import VideoDiffusion, get_preset
from vidiff.data import MovingShapes, describe_video
from vidiff.diffusion.sampling import SAMPLERS
from vidiff.io.video import write_filmstrip
from vidiff.train import train


def caption_sensitivity(model, clips: torch.Tensor, captions: list, logsnrs=(-8, -6, -4, -2, 0, 2)) -> dict:
    """How much the denoiser uses each word: the x-MSE of x̂ on real clips under their own caption,
    with the direction word replaced by its opposite, and with the colour word replaced by another
    colour (same z and noise for all three). A model that ignores a word gives the same error."""
    from vidiff.diffusion.schedule import alpha_sigma

    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    other = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "red"}
    variants = {
        "true": captions,
        "direction swapped": [" ".join(c.split()[:-1] + [opposite[c.split()[-1]]]) for c in captions],
        "colour swapped": [c.replace(c.split()[1], other[c.split()[1]]) for c in captions],
    }
    encoded = {k: model.conditioning.encoder.encode(v) for k, v in variants.items()}
    g = torch.Generator().manual_seed(0)
    table = {}
    for lam in logsnrs:
        logsnr = torch.full((len(clips),), float(lam))
        a, s = (v.view(-1, 1, 1, 1, 1) for v in alpha_sigma(logsnr))
        z = a * clips + s * torch.randn(clips.shape, generator=g)
        with torch.no_grad():
            table[lam] = {
                k: ((model.denoiser.predict(z, logsnr, text_tokens=tok, text_mask=mask)[0] - clips) ** 2).mean().item()
                for k, (tok, mask) in encoded.items()
            }
        print(f"  λ={lam:+d}: x-MSE " + "  ".join(f"{k} {v:.4f}" for k, v in table[lam].items()), flush=True)
    return table


_ATTRIBUTES = ("color", "shape", "direction")


def _tally(hits: Counter, got: dict, want: dict) -> None:
    ok = {k: got[k] == want[k] for k in _ATTRIBUTES}
    hits.update(k for k, v in ok.items() if v)
    hits["all"] += all(ok.values())


def _rates(hits: Counter, total: int) -> dict:
    return {k: hits[k] / total for k in (*_ATTRIBUTES, "all")}


def _fmt(rates: dict) -> str:
    return "  ".join(f"{k} {v:.0%}" for k, v in rates.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--out", default="runs/text-bench")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--num", type=int, default=4, help="samples per prompt and weight")
    ap.add_argument("--weights", default="0,1,3,5")
    ap.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="first seed: prompt i samples from seed + 1000·i")
    ap.add_argument("--set", action="append", default=[], help="override of the cpu-demo-text preset")
    args = ap.parse_args()
    run = args.checkpoint
    if run is None:
        cfg = get_preset("cpu-demo-text").override(
            [f"train.max_minutes={args.minutes}", "train.save_every=0", *args.set]
        )
        train(cfg, args.out)
        run = args.out
    model = VideoDiffusion.from_pretrained(run)
    colors, directions = ["red", "green", "blue", "yellow"], ["left", "right", "up", "down"]
    prompts = [
        f"a {c} {s} moving {d}"
        for (c, d), s in zip(itertools.product(colors, directions), itertools.cycle(["circle", "square", "triangle"]))
    ]
    # the measure itself, on real clips of the model's size: how often describe_video reads back the
    # caption's colour and direction (the ceiling of the numbers below)
    real = MovingShapes(num_videos=64, frames=model.config.data.frames, size=model.config.data.size, seed=4321)
    items = [real[i] for i in range(len(real))]
    hits = Counter()
    for i, item in enumerate(items):
        _tally(hits, describe_video(item["video"]), real.attributes(i))
    report = {"seed": args.seed, "real": _rates(hits, len(real))}
    print(f"real clips: {_fmt(report['real'])}  ({len(real)} clips)", flush=True)
    print("does the denoiser use the caption's words? (x-MSE on the real clips)")
    report["caption_sensitivity"] = caption_sensitivity(
        model, torch.stack([it["video"] for it in items]), [it["caption"] for it in items]
    )
    for w in [float(x) for x in args.weights.split(",")]:
        hits, total, strip = Counter(), 0, []
        moved = {d: Counter() for d in directions}  # prompted direction -> directions read back
        for p_i, prompt in enumerate(prompts):
            want = dict(color=prompt.split()[1], shape=prompt.split()[2], direction=prompt.split()[-1])
            videos = model.sample(
                args.num, prompt=prompt, guidance=w, sampler=args.sampler, steps=args.steps, seed=args.seed + 1000 * p_i
            )
            for v in videos:
                got = describe_video(v)
                _tally(hits, got, want)
                moved[want["direction"]][got["direction"]] += 1
                total += 1
            strip.append(videos[0])
        report[w] = _rates(hits, total)
        print(
            f"w={w:g}: {_fmt(report[w])}  ({total} samples; chance: colour 25%, shape 33%, direction 25%)", flush=True
        )
        # which way the samples of each prompted direction moved: tells a learned axis from a learned sign
        print(
            "  prompted -> moved: "
            + "; ".join(f"{d}: " + " ".join(f"{k} {n}" for k, n in c.most_common()) for d, c in moved.items()),
            flush=True,
        )
        report[w]["moved"] = {d: dict(c) for d, c in moved.items()}
        write_filmstrip(Path(args.out) / f"frames_w{w:g}.png", torch.stack(strip))  # a row per prompt
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "text_guidance.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
