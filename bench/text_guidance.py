"""How often a text-conditioned model's samples match their prompt, without and with classifier-free
guidance (issue: conditioning). Trains `cpu-demo-text` on the built-in moving shapes (or loads
--checkpoint), samples each prompt for each guidance weight, and analyses the frames with
`vidiff.data.describe_video` (colour of the shape, direction of motion).

    python bench/text_guidance.py --minutes 10 --out runs/text-bench [--checkpoint RUN] [--num 8]
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from vidiff import VideoDiffusion, get_preset
from vidiff.data import describe_video
from vidiff.train import train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--out", default="runs/text-bench")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--num", type=int, default=4, help="samples per prompt and weight")
    ap.add_argument("--weights", default="0,1,3,5")
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    run = args.checkpoint
    if run is None:
        cfg = get_preset("cpu-demo-text").override([f"train.max_minutes={args.minutes}", "train.save_every=0"])
        train(cfg, args.out)
        run = args.out
    model = VideoDiffusion.from_pretrained(run)
    colors, directions = ["red", "green", "blue", "yellow"], ["left", "right", "up", "down"]
    prompts = [f"a {c} {s} moving {d}" for (c, d), s in zip(itertools.product(colors, directions),
                                                                itertools.cycle(["circle", "square", "triangle"]))]
    report = {}
    for w in [float(x) for x in args.weights.split(",")]:
        hits = {"color": 0, "direction": 0, "both": 0}
        total = 0
        for p_i, prompt in enumerate(prompts):
            want_color, want_dir = prompt.split()[1], prompt.split()[-1]
            videos = model.sample(args.num, prompt=prompt, guidance=w, sampler="ddim", steps=args.steps,
                                  seed=1000 * p_i)
            for v in videos:
                d = describe_video(v)
                c_ok, d_ok = d["color"] == want_color, d["direction"] == want_dir
                hits["color"] += c_ok
                hits["direction"] += d_ok
                hits["both"] += c_ok and d_ok
                total += 1
        report[w] = {k: v / total for k, v in hits.items()}
        print(f"w={w:g}: colour {report[w]['color']:.0%}  direction {report[w]['direction']:.0%}  "
              f"both {report[w]['both']:.0%}  ({total} samples; chance: colour 25%, direction 25%)", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "text_guidance.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
