"""Training: AdamW with warm-up and an optional decay, gradient clipping, EMA (exponential, or EDM2's
power-function profiles: vidiff.nn.ema), mixed precision on GPUs, atomic
checkpoints with exact resume, TensorBoard and W&B logs, sample videos, and multi-GPU / multi-node data
parallelism through torchrun + DistributedDataParallel.

Randomness is a function of (seed, step): the batch's dataset indices and item seeds, the diffusion
times and noise, and the condition dropout are drawn for the *global* batch from a generator seeded
by the step, and each process takes its shard. So a resumed run repeats an uninterrupted one, and N
processes compute what one process computes with the same global batch.

    setup.py        data, the configuration the data completes, model / EMA / optimiser, saved state
    lr_schedule.py  the learning rate of each step: warm-up, then constant, inverse square root or cosine
    step.py         one training step
    loop.py         the loop and `train()`
    loader.py       batch sampler, joint image-video dataset, collate
    distributed.py  torchrun / DDP helpers
    callbacks.py    metrics log, sample grids, periodic FVD
    tracking.py     TensorBoard / Weights & Biases (train.logger)
    distill.py      progressive distillation: rounds of runs that halve the sampling steps
"""

import sys

from vidiff.train.loader import JointImageVideo, StepBatchSampler, collate
from vidiff.train.loop import train

__all__ = ["JointImageVideo", "StepBatchSampler", "collate", "train"]


class _TrainPackage(type(sys)):
    """`vidiff.train(config)` runs :func:`~vidiff.train.loop.train`: the package is also the top-level
    function (``from vidiff import train``), and its modules stay importable (``vidiff.train.loop``)."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainPackage
