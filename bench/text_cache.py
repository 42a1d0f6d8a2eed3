"""A text model's caption path in training. Alone (no UNet): `--captions` distinct captions through
`TextConditioning.training` in batches of `--batch`, with the real encoder (the packaged
all-MiniLM-L6-v2, d = 384) on the CPU, one torch thread. It prints the process's resident memory
(VmRSS) and the time per batch every 2,000 captions, then the time per batch of one caption repeated
(every batch a cache hit), next to the fp32 matmul peak measured in the same run. `--cache 0` keeps
every caption (the cache before it was bounded), to compare.

With `--train`: whole training steps of a text model (cpu-tiny's network, `--batch` clips a step, data
read from prepared shards, one torch thread) over `--captions` clips, each with its own caption, read
from shards that store the captions' encodings (`vidiff prepare --text-encoder`), against the same
model trained on shards whose clips all have one caption (encoded once, then cached); and, over
`--before-steps` steps, the distinct captions encoded in the step (shards without stored encodings).
It prints the time per step and VmRSS every 2,000 captions, and the fp32 matmul peak before and after.

    python -m bench.text_cache [--captions 20000] [--batch 32] [--cache 4096]
    python -m bench.text_cache --train [--captions 20000] [--batch 32] [--before-steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import matmul_peak
from vidiff.conditioning import ConditioningConfig, build_conditioning

WORDS = ("a person", "two dogs", "a red car", "the chef", "a child", "an old man", "a bird", "the team")
ACTS = ("runs across", "cooks in", "plays near", "jumps over", "waits by", "dances in", "rides through")
PLACES = ("a park", "the kitchen", "a snowy street", "the beach", "a crowded market", "the stadium")


def caption(i: int) -> str:
    """Distinct captions of ordinary length (8 to 14 tokens)."""
    return f"{WORDS[i % 8]} {ACTS[i // 8 % 7]} {PLACES[i // 56 % 6]}, take {i // 336}"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captions", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=32, help="captions per batch")
    p.add_argument("--cache", type=int, default=4096, help="conditioning.text_cache_captions; 0: keep every caption")
    p.add_argument("--train", action="store_true", help="whole training steps from shards (see above)")
    p.add_argument("--before-steps", type=int, default=100, help="--train: steps encoding captions in the step")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"fp32 matmul peak (1 thread): {matmul_peak():.0f} GFLOP/s")
    if args.train:
        from bench.text_steps import train_steps

        train_steps(args.captions, args.batch, args.before_steps)
        print(f"fp32 matmul peak after: {matmul_peak():.0f} GFLOP/s")
        return
    cond = build_conditioning(ConditioningConfig(kind="text", text_cache_captions=max(1, args.cache)))
    keep = torch.ones(args.batch, dtype=torch.bool)
    cond.training({"caption": ["warm up"] * args.batch}, keep, "cpu")  # loads the encoder
    if not args.cache:
        cond._cache.max_captions = None
    print(f"encoder loaded: RSS {rss_mb():.0f} MB; cache of {args.cache or 'every'} caption(s), batch {args.batch}")
    print("| captions seen | RSS (MB) | cached | ms per batch (last 2,000) |")
    print("|---|---|---|---|")
    times: list = []
    for start in range(0, args.captions, args.batch):
        batch = [caption(i) for i in range(start, min(start + args.batch, args.captions))]
        t = time.perf_counter()
        cond.training({"caption": batch}, keep[: len(batch)], "cpu")
        times.append(time.perf_counter() - t)
        seen = start + len(batch)
        if seen % 2000 < args.batch or seen == args.captions:
            window = times[-(2000 // args.batch) :]
            print(f"| {seen} | {rss_mb():.0f} | {len(cond._cache)} | {1000 * statistics.mean(window):.1f} |")
    repeated = []
    for _ in range(len(times)):
        t = time.perf_counter()
        cond.training({"caption": [caption(0)] * args.batch}, keep, "cpu")
        repeated.append(time.perf_counter() - t)
    print(
        f"one caption repeated ({len(repeated)} batches): {1000 * statistics.mean(repeated):.1f} ms per batch; "
        f"RSS {rss_mb():.0f} MB"
    )
    print(f"fp32 matmul peak after: {matmul_peak():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
