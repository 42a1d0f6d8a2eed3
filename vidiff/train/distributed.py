"""Data parallelism through torchrun + DistributedDataParallel: the process group, and the checks and
reductions the trainer needs across processes. Each reduces a tensor on `spread.collective_device()`
(the process's GPU under NCCL); who this process is, `vidiff.spread` says."""

from __future__ import annotations

import torch
import torch.distributed as dist

from vidiff import spread


def setup_distributed(device: torch.device) -> None:
    spread.init(device)


def mean_and_flag_from_rank0(x: torch.Tensor, flag: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(`x` (a scalar on the process's device) averaged over the processes, rank 0's `flag` as 1.0 or 0.0)
    from one all_reduce, with no host sync: a step's loss and rank 0's decision to stop (out of time)
    cost one collective together. The other processes' flags are ignored."""
    mine = torch.full((), float(flag and spread.rank() == 0), device=x.device)  # a fill: no copy from the host
    both = torch.stack([x.float(), mine])
    if spread.world() > 1:
        both = both.to(spread.collective_device())
        dist.all_reduce(both)
        both = torch.cat([both[:1] / spread.world(), both[1:]])
    return both[0], both[1]


def _flag(flag: bool) -> torch.Tensor:
    return torch.tensor(float(flag), device=spread.collective_device())


def flag_from_rank0(flag: bool) -> bool:
    """Rank 0's decision (e.g. out of time), the same on every process."""
    if spread.world() == 1:
        return bool(flag)
    t = _flag(flag)
    dist.broadcast(t, 0)
    return bool(t)


def any_process(flag: bool) -> bool:
    """Whether any process raised `flag` (e.g. its shard of the weights is not finite), on every process."""
    if spread.world() == 1:
        return bool(flag)
    t = _flag(flag)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def check_replicas_in_sync(net: torch.nn.Module) -> None:
    """Before saving: every process must hold the same weights."""
    if spread.world() == 1:
        return
    s = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    s = s.to(spread.collective_device())
    all_s = [torch.zeros_like(s) for _ in range(spread.world())]
    dist.all_gather(all_s, s)
    if any(not torch.allclose(x, all_s[0], rtol=1e-6, atol=1e-6) for x in all_s):
        raise RuntimeError(f"DDP replicas diverged before saving: parameter sums {[x.item() for x in all_s]}")
