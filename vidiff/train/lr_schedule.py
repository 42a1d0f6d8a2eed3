"""The learning rate at each step: a linear warm-up, then constant (the paper's), an inverse square
root decay (EDM2, Karras et al. 2024, eq. 16) or a cosine decay to zero (Loshchilov & Hutter 2017).

A pure function of the step, so a resumed run continues the schedule exactly (the scheduler is rebuilt
at the checkpoint's step)."""

from __future__ import annotations

import math

from vidiff.config import TrainConfig


def warmup_factor(tr: TrainConfig, step: int) -> float:
    """min(1, (step + 1)/W): the rate of step 0 is already 1/W of the peak."""
    return min(1.0, (step + 1) / max(1, tr.warmup_steps))


def decay_factor(tr: TrainConfig, step: int) -> float:
    """The decay after the warm-up, 1 during it. inverse_sqrt: 1/√max(step/t_ref, 1), t_ref =
    train.lr_decay_steps or the warm-up's length; cosine: ½(1 + cos π·u) with u = (step − W)/D clamped
    to [0, 1], D = train.lr_decay_steps or the steps after the warm-up."""
    if tr.lr_schedule == "inverse_sqrt":
        t_ref = tr.lr_decay_steps or max(1, tr.warmup_steps)
        return 1.0 / math.sqrt(max(step / t_ref, 1.0))
    if tr.lr_schedule == "cosine":
        length = tr.lr_decay_steps or max(1, tr.steps - tr.warmup_steps)
        u = min(max((step - tr.warmup_steps) / length, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * u))
    return 1.0


def lr_factor(tr: TrainConfig, step: int) -> float:
    """The rate of (0-based) `step` as a fraction of train.lr."""
    return warmup_factor(tr, step) * decay_factor(tr, step)
