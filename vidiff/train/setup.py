"""Setting a run up: the data, the configuration the data completes, the model with its EMA copy,
optimiser, learning-rate schedule and mixed precision, and the training state saved with every
checkpoint (exact resume)."""

from __future__ import annotations

import base64
import copy
import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from vidiff import spread
from vidiff.checkpoint import (
    list_checkpoints,
    load_config,
    load_json,
    load_tensors,
    load_weights,
    optimizer_from_tensors,
    resolve_checkpoint,
    save_checkpoint,
)
from vidiff.conditioning import build_conditioning
from vidiff.config import DERIVED, Config, ConfigError
from vidiff.diffusion.loss import DiffusionLoss, DistillationLoss
from vidiff.diffusion.process import Denoiser
from vidiff.errors import DivergenceError
from vidiff.io.files import save_tensors
from vidiff.nn.ema import CHECKPOINT_FILE, PowerEMA, snapshot_path
from vidiff.pipeline import VideoDiffusion
from vidiff.train import distributed, parallel
from vidiff.train.loader import JointImageVideo
from vidiff.train.lr_schedule import lr_factor

log = logging.getLogger("vidiff.train")
# What a resumed run may change besides the train and sample sections: where the data lives and how
# it is read (and its captions' encodings kept), not what it is.
RESUMABLE = ("data.source", "data.num_workers", "data.skip_bad_files", "conditioning.text_cache_captions")


# ---- data and configuration --------------------------------------------------------------------
def build_data(cfg: Config) -> Dataset:
    """The training clips named by `data.source` (without the images of joint training)."""
    from vidiff.data import dataset_from_config

    if not cfg.data.source:
        raise ConfigError(
            "data.source is empty: pass --data DIR (a folder of videos, prepared shards) or builtin:moving-shapes"
        )
    return dataset_from_config(cfg.data, seed=cfg.train.seed)


def with_images(dataset: Dataset, cfg: Config) -> Dataset:
    """Joint image-video training (§3.2): `data.image_frames` independent images after each video."""
    if not cfg.data.image_frames:
        return dataset
    images = None
    if cfg.data.image_source:
        from vidiff.data import ImageFolder

        images = ImageFolder(cfg.data.image_source, size=cfg.data.size)
    return JointImageVideo(dataset, cfg.data.image_frames, images)


def derive_config(cfg: Config, dataset: Dataset) -> Config:
    """Fill in what the data decides (number of classes, class names, text width). A value already
    in the configuration (a run's config.json) must agree with the data."""
    model_fields, cond_fields = build_conditioning(cfg.conditioning).derive(dataset)
    for section, fields in (("model", model_fields), ("conditioning", cond_fields)):
        for key, value in fields.items():
            have = getattr(getattr(cfg, section), key)
            if have and have != value:
                raise ConfigError(
                    f"{section}.{key}={have!r} in the configuration, but the data gives {value!r}; "
                    f"train on the data the configuration was made for, or start from a preset"
                )
    return replace(cfg, model=replace(cfg.model, **model_fields), conditioning=replace(cfg.conditioning, **cond_fields))


def resume_config(saved: Config, requested: Config) -> Config:
    """The saved configuration of a run with the requested changes to its `train` and `sample`
    sections (and to where its data lives) applied and logged. A change to what the weights are (the
    model, diffusion, conditioning, data shape) cannot be resumed: a clear error names each."""
    old, new = saved.to_dict(), requested.to_dict()
    changed, refused = [], []
    for section, values in old.items():
        for key, before in values.items():
            name, after = f"{section}.{key}", new[section][key]
            if after == before or name in DERIVED:
                continue
            if section in ("train", "sample") or name in RESUMABLE:
                old[section][key] = after
                changed.append(f"{name}: {before!r} → {after!r}")
            else:
                refused.append(f"{name} (run: {before!r}, requested: {after!r})")
    if refused:
        raise ConfigError(
            "cannot resume with a changed " + ", ".join(refused) + ": the run's weights were trained "
            "with its config.json; change only train.* and sample.* settings on --resume, or "
            "start a new run with another --out"
        )
    for line in changed:
        log.info("resuming with %s", line)
    return Config.from_dict(old)


# ---- the training state ------------------------------------------------------------------------
@dataclass
class Trainer:
    """Everything one training step touches."""

    cfg: Config
    model: VideoDiffusion
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    train_net: torch.nn.Module  # what the step calls: the network, its DDP wrapper, sharded, compiled
    denoiser: Denoiser  # around train_net
    loss_fn: Callable  # (denoiser, x, cond, t=, eps=) -> per-example loss: DiffusionLoss or DistillationLoss
    device: torch.device
    rank: int
    world: int
    parallel: str = "ddp"  # or "fsdp"
    amp_dtype: Optional[torch.dtype] = None
    scaler: Optional[torch.amp.GradScaler] = None
    power: Optional[PowerEMA] = None  # train.ema=power: the profiles, the first of them `ema`

    @property
    def net(self) -> torch.nn.Module:
        return self.model.net


def _amp(tr_cfg, device: torch.device) -> Optional[torch.dtype]:
    amp = tr_cfg.mixed_precision
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "no"
    if amp != "no" and device.type != "cuda":
        raise ConfigError(f"train.mixed_precision={amp} needs a GPU; on the CPU use no (bf16 is far slower there)")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def _initial_weights(cfg: Config, net: torch.nn.Module, ema: torch.nn.Module, ck: Optional[Path]) -> None:
    """A resumed run's weights, a distillation student's teacher (its EMA weights), or none."""
    if ck is not None:
        load_weights(net, ck / "model.safetensors")
        load_weights(ema, ck / "ema.safetensors")
    elif cfg.distill.teacher:
        teacher = resolve_checkpoint(cfg.distill.teacher)
        weights = teacher / ("ema.safetensors" if (teacher / "ema.safetensors").is_file() else "model.safetensors")
        load_weights(net, weights)
        load_weights(ema, weights)


def build_trainer(cfg: Config, device: torch.device, start_step: int = 0, ck: Optional[Path] = None) -> Trainer:
    """The trainer of a new run, or of a run resumed from checkpoint `ck` (weights, EMA, optimiser
    and RNG state: exact resume)."""
    rank, world = spread.rank(), spread.world()
    tr = cfg.train
    torch.manual_seed(tr.seed)
    model = VideoDiffusion(cfg).to(device)
    net = model.net
    ema = copy.deepcopy(net).requires_grad_(False)
    _initial_weights(cfg, net, ema, ck)  # before sharding: every process reads the whole files
    choice = parallel.choose(cfg, sum(p.numel() for p in net.parameters()), device)
    power = _power_ema(cfg, net, ema, choice, ck)
    train_net = parallel.wrap(net, ema, choice, device)
    if tr.compile:
        train_net = torch.compile(train_net, mode=compile_mode(device, train_net is net and spread.world() == 1))
    opt = torch.optim.AdamW(
        net.parameters(),
        lr=tr.lr,
        betas=(tr.adam_beta1, tr.adam_beta2),  # fused: ~3× faster
        weight_decay=tr.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    for g in opt.param_groups:
        g.setdefault("initial_lr", tr.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, tr), last_epoch=start_step - 1)
    t = Trainer(
        cfg,
        model,
        ema,
        opt,
        sched,
        train_net,
        Denoiser(train_net, cfg.diffusion.prediction),
        _loss(cfg, device),
        device,
        rank,
        world,
        choice,
        _amp(tr, device),
        torch.amp.GradScaler("cuda") if tr.mixed_precision == "fp16" else None,
        power,
    )
    if ck is not None:
        _load_optimizer(t, ck)
    return t


def _power_ema(cfg: Config, net, ema, choice: str, ck: Optional[Path]) -> Optional[PowerEMA]:
    """train.ema=power: the profiles (the first held by `ema`), resumed from checkpoint `ck`."""
    if cfg.train.ema != "power":
        return None
    if choice == "fsdp":
        raise ConfigError(
            "train.ema=power keeps whole copies of the network, not shards: train it with "
            "train.parallel=ddp, or use train.ema=exponential with train.parallel=fsdp"
        )
    power = PowerEMA(net, cfg.train.ema_sigma_rels, first=ema)
    if ck is not None:
        if not (ck / CHECKPOINT_FILE).is_file():
            raise ConfigError(
                f"checkpoint {str(ck)!r} has no {CHECKPOINT_FILE}: it was trained with "
                f"train.ema={load_config(ck).train.ema}, which cannot change on --resume"
            )
        power.load(ck / CHECKPOINT_FILE)
    return power


def snapshot_every(tr) -> int:
    """How often train.ema=power snapshots its profiles: train.ema_snapshot_every, else train.save_every."""
    return tr.ema_snapshot_every or tr.save_every


def save_snapshot(t: Trainer, out_dir: Path, step: int) -> None:
    """The power-EMA profiles at `step` in the run's ema_snapshots/ folder (rank 0 writes; DDP replicas
    agree). A collective when train.ema=power: every process calls it."""
    if t.power is None:
        return
    if not _finite(t.power.modules):
        raise diverged(out_dir, step, "the EMA profiles are not finite")
    if t.rank != 0:
        return
    snapshot_path(out_dir, step).parent.mkdir(parents=True, exist_ok=True)
    save_tensors(snapshot_path(out_dir, step), t.power.state(), t.power.metadata(step))


def compile_mode(device: torch.device, alone: bool) -> str:
    """torch.compile's mode for the training network: "reduce-overhead" (CUDA graphs: the whole step's
    kernels launched at once, which is what small models are bound by) for one process on a GPU, since
    a step's shapes never change; "default" under DDP or FSDP, whose gradient hooks and collectives
    CUDA graphs do not capture, and on the CPU."""
    mode = "reduce-overhead" if device.type == "cuda" and alone else "default"
    log.info("train.compile: torch.compile(mode=%r) on %s%s", mode, device.type, "" if alone else " (DDP / FSDP)")
    return mode


def _loss(cfg: Config, device: torch.device):
    """The paper's weighted MSE, or for a distillation run the loss against its (guided) teacher."""
    if not cfg.distill.teacher:
        return DiffusionLoss(
            cfg.diffusion.loss_weighting, **cfg.diffusion.schedule(), min_snr_gamma=cfg.diffusion.min_snr_gamma
        )
    teacher = VideoDiffusion.from_pretrained(cfg.distill.teacher, device=device).requires_grad_(False)
    # the first round distils the guided output; later teachers are students that already give it
    w = 0.0 if teacher.config.distill.teacher else cfg.distill.guidance
    return DistillationLoss(teacher.guided(w), cfg.sample.steps, **cfg.diffusion.schedule())


def _rng_state() -> dict:
    state = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def _tensor(b64: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(b64), dtype=np.uint8).copy())


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_tensor(s) for s in state["cuda"]])


def _load_optimizer(t: Trainer, ck: Path) -> None:
    """Optimiser and RNG state of checkpoint `ck`, with the run's (possibly changed) settings."""
    state = optimizer_from_tensors(load_tensors(ck / "optimizer.safetensors"), load_json(ck / "optimizer.json"))
    parallel.load_optimizer_state(t.net, t.opt, state)
    tr = t.cfg.train
    for g in t.opt.param_groups:  # the run's (possibly changed) settings, not the saved ones
        g.update(
            betas=(tr.adam_beta1, tr.adam_beta2),
            weight_decay=tr.weight_decay,
            initial_lr=tr.lr,
            lr=t.sched.get_last_lr()[0],
        )
    _set_rng_state(load_json(ck / "state.json")["rng"])


def diverged(out_dir: Path, step: int, what: str) -> DivergenceError:
    """The error of a run that diverged at `step`, naming its last good checkpoint."""
    done = list_checkpoints(out_dir)
    good = (
        f"its last good checkpoint, {str(done[-1])!r}, is kept: resume from it with a lower train.lr or "
        f"train.grad_clip > 0"
        if done
        else "no checkpoint was saved: start again with a lower train.lr"
    )
    return DivergenceError(f"training diverged at step {step}: {what}; nothing of this step was saved, and {good}")


def _finite(modules) -> bool:
    """Whether every process's weights (its shards, when sharded) are finite: one check per tensor, run
    before a save only."""
    local = [(p.to_local() if hasattr(p, "to_local") else p).detach() for m in modules for p in m.parameters()]
    bad = not bool(torch.stack([torch.isfinite(p).all() for p in local]).all()) if local else False
    return not distributed.any_process(bad)


def save_state(t: Trainer, out_dir: Path, step: int) -> None:
    """A checkpoint of the whole state, gathered from every process (a collective: all call it). Weights
    that are not finite are never saved (a DivergenceError), so they never replace a good checkpoint."""
    if not _finite((t.net, t.ema, *(t.power.modules if t.power else ()))):
        raise diverged(out_dir, step, "the weights are not finite after its update")
    if t.parallel == "ddp":
        distributed.check_replicas_in_sync(t.net)
    model, ema = parallel.full_state_dict(t.net), parallel.full_state_dict(t.ema)
    optimizer = parallel.full_optimizer_state(t.net, t.opt)
    extra = {CHECKPOINT_FILE: (t.power.state(), t.power.metadata(step))} if t.power else None
    if t.rank == 0:
        save_checkpoint(
            out_dir,
            step,
            model=model,
            ema=ema,
            optimizer=optimizer,
            config=t.cfg.to_dict(),
            state={"step": step, "rng": _rng_state()},
            extra=extra,
        )


def ema_model(t: Trainer) -> Optional[VideoDiffusion]:
    """On rank 0, a model with the EMA weights, sharing the trainer's conditioning (and its loaded
    text encoder); None elsewhere. Every process calls it (a sharded EMA is gathered)."""
    state = parallel.full_state_dict(t.ema)
    if t.rank != 0:
        return None
    m = VideoDiffusion(t.cfg).to(t.device)
    m.net.load_state_dict(state)
    m.conditioning = t.model.conditioning
    return m
