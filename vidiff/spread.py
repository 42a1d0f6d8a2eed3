"""Independent work spread over the processes torchrun started: sampling, conditional tasks and
feature extraction split into the same chunks in any number of processes, chunk i on process
i mod N, results gathered back in order. Each chunk is computed exactly as one process computes it,
so the gathered result equals one process's (bit for bit on the CPU at equal thread counts).

Only torch; any layer may use it. Without torchrun every function is the one-process identity.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterable, TypeVar

import torch
import torch.distributed as dist

Item = TypeVar("Item")


def launched() -> bool:
    """Started by torchrun (or another launcher that sets its environment), even as one process."""
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


_alone = threading.local()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() and not getattr(_alone, "on", False) else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() and not getattr(_alone, "on", False) else 1


@contextlib.contextmanager
def alone():
    """Work that one process does by itself (e.g. rank 0's periodic FVD during training): inside,
    nothing is spread and nothing waits for the other processes."""
    before = getattr(_alone, "on", False)
    _alone.on = True
    try:
        yield
    finally:
        _alone.on = before


def is_main() -> bool:
    return rank() == 0


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_device() -> torch.device:
    """This process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    if torch.cuda.is_available():
        index = int(os.environ.get("LOCAL_RANK", 0))
        if launched():
            torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init(device: torch.device) -> None:
    """Join torchrun's process group (NCCL on GPUs, gloo on the CPU); nothing without torchrun."""
    if launched() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def finish() -> None:
    """Leave the process group (at the end of a command)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def map_ordered(items: Iterable[Item], fn: Callable[[Item], object], *, main_only: bool = False) -> list:
    """[fn(item) for item in items], item i computed on process i mod N; every process gets the
    whole list, in order — or with `main_only` the first process alone, the others [] (only the
    process that writes the results holds them all). Every process iterates all items (a lazy
    iterable is read, not computed, where the item is another's). Results must be picklable
    (tensors on the CPU)."""
    n, me = world(), rank()
    mine = {i: fn(item) for i, item in enumerate(items) if i % n == me}
    if n == 1:
        return [mine[i] for i in range(len(mine))]
    gathered: list = [None] * n
    if main_only:
        dist.gather_object(mine, gathered if me == 0 else None, dst=0)
        if me != 0:
            return []
    else:
        dist.all_gather_object(gathered, mine)
    merged = {i: r for part in gathered for i, r in part.items()}
    return [merged[i] for i in range(len(merged))]


def chunks(num: int, size: int) -> list:
    """(start, count) of consecutive chunks of at most `size` covering range(num)."""
    return [(start, min(size, num - start)) for start in range(0, num, size)]
