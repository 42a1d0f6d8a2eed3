"""Training-step benchmark of the factorized space-time UNet (issue: speed and memory).

Reference configuration: 8 frames × 32×32 × 3, batch 4, base width 64, multipliers (1, 2, 4).
Prints seconds per step (forward + backward + AdamW), the step's FLOPs and achieved GFLOP/s, the
fp32 matmul peak measured in the same run, peak memory, and the parameter count.

    python bench/bench_train_step.py [--threads 2] [--steps 5] [--variants default,nchw]
"""
from __future__ import annotations

import argparse
import gc
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidiff.diffusion import Denoiser, DiffusionLoss
from vidiff.unet import UNet3D, UNetConfig


def matmul_peak(n=2048, reps=10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def run(cfg: UNetConfig, channels_last: bool, steps: int, batch=4, frames=8, size=32):
    torch.manual_seed(0)
    net = UNet3D(cfg)
    if not channels_last:
        net.channels_last = False
    den = Denoiser(net, "epsilon")
    loss_fn = DiffusionLoss()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, frames, size, size)

    def step():
        loss = loss_fn(den, x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as fc:
        loss_fn(den, x).mean().backward()
    opt.zero_grad(set_to_none=True)
    flops = fc.get_total_flops()
    step()
    gc.collect()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    params = sum(p.numel() for p in net.parameters())
    return sec, flops, params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--res-blocks", type=int, default=1)
    ap.add_argument("--variants", default="channels_last,nchw")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = UNetConfig(base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=args.res_blocks,
                     attention_levels=(1, 2), emb_dim=256)
    peak = matmul_peak()
    print(f"fp32 matmul peak ({args.threads} threads): {peak:.0f} GFLOP/s")
    for v in args.variants.split(","):
        sec, flops, params = run(cfg, v == "channels_last", args.steps)
        print(f"{v:14s} params {params / 1e6:.2f}M  step {sec:.3f} s  {flops / 1e9:.0f} GFLOP/step  "
              f"{flops / sec / 1e9:.0f} GFLOP/s ({100 * flops / sec / 1e9 / peak:.0f}% of peak)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (whole process)")
    print(f"matmul peak after: {matmul_peak():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
