"""How the network is spread over processes: DistributedDataParallel (a full copy per process) or
FSDP2 (`torch.distributed.fsdp.fully_shard`: parameters, gradients and optimiser state sharded,
each block of the UNet gathered just before it runs), and the full state of either, gathered for
checkpoints in the one safetensors format.

Under FSDP the EMA copy is sharded like the network, so its update stays a local lerp of shards.
Gathering a sharded module's state is a collective: every process calls it; rank 0 gets the tensors
(on the CPU), the others an empty dict.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from vidiff import spread
from vidiff.config import Config, ConfigError
from vidiff.nn.layers import CrossAttention, Downsample, ResBlock, SpatialAttention, TemporalAttention, Upsample

log = logging.getLogger("vidiff.train")
# train.parallel=auto shards models at least this large on GPUs: from here on a full fp32 copy of the
# weights, gradients and Adam's moments (16 bytes a parameter) takes most of a 24 GB card.
FSDP_AUTO_PARAMS = 500_000_000
BLOCKS = (ResBlock, SpatialAttention, TemporalAttention, CrossAttention, Downsample, Upsample)


def choose(cfg: Config, num_params: int, device: torch.device) -> str:
    """ "ddp" or "fsdp" for this run, logged with the reason."""
    world = spread.world()
    choice = cfg.train.parallel
    if choice == "auto":
        big = device.type == "cuda" and world > 1 and num_params >= FSDP_AUTO_PARAMS
        choice = "fsdp" if big else "ddp"
        log.info(
            "train.parallel=auto → %s (%s parameters, %d process%s, %s; FSDP from %s parameters on GPUs)",
            choice,
            f"{num_params:,}",
            world,
            "es" if world > 1 else "",
            device.type,
            f"{FSDP_AUTO_PARAMS:,}",
        )
    if choice == "fsdp" and cfg.train.mixed_precision == "fp16":
        raise ConfigError(
            "train.mixed_precision=fp16 needs a gradient scaler that sees every shard; with "
            "train.parallel=fsdp use bf16 (the default on GPUs)"
        )
    if choice == "fsdp" and not dist.is_initialized():
        raise ConfigError(
            "train.parallel=fsdp shards the model across processes: launch with torchrun "
            "(e.g. torchrun --nproc-per-node 8 -m vidiff.cli train ...), or use train.parallel=ddp"
        )
    return choice


def _shard(net: torch.nn.Module) -> None:
    from torch.distributed.fsdp import fully_shard

    for module in net.modules():
        if isinstance(module, BLOCKS):  # each gathered just before its forward, freed after
            fully_shard(module)
    fully_shard(net)  # the rest: embeddings, stem, output


def wrap(net: torch.nn.Module, ema: torch.nn.Module, choice: str, device: torch.device) -> torch.nn.Module:
    """The module the training step calls. FSDP shards `net` and `ema` in place and returns `net`;
    DDP returns a wrapper (when launched by torchrun); a single process trains `net` itself."""
    if choice == "fsdp":
        _shard(net)
        _shard(ema)
        return net
    if dist.is_initialized():
        return torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return net


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def _full():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(module: torch.nn.Module) -> dict:
    if not is_sharded(module):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full())


def full_optimizer_state(net: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimiser's state as `opt.state_dict()` gives it unsharded: keyed by parameter index."""
    if not is_sharded(net):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(net, opt, options=_full())  # keyed by parameter name
    if not state:
        return {}
    index = {name: i for i, (name, _) in enumerate(net.named_parameters())}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in state["param_groups"]],
    }


def load_optimizer_state(net: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    if not is_sharded(net):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = [name for name, _ in net.named_parameters()]
    by_name = {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(net, opt, by_name, options=StateDictOptions(full_state_dict=True))
