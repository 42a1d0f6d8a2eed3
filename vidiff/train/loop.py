"""The training loop: set up (or resume) a run folder, then steps, logs, checkpoints, samples and
periodic FVD until `train.steps` or `train.max_minutes`."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from vidiff import spread
from vidiff.checkpoint import has_checkpoints, load_config, load_json, resolve_checkpoint
from vidiff.config import Config, ConfigError
from vidiff.errors import VidiffError
from vidiff.io.files import RunLockedError, atomic_write, run_lock
from vidiff.train import distributed
from vidiff.train.callbacks import MetricsLog, PeriodicFVD, save_sample_grid
from vidiff.train.loader import build_loader, num_workers
from vidiff.train.setup import (
    Trainer,
    build_data,
    build_trainer,
    derive_config,
    diverged,
    ema_model,
    resume_config,
    save_snapshot,
    save_state,
    snapshot_every,
    with_images,
)
from vidiff.train.step import train_step
from vidiff.train.tracking import open_tracker

log = logging.getLogger("vidiff.train")


def _start(cfg: Config, out_dir: Path, resume: bool):
    """(the run's configuration, its start step, the checkpoint to resume from or None)."""
    if not resume:
        if has_checkpoints(out_dir):
            raise ConfigError(
                f"run folder {str(out_dir)!r} already holds checkpoints: pass --resume to continue "
                f"it, or choose another --out"
            )
        return cfg, 0, None
    ck = resolve_checkpoint(out_dir)
    return resume_config(load_config(ck), cfg), load_json(ck / "state.json")["step"], ck


class _Run:
    """Rank 0's outputs of a run: the log, its trackers (TensorBoard, W&B), sample grids and periodic FVD."""

    def __init__(self, t: Trainer, out_dir: Path, start_step: int, tracker, grid_request: dict):
        self.t, self.out_dir, self.main = t, out_dir, t.rank == 0
        self.metrics = MetricsLog(out_dir, start_step) if self.main else None
        self.tracker = tracker
        self.fvd = PeriodicFVD(t.cfg)
        self.grid_request = grid_request

    def log_step(self, step: int, loss: float, grad_norm) -> None:
        if not self.main:
            return
        lr = self.t.opt.param_groups[0]["lr"]
        self.metrics.log(step, loss=loss, lr=lr)
        if step % self.t.cfg.train.log_every == 0 or step == self.t.cfg.train.steps:
            self.tracker.scalars(
                step, train_loss=loss, train_lr=lr, train_grad_norm=None if grad_norm is None else float(grad_norm)
            )

    def sample(self, step: int, progress: bool = False):
        if not self.t.cfg.train.num_samples:
            return None
        model = ema_model(self.t)  # every process: a sharded EMA is gathered
        if not self.main:
            return None
        return save_sample_grid(
            model,
            self.out_dir / "samples" / f"step_{step:07d}.gif",
            self.t.cfg.train.num_samples,
            self.grid_request,
            tracker=self.tracker,
            step=step,
            progress=progress,
        )

    def measure_fvd(self, step: int) -> None:
        model = ema_model(self.t)
        if not self.main:
            return
        with spread.alone():  # rank 0 measures by itself while the others wait at the next step
            value = self.fvd(model)
        self.metrics.log(step, fvd=value, fvd_num=self.t.cfg.train.fvd_num)
        self.tracker.scalars(step, eval_fvd=value)

    def close(self) -> None:
        if self.main:
            self.tracker.close()


def _after_step(run: _Run, step: int, out_of_time: bool) -> None:
    tr = run.t.cfg.train
    saving = tr.save_every and step % tr.save_every == 0 and step < tr.steps and not out_of_time
    if saving:
        save_state(run.t, run.out_dir, step)
    snapshot = run.t.power is not None and step < tr.steps and not out_of_time
    if snapshot and (saving or step % snapshot_every(tr) == 0):  # at each checkpoint too: `vidiff ema --step` there
        save_snapshot(run.t, run.out_dir, step)
    if tr.sample_every and step % tr.sample_every == 0 and step < tr.steps:
        run.sample(step)
    if tr.fvd_every and step % tr.fvd_every == 0:
        run.measure_fvd(step)


def _check_finite(t: Trainer, out_dir: Path, step: int, loss: float, grad_norm) -> None:
    """Stop at the first step whose loss or gradient norm is not finite, before anything of it is logged
    or saved. Every process reads the same values (the loss is averaged over them, the norm is of the
    reduced gradient), so all stop together. Under fp16 an infinite gradient is the loss scaler's
    business: it skips that update and lowers its scale."""
    if not math.isfinite(loss):
        raise diverged(out_dir, step, f"its loss is {loss}")
    if grad_norm is not None and t.scaler is None and not math.isfinite(grad_norm):
        raise diverged(out_dir, step, f"its gradient norm is {grad_norm}")


def _loop(t: Trainer, run: _Run, loader, start_step: int, progress: bool) -> tuple[int, Optional[float]]:
    tr = t.cfg.train
    t0 = time.time()
    bar = tqdm(
        total=tr.steps, initial=start_step, desc="training", disable=not (progress and run.main), dynamic_ncols=True
    )
    step, loss = start_step, None
    batches = iter(loader)
    t.net.train()
    limit = 60 * tr.max_minutes

    def out_of_time_on_rank0() -> bool:  # every process learns rank 0's answer with the step's loss
        return limit > 0 and time.time() - t0 > limit

    while step < tr.steps:
        loss, grad_norm, out_of_time = train_step(t, next(batches), step, stop=out_of_time_on_rank0)
        step += 1
        _check_finite(t, run.out_dir, step, loss, grad_norm)
        run.log_step(step, loss, grad_norm)
        if step % tr.log_every == 0 or step == tr.steps:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{t.opt.param_groups[0]['lr']:.1e}")
            if tr.max_minutes > 0:  # the time limit binds first: the bar's total and ETA follow it
                rate = (step - start_step) / max(time.time() - t0, 1e-6)
                bar.total = int(min(tr.steps, max(step + 1, start_step + rate * 60 * tr.max_minutes)))
        bar.update(1)
        _after_step(run, step, out_of_time)
        if out_of_time:
            if run.main:
                log.info("stopping after %.1f minutes (train.max_minutes) at step %d", tr.max_minutes, step)
            break
    bar.close()
    return step, loss


def train(
    cfg: Config, out_dir, *, resume: bool = False, progress: bool = True, device=None, tensorboard: bool = True
) -> dict:
    """Train `cfg` into the run folder `out_dir`. With `resume`, continue from its latest checkpoint:
    the run's saved configuration, with the `train` and `sample` settings of `cfg` that differ from it
    applied (and logged); a change to anything the weights depend on is refused with a clear error. A
    resumed run that already has `train.steps` steps is left as it is (the result's loss is None: no
    step was trained), as is the loss of a new run of 0 steps.
    `train.logger` says where the run is tracked; `tensorboard=False` leaves TensorBoard out."""
    out_dir = Path(out_dir)
    device = torch.device(device) if device else spread.local_device()
    distributed.setup_distributed(device)
    with contextlib.ExitStack() as stack:
        _lock(stack, out_dir, spread.rank())
        return _train(cfg, out_dir, resume, progress, device, tensorboard)


def _open_tracker(cfg: Config, out_dir: Path, start_step: int, tensorboard: bool, rank: int):
    """Rank 0's trackers; every process learns whether they opened (no rank waits for a stopped one)."""
    tracker, error = None, None
    if rank == 0:
        try:
            tracker = open_tracker(cfg, out_dir, start_step, tensorboard)
        except VidiffError as e:
            error = e
    if distributed.flag_from_rank0(error is not None):
        raise error or ConfigError("the run's trackers did not open on rank 0; its log says why")
    return tracker


def _lock(stack: contextlib.ExitStack, out_dir: Path, rank: int) -> None:
    """One writer per run folder: rank 0 holds its lock, and every process learns at once whether it
    got it (so no rank waits for a process that has already stopped)."""
    error = None
    if rank == 0:
        try:
            stack.enter_context(run_lock(out_dir))
        except VidiffError as e:
            error = e
    if distributed.flag_from_rank0(error is not None):
        raise error or RunLockedError(f"run folder {str(out_dir)!r} is not available; rank 0 says why")


def _train(cfg: Config, out_dir: Path, resume: bool, progress: bool, device: torch.device, tensorboard: bool) -> dict:
    rank, world = spread.rank(), spread.world()
    cfg, start_step, ck = _start(cfg, out_dir, resume)
    tr = cfg.train
    if resume and start_step >= tr.steps:  # the run is left as it is: no save, no samples
        return {"run_dir": str(out_dir), "step": start_step, "loss": None, "minutes": 0.0, "samples": None}
    if tr.batch_size % (world * tr.grad_accum):
        raise ConfigError(
            f"train.batch_size={tr.batch_size} (the global batch) must be divisible by the number of "
            f"processes ({world}) × train.grad_accum ({tr.grad_accum})"
        )
    data = build_data(cfg)
    cfg = derive_config(cfg, data)
    grid_items = [{k: v for k, v in data[i % len(data)].items() if k != "video"} for i in range(cfg.train.num_samples)]
    tracker = _open_tracker(cfg, out_dir, start_step, tensorboard, rank)
    t = build_trainer(cfg, device, start_step, ck)
    if rank == 0:
        atomic_write(out_dir / "config.json", cfg.to_json())
        log.info(
            "training %s parameters on %s into %s: batch %d = %d per process × %d accumulation step%s × %d "
            "process%s (%s)",
            f"{sum(p.numel() for p in t.net.parameters()):,}",
            device,
            out_dir,
            tr.batch_size,
            tr.batch_size // (world * tr.grad_accum),
            tr.grad_accum,
            "s" if tr.grad_accum > 1 else "",
            world,
            "es" if world > 1 else "",
            t.parallel,
        )
    run = _Run(t, out_dir, start_step, tracker, t.model.conditioning.like(grid_items))
    workers, why = num_workers(cfg.data.num_workers, data, spread.local_world(), device.type)
    if rank == 0:
        log.info("reading the data with %d loader worker%s (%s)", workers, "" if workers == 1 else "s", why)
    loader = build_loader(
        with_images(data, cfg), cfg.train.batch_size, cfg.train.seed, start_step, rank, world, workers
    )
    t0 = time.time()
    try:  # a run that stops (diverged, interrupted) still closes its trackers: their last values are kept
        step, loss = _loop(t, run, loader, start_step, progress)
        save_state(t, out_dir, step)
        save_snapshot(t, out_dir, step)  # the last step's profiles always: `vidiff ema` reconstructs there
        videos = run.sample(step, progress=progress)
    finally:
        run.close()
    return {
        "run_dir": str(out_dir),
        "step": step,
        "loss": loss,
        "minutes": (time.time() - t0) / 60,
        "samples": videos,
    }  # the final EMA samples (train.num_samples, seed 0) on rank 0, or None
