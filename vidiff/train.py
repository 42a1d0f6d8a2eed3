"""Training: AdamW with warm-up, gradient clipping, EMA, mixed precision on GPUs, atomic
checkpoints with exact resume, TensorBoard logs, sample videos, and multi-GPU / multi-node data
parallelism through torchrun + DistributedDataParallel.

Randomness is a function of (seed, step): the batch's dataset indices, the diffusion times and noise,
and the condition dropout are drawn for the *global* batch from a generator seeded by the step, and
each process takes its shard. So a resumed run repeats an uninterrupted one, and N processes compute
what one process computes with the same global batch.
"""
from __future__ import annotations

import base64
import copy
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .checkpoint import (atomic_write_text, load_config, load_json, load_tensors, optimizer_from_tensors,
                         resolve_checkpoint, save_checkpoint)
from .config import Config, ConfigError
from .diffusion import Denoiser, DiffusionLoss
from .layers import joint_attention_mask
from .pipeline import VideoDiffusion

log = logging.getLogger("vidiff.train")


# ---- distributed helpers -----------------------------------------------------------------------
def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup_distributed(device: torch.device) -> None:
    rank, world, _ = dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63))


class StepBatchSampler(Sampler):
    """Yields, for each step from `start`, this process's shard of a global batch of dataset indices
    drawn from (seed, step)."""

    def __init__(self, n: int, batch: int, seed: int, start: int, rank: int, world: int):
        self.n, self.batch, self.seed, self.start, self.rank, self.world = n, batch, seed, start, rank, world

    def __iter__(self):
        step = self.start
        while True:
            idx = torch.randint(self.n, (self.batch,), generator=step_generator(self.seed, step, 1))
            per = self.batch // self.world
            yield idx[self.rank * per:(self.rank + 1) * per].tolist()  # the same shard as the noise
            step += 1

    def __len__(self):
        return 2**31


class JointImageVideo(Dataset):
    """Appends `k` independent images to each video along the frame axis (§3.2): from an image
    dataset, or single frames of other videos of the same dataset."""

    def __init__(self, videos: Dataset, k: int, images: Optional[Dataset] = None):
        self.videos, self.k, self.images = videos, k, images

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        item = dict(self.videos[i])
        src = self.images if self.images is not None else self.videos
        picks = torch.randint(len(src), (self.k,)).tolist()
        frames = []
        for j in picks:
            v = src[j]["video"]  # c f h w
            frames.append(v[:, int(torch.randint(v.shape[1], ()))])
        item["video"] = torch.cat([item["video"], torch.stack(frames, dim=1)], dim=1)  # c (f + k) h w
        return item


def collate(items: list) -> dict:
    return {"video": torch.stack([it["video"] for it in items]),
            "label": torch.tensor([int(it.get("label", -1)) for it in items]),
            "caption": [it.get("caption", "") for it in items]}


# ---- set-up ------------------------------------------------------------------------------------
def build_data(cfg: Config) -> Dataset:
    from .data import build_dataset
    d = cfg.data
    if not d.source:
        raise ConfigError("data.source is empty: pass --data DIR (a folder of videos) or builtin:moving-shapes")
    kw = {"num_videos": d.num_videos} if d.source.startswith("builtin:") else {}
    ds = build_dataset(d.source, frames=d.frames, size=d.size, frame_stride=d.frame_stride, flip=d.flip,
                       skip_bad_files=d.skip_bad_files, seed=cfg.train.seed, **kw)
    return ds


def resolve_config(cfg: Config, dataset: Dataset, text_dim: int = 0) -> Config:
    """Fills in what the data decides: the number of classes, the text embedding width."""
    tr = cfg.train
    model = cfg.model
    if tr.conditioning == "class":
        n = getattr(dataset, "num_classes", 0)
        if not n:
            raise ConfigError("train.conditioning=class but the dataset has no class labels; add labels "
                              "(sub-folders or a captions.csv with a label column) or use conditioning=none")
        model = replace(model, num_classes=n)
    elif tr.conditioning == "text":
        model = replace(model, text_dim=text_dim)
    if model.text_cross_attention and not model.text_dim:
        raise ConfigError("model.text_cross_attention attends to caption tokens: it needs train.conditioning=text "
                          f"(got {tr.conditioning!r}); set conditioning=text or text_cross_attention=false")
    return replace(cfg, model=model)


def _rng_state() -> dict:
    state = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())
                                      for s in state["cuda"]])


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    ema_p = list(ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in net.parameters()], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)


def check_replicas_in_sync(net: torch.nn.Module) -> None:
    """Before saving: every process must hold the same weights."""
    if not dist.is_initialized():
        return
    s = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum().reshape(1)
    all_s = [torch.zeros_like(s) for _ in range(dist.get_world_size())]
    dist.all_gather(all_s, s)
    if any(not torch.allclose(x, all_s[0], rtol=1e-6, atol=1e-6) for x in all_s):
        raise RuntimeError(f"DDP replicas diverged before saving: parameter sums {[x.item() for x in all_s]}")


def save_sample_grid(model: VideoDiffusion, path: Path, cfg: Config, cond_source: Optional[dict] = None,
                     writer=None, step: int = 0, progress: bool = False) -> torch.Tensor:
    from .videoio import make_grid, write_gif
    n = cfg.train.num_samples
    kw = {}
    if model.conditioning == "class":
        kw["class_label"] = [i % model.config.model.num_classes for i in range(n)]
    elif model.conditioning == "text":
        kw["prompt"] = (cond_source or {}).get("prompts", ["a red circle moving right"] * n)[:n]
    videos = model.sample(n, seed=0, progress=progress, **kw)
    grid = make_grid(videos, nrow=min(n, 4))
    write_gif(path, grid)
    if writer is not None:
        writer.add_images("samples/frames", ((grid.permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1), step)
    return videos


# ---- the loop ----------------------------------------------------------------------------------
def train(cfg: Config, out_dir, *, resume: bool = False, progress: bool = True, device=None,
          tensorboard: bool = True) -> dict:
    """Train `cfg` into the run folder `out_dir`. With `resume`, continue from its latest checkpoint
    (the saved configuration is used; `train.steps` and `train.max_minutes` may be raised)."""
    out_dir = Path(out_dir)
    rank, world, local_rank = dist_info()
    if device is None:
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    setup_distributed(device)
    is_main = rank == 0

    start_step, ck = 0, None
    if not resume and any(p.is_dir() and not p.name.endswith(".tmp") for p in (out_dir / "checkpoints").glob("step_*")):
        raise ConfigError(f"run folder {str(out_dir)!r} already holds checkpoints: pass --resume to continue it, "
                          f"or choose another --out")
    if resume:
        ck = resolve_checkpoint(out_dir)
        saved, _ = load_config(ck)
        cfg = replace(saved, train=replace(saved.train, steps=cfg.train.steps, max_minutes=cfg.train.max_minutes))
        start_step = load_json(ck / "state.json")["step"]
    tr = cfg.train
    if tr.batch_size % world:
        raise ConfigError(f"train.batch_size={tr.batch_size} must be divisible by the number of processes ({world})")

    dataset = build_data(cfg)
    encoder = cache = None
    if tr.conditioning == "text":
        from .text import EmbeddingCache, TextEncoder
        encoder = TextEncoder(tr.text_encoder or None, max_length=tr.text_max_length)
        cache = EmbeddingCache(encoder)
    cfg = resolve_config(cfg, dataset, text_dim=encoder.dim if encoder else 0)
    if cfg.data.image_frames:
        images = None
        if cfg.data.image_source:
            from .data import ImageFolder
            images = ImageFolder(cfg.data.image_source, size=cfg.data.size)
        dataset = JointImageVideo(dataset, cfg.data.image_frames, images)

    torch.manual_seed(tr.seed)
    model = VideoDiffusion(cfg).to(device)
    model.classes = list(getattr(dataset, "classes", None) or getattr(getattr(dataset, "videos", None), "classes", [])
                         or []) or None
    model._text_encoder = encoder
    net = model.net
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=tr.lr, betas=(tr.adam_beta1, tr.adam_beta2),
                            weight_decay=tr.weight_decay, fused=device.type in ("cpu", "cuda"))  # one kernel, ~3× faster
    if ck is not None:
        net.load_state_dict(load_tensors(ck / "model.safetensors"))
        ema.load_state_dict(load_tensors(ck / "ema.safetensors"))
        opt.load_state_dict(optimizer_from_tensors(load_tensors(ck / "optimizer.safetensors"),
                                                   load_json(ck / "optimizer.json")))
        _set_rng_state(load_json(ck / "state.json")["rng"])
    for g in opt.param_groups:
        g.setdefault("initial_lr", tr.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tr.warmup_steps)),
                                              last_epoch=start_step - 1)  # linear warm-up, then constant

    amp = tr.mixed_precision
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "no"
    if amp != "no" and device.type != "cuda":
        raise ConfigError(f"train.mixed_precision={amp} needs a GPU; on the CPU use no (bf16 is far slower there)")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    train_net = net
    if world > 1:
        train_net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                              else None)
    if tr.compile:
        train_net = torch.compile(train_net)
    denoiser = Denoiser(train_net, cfg.diffusion.prediction)
    loss_fn = DiffusionLoss(cfg.diffusion.loss_weighting, **cfg.diffusion.schedule())

    local_batch = tr.batch_size // world
    loader = DataLoader(dataset, batch_sampler=StepBatchSampler(len(dataset), tr.batch_size, tr.seed, start_step,
                                                                rank, world),
                        num_workers=cfg.data.num_workers, collate_fn=collate,
                        persistent_workers=cfg.data.num_workers > 0)
    f_total = cfg.data.frames + cfg.data.image_frames
    temporal_mask = joint_attention_mask(cfg.data.frames, cfg.data.image_frames, device) \
        if cfg.data.image_frames else None

    writer = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", cfg.to_json())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out_dir / "tb"))
        log.info("training %s parameters on %s (%d process%s) into %s",
                 f"{sum(p.numel() for p in net.parameters()):,}", device, world, "es" if world > 1 else "", out_dir)

    def save(step):
        check_replicas_in_sync(net)
        if is_main:
            save_checkpoint(out_dir, step, model=net.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(),
                            config={**cfg.to_dict(), **({"classes": model.classes} if model.classes else {})},
                            state={"step": step, "rng": _rng_state()})

    def ema_model() -> VideoDiffusion:
        m = VideoDiffusion(cfg).to(device)
        m.net.load_state_dict(ema.state_dict())
        m._text_encoder = encoder
        return m

    def sample(step, progress=False):
        if not is_main:
            return None
        (out_dir / "samples").mkdir(exist_ok=True)
        return save_sample_grid(ema_model(), out_dir / "samples" / f"step_{step:07d}.gif", cfg, writer=writer,
                                step=step, progress=progress)

    fvd_state = {}

    def measure_fvd(step):
        """FVD of `fvd_num` EMA samples against as many real clips (≥ 9 frames: the model runs on any
        frame count), logged to TensorBoard and metrics.jsonl. Small samples: a trend, not a score."""
        if not is_main:
            return
        from .metrics.fvd import extract_i3d_features, fvd
        frames = max(9, cfg.data.frames)
        if "real" not in fvd_state:
            from .data import build_dataset
            real_ds = build_dataset(cfg.data.source, frames=frames, size=cfg.data.size, seed=tr.seed + 1)
            items = [real_ds[i] for i in range(min(tr.fvd_num, len(real_ds)))]
            fvd_state["real"] = extract_i3d_features(torch.stack([it["video"] for it in items]), progress=False)
            fvd_state["cond"] = {"class": {"class_label": [int(it["label"]) for it in items]},
                                 "text": {"prompt": [it["caption"] for it in items]}}.get(tr.conditioning, {})
        fake = ema_model().sample(len(fvd_state["real"]), frames=frames, seed=tr.seed, **fvd_state["cond"])
        value = fvd(fvd_state["real"], extract_i3d_features(fake, progress=False))
        with open(metrics_path, "a") as f:
            f.write(json.dumps({"step": step, "fvd": value, "fvd_num": tr.fvd_num}) + "\n")
        if writer is not None:
            writer.add_scalar("eval/fvd", value, step)

    metrics_path = out_dir / "metrics.jsonl"
    t0 = time.time()
    bar = tqdm(total=tr.steps, initial=start_step, desc="training", disable=not (progress and is_main),
               dynamic_ncols=True)
    step = start_step
    last_loss = float("nan")
    it = iter(loader)
    net.train()
    while step < tr.steps:
        batch = next(it)
        g = step_generator(tr.seed, step, 2)
        x_global_shape = (tr.batch_size, cfg.model.in_channels, f_total, cfg.data.size, cfg.data.size)
        t = torch.rand(tr.batch_size, generator=g, dtype=torch.float64)
        eps = torch.randn(x_global_shape, generator=g)
        keep = torch.rand(tr.batch_size, generator=g) >= tr.cond_drop_prob
        shard = slice(rank * local_batch, (rank + 1) * local_batch)
        x = batch["video"].to(device)
        if x.shape[1:] != x_global_shape[1:]:
            raise RuntimeError(f"data gave clips of shape {tuple(x.shape[1:])}, expected {x_global_shape[1:]}")
        cond = {}
        if tr.conditioning == "class":
            cond["class_labels"] = torch.where(keep[shard], batch["label"], -1).to(device)  # −1: null class
        elif tr.conditioning == "text":
            missing = [c for c in set(batch["caption"]) if c not in cache]
            if missing:
                cache.add(missing)  # each distinct caption is encoded once
            tokens, mask = cache.get(batch["caption"])
            cond["text_tokens"] = tokens.to(device)
            cond["text_mask"] = (mask & keep[shard, None]).to(device)  # all-False mask: null text
        if temporal_mask is not None:
            cond["temporal_mask"] = temporal_mask
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(denoiser, x, cond, t=t[shard].to(device), eps=eps[shard].to(device)).mean()
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), tr.grad_clip) if tr.grad_clip > 0 else None
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
        ema_update(ema, net, min(tr.ema_decay, (1 + step) / (10 + step)))
        step += 1
        loss_value = loss.detach()
        if world > 1:
            dist.all_reduce(loss_value)
            loss_value /= world
        last_loss = loss_value.item()
        if is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps({"step": step, "loss": last_loss, "lr": opt.param_groups[0]["lr"]}) + "\n")
            if step % tr.log_every == 0 or step == tr.steps:
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
                if tr.max_minutes > 0:  # the time limit binds first: the bar's total and ETA follow it
                    rate = (step - start_step) / max(time.time() - t0, 1e-6)
                    bar.total = int(min(tr.steps, max(step + 1, start_step + rate * 60 * tr.max_minutes)))
                if writer is not None:
                    writer.add_scalar("train/loss", last_loss, step)
                    writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)
                    if grad_norm is not None:
                        writer.add_scalar("train/grad_norm", float(grad_norm), step)
            bar.update(1)
        out_of_time = torch.tensor(float(tr.max_minutes > 0 and time.time() - t0 > 60 * tr.max_minutes))
        if world > 1:
            dist.broadcast(out_of_time, 0)
        if tr.save_every and step % tr.save_every == 0 and step < tr.steps and not out_of_time:
            save(step)
        if tr.sample_every and step % tr.sample_every == 0 and step < tr.steps:
            sample(step)
        if tr.fvd_every and step % tr.fvd_every == 0:
            measure_fvd(step)
        if out_of_time:
            if is_main:
                log.info("stopping after %.1f minutes (train.max_minutes) at step %d", tr.max_minutes, step)
            break
    bar.close()
    save(step)
    videos = sample(step, progress=progress)
    if writer is not None:
        writer.close()
    return {"run_dir": str(out_dir), "step": step, "loss": last_loss, "minutes": (time.time() - t0) / 60,
            "samples": videos}  # the final EMA samples (train.num_samples, seed 0) on rank 0
