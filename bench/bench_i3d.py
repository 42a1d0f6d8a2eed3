"""Seconds per 16-frame 224×224 clip of the I3D forward on CPU, a few variants.

    PYTHONPATH=. .venv/bin/python bench/bench_i3d.py [--threads 2] [--batch 2] [--repeats 3]

Compare with the JAX reference, timed the same way (batch 2, jit, after a warm-up):
    PYTHONPATH=. .venv/bin/python bench/make_i3d_reference.py --time
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidiff.metrics.i3d import load_i3d


def time_forward(model, x: torch.Tensor) -> float:
    """Seconds per clip of one forward pass."""
    with torch.inference_mode():
        t = time.perf_counter()
        model(x)
    return (time.perf_counter() - t) / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.empty(args.batch, 3, 16, 224, 224).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))

    variants = {
        "float32, BatchNorm separate": (load_i3d(fuse=False).to(memory_format=torch.contiguous_format), x),
        "float32, BatchNorm folded": (load_i3d().to(memory_format=torch.contiguous_format), x),
        "float32, folded, channels_last_3d (default)": (load_i3d(), x.to(memory_format=torch.channels_last_3d)),
    }
    print(f"I3D forward, {args.batch} × 16×224×224 clips, {args.threads} threads, torch {torch.__version__}")
    print("  variants interleaved (the machine is shared): min and median over rounds")
    times = {name: [] for name in variants}
    for name, (model, inp) in variants.items():
        time_forward(model, inp)  # warm-up
    for _ in range(args.repeats):
        for name, (model, inp) in variants.items():
            times[name].append(time_forward(model, inp))
    for name, ts in times.items():
        print(f"  {name:40s} min {min(ts):.3f}  median {statistics.median(ts):.3f} s/clip")


if __name__ == "__main__":
    main()
