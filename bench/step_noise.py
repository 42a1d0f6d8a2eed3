"""The CPU time one training step spends drawing its noise ε, per process: before, every process drew
the whole global batch on the CPU from one generator and kept its rows; now each draws only its own
rows, each sample from its own generator keyed by (seed, step, sample) (`vidiff.train.step.sample_noise`),
on its training device (here the CPU, the worst case). The kinetics600-64x64 preset's shape (global
batch 256 of 3×16×64×64), for 8 and 64 processes, side by side in one run, next to the fp32 matmul
peak measured in the same run.

    python -m bench.step_noise [--threads 1] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import matmul_peak
from vidiff.presets import get_preset
from vidiff.train.loader import step_generator
from vidiff.train.step import sample_noise


def old_draw(seed: int, step: int, batch: int, shape: tuple, rank: int, world: int) -> torch.Tensor:
    """The former draw: the global batch's noise, of which this process kept its rows."""
    g = step_generator(seed, step, 2)
    torch.rand(batch, generator=g, dtype=torch.float64)
    eps = torch.randn((batch, *shape), generator=g)
    per = batch // world
    return eps[rank * per : (rank + 1) * per].clone()


def new_draw(seed: int, step: int, batch: int, shape: tuple, rank: int, world: int) -> torch.Tensor:
    per = batch // world
    return sample_noise(seed, step, rank * per, per, shape, "cpu")


def seconds(draw, reps: int, *args) -> float:
    times = []
    for step in range(reps):
        t = time.perf_counter()
        draw(0, step, *args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the draws are single-threaded)")
    p.add_argument("--reps", type=int, default=3, help="steps timed per variant (the median is printed)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = get_preset("kinetics600-64x64")
    batch, shape = cfg.train.batch_size, (cfg.model.in_channels, cfg.data.frames, cfg.data.size, cfg.data.size)
    print(
        f"fp32 matmul peak ({args.threads} thread{'s' if args.threads > 1 else ''}): {matmul_peak():.0f} GFLOP/s; "
        f"kinetics600-64x64: global batch {batch} × {'×'.join(map(str, shape))}"
    )
    print("| processes | rows per process | before: whole batch on the CPU (s/step) | now: own rows (s/step) | ratio |")
    print("|---|---|---|---|---|")
    for world in (8, 64):
        rank = world - 1  # the last process: the old draw made it wait for every row before its own
        old = seconds(old_draw, args.reps, batch, shape, rank, world)
        new = seconds(new_draw, args.reps, batch, shape, rank, world)
        print(f"| {world} | {batch // world} | {old:.3f} | {new:.4f} | {old / new:.0f}× |")
    print(f"fp32 matmul peak after: {matmul_peak():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
