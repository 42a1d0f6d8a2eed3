"""Independent work spread over the processes torchrun started: sampling, conditional tasks and
feature extraction split into the same chunks in any number of processes, chunk i on process
i mod N, results gathered back in order. Each chunk is computed exactly as one process computes it,
so the gathered result equals one process's (bit for bit on the CPU at equal thread counts).

It is also the one place that answers "who am I" (rank, world, local rank, device) and says on
which device each kind of collective carries its tensors.

Only torch; any layer may use it. Without torchrun every function is the one-process identity.
"""

from __future__ import annotations

import contextlib
import importlib
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
    """This process's rank in the process group (0 without one, and inside `alone`)."""
    return dist.get_rank() if dist.is_initialized() and not getattr(_alone, "on", False) else 0


def world() -> int:
    """The number of processes in the group (1 without one, and inside `alone`)."""
    return dist.get_world_size() if dist.is_initialized() and not getattr(_alone, "on", False) else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK): which GPU it drives."""
    return int(os.environ.get("LOCAL_RANK", 0)) if launched() else 0


def local_world() -> int:
    """The number of processes torchrun started on this machine (they share its cores)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if launched() else 1


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
        index = local_rank()
        if launched():
            torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


_device: dict = {}  # the process's device, as `init` was told it


def backend(device: torch.device) -> str:
    """The process group's backends for a process on `device`: on GPUs NCCL carries CUDA tensors and
    gloo CPU ones (object collectives pickle into CPU tensors; NCCL alone refuses them)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device) -> None:
    """Join torchrun's process group (`backend(device)`); nothing without torchrun. `device` is the
    process's device: per-step collectives carry their tensors there (`collective_device`)."""
    _device["value"] = torch.device(device)
    if launched() and not dist.is_initialized():
        # torch.distributed.nn's collectives take `group=group.WORLD` as a default argument, bound when
        # the module is first imported (DDP and torch.compile import it). Imported after the group exists,
        # they hold it past `finish`: its gloo threads outlive destroy_process_group and may free a
        # Python tensor while the interpreter exits (an abort after a finished run). Imported here, first.
        importlib.import_module("torch.distributed.nn")
        dist.init_process_group(backend(device))


def collective_device() -> torch.device:
    """Where a tensor handed to a per-step collective (a loss, a flag, a checksum) lives: the device
    the process computes on (its GPU under NCCL), so the collective never waits on a copy from the host.
    Object collectives (`map_ordered`) pickle on the CPU and go through gloo."""
    return _device.get("value") or local_device()


def finish() -> None:
    """Leave the process group (at the end of a command)."""
    _device.clear()
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
