"""Step time of the training levers (issue 34: none may cost more than 3% of a step): the whole
training step with each lever on, and the EMA update alone (today's exponential EMA against the two
power-function profiles of train.ema=power), on one preset's model and batch.

The levers' variants run interleaved, `--rounds` times `--steps` steps each, so that load from other
processes on a shared machine falls on all of them alike; it prints the median seconds per step.
The trainers share one process, and one built late can run its whole step slower for reasons of its
own (seen: the fourth of four on cpu-demo, +50%, gone when built first): compare two variants in
both orders; the EMA update alone is timed directly.

    python -m bench.lever_cost [--preset cpu-demo] [--threads 2] [--steps 10] [--rounds 3]
        [--variants default,power_ema]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidiff.presets import get_preset
from vidiff.train.loader import collate
from vidiff.train.setup import build_data, build_trainer, derive_config
from vidiff.train.step import ema_decay, ema_update, train_step

VARIANTS = {
    "default": [],
    "min_snr": ["diffusion.loss_weighting=min_snr"],
    "cosine": ["train.lr_schedule=cosine"],
    "power_ema": ["train.ema=power"],
}


def setup(preset: str, sets: list):
    """(trainer, one batch) of the preset with `sets` applied."""
    cfg = get_preset(preset).override(sets + ["train.compile=false", "data.num_videos=64"])
    data = build_data(cfg)
    cfg = derive_config(cfg, data)
    t = build_trainer(cfg, torch.device("cpu"))
    return t, collate([data[i] for i in range(cfg.train.batch_size)])


def time_steps(t, batch, first: int, steps: int) -> list:
    out = []
    for step in range(first, first + steps):
        start = time.perf_counter()
        train_step(t, batch, step)
        out.append(time.perf_counter() - start)
    return out


def time_ema(t, steps: int) -> list:
    """Seconds per EMA update as the step does it (the trainer's own: exponential or power)."""
    out = []
    for step in range(steps):
        start = time.perf_counter()
        if t.power is not None:
            t.power.update(t.net, step + 100)
        else:
            ema_update(t.ema, t.net, ema_decay(step + 100, t.cfg.train.ema_decay))
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help="the first is the reference")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runs = {name: setup(args.preset, VARIANTS[name]) for name in args.variants.split(",")}
    steps = {name: [] for name in runs}
    emas = {name: [] for name in ("default", "power_ema") if name in runs}
    for t, batch in runs.values():
        time_steps(t, batch, 0, 2)  # warm-up
    for r in range(args.rounds):
        for name, (t, batch) in runs.items():
            steps[name] += time_steps(t, batch, 2 + r * args.steps, args.steps)
        for name in emas:
            emas[name] += time_ema(runs[name][0], 5 * args.steps)
    first = next(iter(runs))
    params = sum(p.numel() for p in runs[first][0].net.parameters())
    base = statistics.median(steps[first])
    print(f"{args.preset}: {params:,} parameters, {args.threads} threads, median of {args.rounds}×{args.steps} steps")
    for name, values in steps.items():
        m = statistics.median(values)
        print(f"  step  {name:10s} {m * 1e3:8.2f} ms  ({100 * (m / base - 1):+.1f}% vs {first})")
    for name, values in emas.items():
        m = statistics.median(values)
        print(f"  EMA update alone, {name:10s} {m * 1e3:7.3f} ms  ({100 * m / base:.2f}% of a {first} step)")


if __name__ == "__main__":
    main()
