"""One training step: the global batch's diffusion times and condition dropout drawn from (seed, step),
this process's shard of them, each of its samples' noise drawn from (seed, step, sample), the loss, the
update and the EMA."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from vidiff.nn.layers import joint_attention_mask
from vidiff.train import distributed
from vidiff.train.loader import step_generator
from vidiff.train.setup import Trainer


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """θ_ema ← decay · θ_ema + (1 − decay) · θ; buffers are copied."""
    ema_p = list(ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in net.parameters()], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def ema_decay(step: int, decay: float) -> float:
    """The EMA's decay at `step`: (1 + step)/(10 + step) early on, so the average forgets the
    initial weights quickly, capped at train.ema_decay."""
    return min(decay, (1 + step) / (10 + step))


def _condition(t: Trainer, batch: dict, keep: torch.Tensor) -> dict:
    cfg = t.cfg
    cond = t.model.conditioning.training(batch, keep, t.device)
    if cfg.data.image_frames:  # joint training: the appended images attend to nothing else in time
        mask = joint_attention_mask(cfg.data.frames, cfg.data.image_frames, t.device)  # (f, f)
        cond["temporal_mask"] = mask.expand(len(keep), *mask.shape)  # (b, f, f): per sample, like all of cond
    return cond


def _update(t: Trainer):
    """Clip the accumulated gradient, step the optimiser and the learning rate; the gradient norm."""
    if t.scaler is not None:
        t.scaler.unscale_(t.opt)
    clip = t.cfg.train.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(t.net.parameters(), clip) if clip > 0 else None
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a norm over this process's shards, reduced here on every rank
        grad_norm = grad_norm.full_tensor()
    if t.scaler is not None:
        t.scaler.step(t.opt)
        t.scaler.update()
    else:
        t.opt.step()
    t.sched.step()
    return grad_norm


NOISE_SALT = 2


def sample_noise(seed: int, step: int, first: int, count: int, shape: tuple, device) -> torch.Tensor:
    """ε of samples first .. first + count − 1 of a step's global batch, (count, *shape) on `device`: each
    from its own generator on `device`, seeded from (seed, step, index) by numpy's SeedSequence (well
    mixed: neighbouring steps and samples get unrelated streams). A process draws its rows only, and
    a sample's noise is the same whatever the number of processes and micro-batches."""
    eps = torch.empty((count, *shape), device=device)  # each row drawn in place: the noise is held once
    for row, index in zip(eps, range(first, first + count)):
        key = int(np.random.SeedSequence([seed, step, index, NOISE_SALT]).generate_state(1, np.uint64)[0] >> 1)
        torch.randn(shape, generator=torch.Generator(device=device).manual_seed(key), out=row)
    return eps


def _rows(batch: dict, rows: slice) -> dict:
    return {k: v[rows] for k, v in batch.items()}


def _gradient_sync(t: Trainer, last: bool):
    """DDP and FSDP reduce gradients across processes only on the last micro-batch of a step."""
    net = t.train_net
    if hasattr(net, "no_sync"):  # DDP
        return contextlib.nullcontext() if last else net.no_sync()
    if hasattr(net, "set_requires_gradient_sync"):  # FSDP2
        net.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def train_step(t: Trainer, batch: dict, step: int, stop=None) -> tuple[float, object, bool]:
    """One update at `step` from `train.grad_accum` micro-batches of this process's shard of the
    global batch; returns (the loss averaged over processes, the gradient norm before clipping or None
    without train.grad_clip, rank 0's answer to `stop()` (asked once the step's work is queued; e.g.
    out of time) on every process), read from the device in one transfer after one collective: the
    step's only host sync. The update is that of the whole global batch at once: the same draws,
    each micro-batch's mean loss weighted by its share."""
    cfg, tr = t.cfg, t.cfg.train
    g = step_generator(tr.seed, step, 2)
    shape = (cfg.model.in_channels, cfg.data.frames + cfg.data.image_frames, cfg.data.size, cfg.data.size)  # c f h w
    time = torch.rand(tr.batch_size, generator=g, dtype=torch.float64)  # the global batch's: a few scalars
    keep = torch.rand(tr.batch_size, generator=g) >= tr.cond_drop_prob  # classifier-free dropout
    per = tr.batch_size // t.world
    micro = per // tr.grad_accum
    if batch["video"].shape[1:] != shape:
        raise RuntimeError(f"data gave clips of shape {tuple(batch['video'].shape[1:])}, expected {shape}")
    t.opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=t.device)
    for i in range(tr.grad_accum):
        rows = slice(i * micro, (i + 1) * micro)  # of this process's batch
        shard = slice(t.rank * per + rows.start, t.rank * per + rows.stop)  # of the global draws
        part = _rows(batch, rows)
        eps = sample_noise(tr.seed, step, shard.start, micro, shape, t.device)  # (micro, c, f, h, w)
        with _gradient_sync(t, last=i == tr.grad_accum - 1):
            cond = _condition(t, part, keep[shard])
            with torch.autocast(t.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
                loss = (
                    t.loss_fn(t.denoiser, part["video"].to(t.device), cond, t=time[shard].to(t.device), eps=eps).mean()
                    / tr.grad_accum
                )
            (t.scaler.scale(loss) if t.scaler is not None else loss).backward()
        total += loss.detach()
    grad_norm = _update(t)
    if t.power is not None:
        t.power.update(t.net, step)
    else:
        ema_update(t.ema, t.net, ema_decay(step, tr.ema_decay))
    loss, stopping = distributed.mean_and_flag_from_rank0(total, t.rank == 0 and stop is not None and stop())
    parts = [loss, stopping] + ([grad_norm.float().to(loss.device)] if grad_norm is not None else [])
    values = torch.stack(parts).tolist()  # one host sync
    return values[0], values[2] if grad_norm is not None else None, bool(values[1])
