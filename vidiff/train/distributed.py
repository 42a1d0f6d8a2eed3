"""Data parallelism through torchrun + DistributedDataParallel: who this process is, the process
group, and the checks and reductions the trainer needs across processes."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .. import spread


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> None:
    spread.init(device)


def mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def _flag(flag: bool) -> torch.Tensor:
    """A flag where the process group can reduce it: on this process's GPU under NCCL."""
    cuda = dist.get_backend() == "nccl"
    return torch.tensor(float(flag), device=torch.device("cuda", torch.cuda.current_device()) if cuda else "cpu")


def flag_from_rank0(flag: bool) -> bool:
    """Rank 0's decision (e.g. out of time), the same on every process."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    t = _flag(flag)
    dist.broadcast(t, 0)
    return bool(t)


def any_process(flag: bool) -> bool:
    """Whether any process raised `flag` (e.g. its shard of the weights is not finite), on every process."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    t = _flag(flag)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def check_replicas_in_sync(net: torch.nn.Module) -> None:
    """Before saving: every process must hold the same weights."""
    if not dist.is_initialized():
        return
    s = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    all_s = [torch.zeros_like(s) for _ in range(dist.get_world_size())]
    dist.all_gather(all_s, s)
    if any(not torch.allclose(x, all_s[0], rtol=1e-6, atol=1e-6) for x in all_s):
        raise RuntimeError(f"DDP replicas diverged before saving: parameter sums {[x.item() for x in all_s]}")
