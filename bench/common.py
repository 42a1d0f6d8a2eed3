"""What several benches share: the CPU's fp32 matmul peak, printed beside every timing."""

from __future__ import annotations

import time

import torch


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """fp32 matmul GFLOP/s on this machine's torch threads, now."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9
