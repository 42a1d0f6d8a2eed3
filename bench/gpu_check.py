"""`make gpu-check`: what each paper preset costs on this GPU, and whether vidiff's GPU paths work.

    python -m bench.gpu_check [--out runs/gpu-check.json] [--presets ucf101-16x64x64,...]

For each preset: a bf16 training step (the loss, backward and fused AdamW of a real run, at the
preset's frames and size, joint-training images included) at batch 1 and 2 under four recompute
settings (s/step, peak memory; memory per sample = the difference; the largest batch for a 24 / 40 /
80 GB card is DERIVED from these two measurements), and a 20-step DPM-Solver++ sample (time, peak
memory). Then, with the preset's own recompute setting, THROUGHPUT: training at the largest batch
that fits this card (clips/s; TFLOP/s counted from the network's forward + backward FLOPs by torch's
FlopCounterMode; the fraction of the card's dense bf16 peak, named in the report) and sampling at
batch `--sample-batch` (videos/s, DPM-Solver++ 20 steps and PC `--pc-steps`). Then the fused
normalisation's GPU path against the plain one under autocast, `vidiff train` through torchrun with
one process under DDP, FSDP and torch.compile, and with 2 or more GPUs vidiff's training step in 2
processes over NCCL against one process (the same batch per GPU), and lucidrains' video-diffusion-pytorch
0.7.0's training step against vidiff's at a matched configuration (bench/peer.py: skipped with the install
command where it is not installed, or installed offline from --peer-wheels). Writes a JSON report and prints the
tables in the format of docs/training.md ("What fits"). No download: the data is built in and a text
model gets random token embeddings of the text encoder's width.

It needs an NVIDIA GPU and stops with an error without one; `--device cpu --presets cpu-tiny
--skip-launch` runs the same code in fp32 on the CPU to check the script itself (tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidiff.diffusion.loss import DiffusionLoss
from vidiff.diffusion.process import Denoiser
from vidiff.diffusion.sampling import Noise, initial_noise
from vidiff.nn.layers import ResBlock, joint_attention_mask
from vidiff.nn.unet import UNet3D
from vidiff.presets import PRESETS, get_preset
from vidiff.request import resolve_sampling

PAPER = [name for name in PRESETS if not name.startswith("cpu-")]
TEXT_WIDTH, TEXT_TOKENS = 384, 16  # MiniLM-L6's width; a caption's tokens
# (label, model overrides): the preset's own setting is "norms"
RECOMPUTE = [
    ("none", dict(recompute_norms=False, recompute_attention=False, gradient_checkpointing=False)),
    ("norms", dict(recompute_norms=True, recompute_attention=False, gradient_checkpointing=False)),
    ("norms+attention", dict(recompute_norms=True, recompute_attention=True, gradient_checkpointing=False)),
    ("checkpointing", dict(recompute_norms=False, recompute_attention=False, gradient_checkpointing=True)),
]
CARDS_GB = (24, 40, 80)
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, by a part of the
# device's name (the first that matches); --peak-tflops for another card.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def model_config(name: str):
    cfg = get_preset(name)
    if cfg.conditioning.kind == "text":
        cfg = replace(cfg, model=replace(cfg.model, text_dim=TEXT_WIDTH))
    return cfg


def condition(cfg, b: int, device) -> dict:
    cond = {}
    if cfg.model.text_dim:
        cond = {
            "text_tokens": torch.randn(b, TEXT_TOKENS, cfg.model.text_dim, device=device),
            "text_mask": torch.ones(b, TEXT_TOKENS, dtype=torch.bool, device=device),
        }
    if cfg.data.image_frames:
        mask = joint_attention_mask(cfg.data.frames, cfg.data.image_frames, device)
        cond["temporal_mask"] = mask.expand(b, *mask.shape)
    return cond


class Meter:
    """Seconds (synchronised) and peak memory of a block of GPU (or CPU) work."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self.peak_gb = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None  # not measured on the CPU


def train_steps(cfg, net, opt, b: int, device, amp, repeats: int = 2) -> dict:
    """One warm-up step, then `repeats` timed ones: a real run's loss, backward and update."""
    loss_fn = DiffusionLoss(cfg.diffusion.loss_weighting, **cfg.diffusion.schedule())
    denoiser = Denoiser(net, cfg.diffusion.prediction)
    frames = cfg.data.frames + cfg.data.image_frames
    x = torch.randn(b, cfg.model.in_channels, frames, cfg.data.size, cfg.data.size, device=device).clamp(-1, 1)
    cond = condition(cfg, b, device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(denoiser, x, cond).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    step()
    with Meter(device) as m:
        for _ in range(repeats):
            step()
    return {"batch": b, "seconds_per_step": m.seconds / repeats, "peak_gb": m.peak_gb}


def set_recompute(net: UNet3D, options: dict) -> None:
    net.cfg = replace(net.cfg, **options)
    for module in net.modules():
        if isinstance(module, ResBlock):
            module.recompute_norms = options["recompute_norms"]
        elif hasattr(module, "recompute"):
            module.recompute = options["recompute_attention"]


def largest_batches(points: list) -> dict:
    """From (batch 1, batch 2) peaks: memory = fixed + b · per_sample → the largest b per card."""
    one, two = points
    if one["peak_gb"] is None:
        return {}
    per = max(two["peak_gb"] - one["peak_gb"], 1e-6)
    fixed = one["peak_gb"] - per
    return {
        "per_sample_gb": per,
        "fixed_gb": fixed,
        **{f"max_batch_{c}gb": max(0, int((0.95 * c - fixed) / per)) for c in CARDS_GB},
    }


@torch.no_grad()
def sample_cost(cfg, net, device, amp, steps: int = 20, b: int = 1, sampler: str = "dpmpp-2m") -> dict:
    call = resolve_sampling(cfg.sample, cfg.diffusion, sampler=sampler, steps=steps)
    denoiser = call.denoiser(Denoiser(net.eval(), cfg.diffusion.prediction))  # clipped as the pipeline does
    shape = (b, cfg.model.in_channels, cfg.data.frames, cfg.data.size, cfg.data.size)
    noise = Noise(range(b), device=device)
    cond = {k: v for k, v in condition(cfg, b, device).items() if k != "temporal_mask"}
    with Meter(device) as m, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        x = call(denoiser, initial_noise(shape, noise, device=device), noise, cond=cond)
    net.train()
    return {
        "sampler": sampler,
        "steps": steps,
        "batch": b,
        "seconds": m.seconds,
        "videos_per_second": b / m.seconds,
        "peak_gb": m.peak_gb,
        "finite": bool(x.isfinite().all()),
    }


def flops_per_clip(cfg, net, device, amp) -> int:
    """The network's FLOPs for one clip's training forward + backward (nothing recomputed), counted by
    FlopCounterMode at batch 1: the work a step does per clip, whatever its batch."""
    set_recompute(net, RECOMPUTE[0][1])
    loss_fn = DiffusionLoss(cfg.diffusion.loss_weighting, **cfg.diffusion.schedule())
    frames = cfg.data.frames + cfg.data.image_frames
    x = torch.randn(1, cfg.model.in_channels, frames, cfg.data.size, cfg.data.size, device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(Denoiser(net, cfg.diffusion.prediction), x, condition(cfg, 1, device)).mean()
        loss.backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bf16_peak_tflops(device_name: str, given) -> tuple:
    """(the card's dense bf16 peak in TFLOP/s or None, where the number comes from)."""
    if given:
        return given, "--peak-tflops"
    for part, tflops in BF16_PEAK_TFLOPS:
        if part in device_name:
            return tflops, f"NVIDIA data sheet, {part} (dense bf16)"
    return None, f"unknown card {device_name!r}: pass --peak-tflops"


def fitting_batch(fit: dict, device) -> int:
    """The largest batch this card holds by the batch-1/batch-2 memory model, with a 10% margin (2 on
    the CPU, where memory is not measured: the script's own check)."""
    if device.type != "cuda" or "per_sample_gb" not in fit:
        return 2
    card_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
    return max(1, int((0.9 * card_gb - fit["fixed_gb"]) / fit["per_sample_gb"]))


def train_throughput(cfg, net, opt, device, amp, fit: dict, flops: int, peak) -> dict:
    """Training clips/s at the largest batch that fits (smaller by a fifth after each out-of-memory)."""
    set_recompute(net, {k: getattr(cfg.model, k) for k in RECOMPUTE[0][1]})  # the preset's own setting
    b = fitting_batch(fit, device)
    while True:
        try:
            r = train_steps(cfg, net, opt, b, device, amp, repeats=3)
            break
        except torch.OutOfMemoryError:
            if b == 1:
                return {"error": "out of memory at batch 1"}
            torch.cuda.empty_cache()
            b = max(1, b * 4 // 5)
    clips = b / r["seconds_per_step"]
    tflops = flops * clips / 1e12
    return {
        **r,
        "clips_per_second": clips,
        "flops_per_clip": flops,
        "tflops": tflops,
        "fraction_of_peak": tflops / peak if peak else None,
    }


def throughput(cfg, net, opt, device, amp, fit: dict, peak, sample_batch: int, pc_steps: int) -> dict:
    out = {"train": train_throughput(cfg, net, opt, device, amp, fit, flops_per_clip(cfg, net, device, amp), peak)}
    for sampler, steps in (("dpmpp-2m", 20), ("pc", pc_steps)):
        try:
            out[f"{sampler}-{steps}"] = sample_cost(cfg, net, device, amp, steps, sample_batch, sampler)
        except torch.OutOfMemoryError as e:
            out[f"{sampler}-{steps}"] = {"error": f"out of memory: {str(e)[:200]}"}
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return out


def check_preset(name: str, device, amp: bool, args, peak) -> dict:
    cfg = model_config(name)
    with torch.device(device):
        net = UNet3D(cfg.model)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5, fused=True)
    report = {
        "parameters": params,
        "frames": cfg.data.frames,
        "image_frames": cfg.data.image_frames,
        "size": cfg.data.size,
        "train": {},
    }
    for label, options in RECOMPUTE:
        set_recompute(net, options)
        try:
            points = [train_steps(cfg, net, opt, b, device, amp) for b in (1, 2)]
            report["train"][label] = {"points": points, **largest_batches(points)}
        except torch.OutOfMemoryError as e:
            report["train"][label] = {"error": f"out of memory: {str(e)[:200]}"}
        print(
            f"{name:22s} {label:16s} {json.dumps(report['train'][label].get('points', report['train'][label]))}",
            flush=True,
        )
    report["throughput"] = throughput(
        cfg, net, opt, device, amp, report["train"].get("norms", {}), peak, args.sample_batch, args.pc_steps
    )
    print(f"{name:22s} throughput       {json.dumps(report['throughput'])}", flush=True)
    del opt
    report["sample"] = sample_cost(cfg, net, device, amp)
    print(f"{name:22s} sample           {json.dumps(report['sample'])}", flush=True)
    return report


def fused_norm_check(device) -> dict:
    """The recomputed GroupNorm+FiLM+SiLU (ResBlock) against storing it, under bf16 autocast on the
    GPU: same output and gradients up to bf16 rounding."""
    torch.manual_seed(0)
    with torch.device(device):
        block = ResBlock(64, 64, 128)
        x, emb = torch.randn(4, 64, 16, 16, requires_grad=True), torch.randn(4, 128)
    out = {}
    for recompute in (False, True):
        block.recompute_norms = recompute
        x.grad = None
        block.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            y = block(x, emb)
        y.float().square().mean().backward()
        out[recompute] = (y.float(), x.grad.clone(), block.conv1.weight.grad.clone())
    diffs = [((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(out[False], out[True])]
    return {
        "relative_max_diff": {"output": diffs[0], "input_grad": diffs[1], "weight_grad": diffs[2]},
        "ok": max(diffs) < 2e-2,
    }


def launch(tmp: Path, label: str, preset: str, sets: list, timeout: int) -> dict:
    """`torchrun --nproc-per-node 1 -m vidiff.cli train …` on the built-in data: does it run, how fast."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "1",
        "-m",
        "vidiff.cli",
        "train",
        "--preset",
        preset,
        "--data",
        "builtin:moving-shapes",
        "--out",
        str(tmp / label),
        "--steps",
        "20",
        "--set",
        "train.num_samples=0",
        "--set",
        "train.save_every=0",
        "--set",
        "train.log_every=5",
        *sum((["--set", s] for s in sets), []),
    ]
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s", "command": " ".join(cmd[1:])}
    result = {"ok": run.returncode == 0, "seconds": time.perf_counter() - t0, "command": " ".join(cmd[1:])}
    if run.returncode:
        result["error"] = run.stderr[-1500:]
    metrics = tmp / label / "metrics.jsonl"
    if metrics.is_file():
        result["last_loss"] = [json.loads(line) for line in metrics.read_text().splitlines()][-1].get("loss")
    print(f"torchrun {label:10s} {'ok' if result['ok'] else 'FAILED'} {result['seconds']:.0f} s", flush=True)
    return result


SCALING_PRESET = "bair-64x64"


def scaling_child(path: str, per_gpu: int, steps: int, preset: str = SCALING_PRESET) -> None:
    """Under torchrun: vidiff's own training step (DDP, its collectives on each process's GPU over the
    group `spread.init` makes), `per_gpu` clips per GPU, `steps` timed after 3 warm-up steps; rank 0
    writes the result to `path`."""
    import torch.distributed as dist

    from vidiff import spread
    from vidiff.train.setup import build_trainer
    from vidiff.train.step import train_step

    device = spread.local_device()
    spread.init(device)
    cfg = get_preset(preset).override([f"train.batch_size={per_gpu * spread.world()}"])
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    t = build_trainer(cfg, device)
    shape = (cfg.model.in_channels, cfg.data.frames, cfg.data.size, cfg.data.size)
    batch = {
        "video": torch.rand(per_gpu, *shape) * 2 - 1,
        "label": torch.zeros(per_gpu, dtype=torch.long),
        "caption": [""] * per_gpu,
    }
    for step in range(3):
        train_step(t, batch, step)
    sync()
    t0 = time.perf_counter()
    for step in range(3, 3 + steps):
        loss, _, _ = train_step(t, batch, step)  # the loss is read back every step, as training does
    sync()
    seconds = time.perf_counter() - t0
    if spread.is_main():
        Path(path).write_text(
            json.dumps(
                {
                    "processes": spread.world(),
                    "backend": str(dist.get_backend()) if dist.is_initialized() else "none",
                    "batch_per_gpu": per_gpu,
                    "seconds_per_step": seconds / steps,
                    "loss": loss,
                    "clips_per_second": per_gpu * spread.world() * steps / seconds,
                }
            )
        )
    if dist.is_initialized():
        dist.barrier()  # no process leaves the group while another still uses it
    spread.finish()


def nccl_scaling(tmp: Path, per_gpu: int, steps: int, timeout: int) -> dict:
    """2 processes (one GPU each, NCCL) against 1, the same clips per GPU: clips/s and the efficiency
    (2 processes' clips/s over twice one's). Needs 2 GPUs."""
    if torch.cuda.device_count() < 2:
        return {"ok": True, "skipped": f"needs 2 GPUs, {torch.cuda.device_count()} visible"}
    out = {}
    tmp.mkdir(parents=True, exist_ok=True)
    for n in (1, 2):
        path = tmp / f"scaling-{n}.json"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(n),
            "--master-port",
            str(29650 + n),
            __file__,
            "--scaling-child",
            str(path),
            "--per-gpu",
            str(per_gpu),
            "--scaling-steps",
            str(steps),
        ]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"{n} process(es) timed out after {timeout} s"}
        if run.returncode:
            return {"ok": False, "error": f"{n} process(es): {run.stderr[-1500:]}"}
        out[str(n)] = json.loads(path.read_text())
    efficiency = out["2"]["clips_per_second"] / (2 * out["1"]["clips_per_second"])
    print(
        f"NCCL scaling ({SCALING_PRESET}, {per_gpu} clips per GPU): 1 process {out['1']['clips_per_second']:.1f} "
        f"clips/s, 2 processes {out['2']['clips_per_second']:.1f} clips/s, efficiency {efficiency:.0%}",
        flush=True,
    )
    return {"ok": True, "preset": SCALING_PRESET, **out, "efficiency": efficiency}


def throughput_table(presets: dict, peak_source: str) -> str:
    """Training and sampling throughput per preset."""
    rows = [
        f"Training at the largest batch that fits (the preset's recompute setting); TFLOP/s from the network's "
        f"forward + backward FLOPs (FlopCounterMode); peak: {peak_source}.",
        "",
        "| preset | batch | clips/s | TFLOP/s | of bf16 peak | sampling videos/s (batch, sampler) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in presets.items():
        t = r["throughput"]["train"]
        samples = ", ".join(
            f"{v['videos_per_second']:.2f} ({v['batch']}, {k})" if "error" not in v else f"{k}: OOM"
            for k, v in r["throughput"].items()
            if k != "train"
        )
        if "error" in t:
            rows.append(f"| {name} | {t['error']} |||| {samples} |")
            continue
        share = f"{t['fraction_of_peak']:.0%}" if t["fraction_of_peak"] is not None else "?"
        rows.append(
            f"| {name} | {t['batch']} | {t['clips_per_second']:.2f} | {t['tflops']:.3g} | {share} | {samples} |"
        )
    return "\n".join(rows)


def table(presets: dict, device_name: str) -> str:
    """The memory table of docs/training.md: one row per preset and recompute setting."""
    rows = [
        f"Measured on {device_name} (bf16 autocast, fused AdamW, fp32 weights; batch per GPU). Per sample and "
        "fixed: measured at batch 1 and 2; largest batch: derived (fixed + b × per sample ≤ 95% of the card).",
        "",
        "| preset | params | recompute | s/step b=1 | s/step b=2 | GB b=1 | GB/sample "
        "| max batch 24 / 40 / 80 GB | 20-step sample b=1 (s, GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in presets.items():
        s = r["sample"]
        for label, t in r["train"].items():
            if "error" in t:
                rows.append(f"| {name} | {r['parameters'] / 1e6:.0f}M | {label} | {t['error'][:40]} ||||||")
                continue
            one, two = t["points"]
            if "per_sample_gb" not in t:
                rows.append(
                    f"| {name} | {r['parameters'] / 1e6:.1f}M | {label} | {one['seconds_per_step']:.3f} | "
                    f"{two['seconds_per_step']:.3f} | (memory is measured on GPUs) |||||"
                )
                continue
            batches = " / ".join(str(t[f"max_batch_{c}gb"]) for c in CARDS_GB)
            rows.append(
                f"| {name} | {r['parameters'] / 1e6:.0f}M | {label} | {one['seconds_per_step']:.3f} | "
                f"{two['seconds_per_step']:.3f} | {one['peak_gb']:.1f} | {t['per_sample_gb']:.2f} | "
                f"{batches} | {s['seconds']:.1f} s, {s['peak_gb']:.1f} GB |"
            )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check.json")
    p.add_argument("--presets", default=",".join(PAPER))
    p.add_argument("--device", default="cuda", help="cuda; cpu only checks the script itself (fp32)")
    p.add_argument("--skip-launch", action="store_true", help="leave out the torchrun runs")
    p.add_argument(
        "--launch-timeout",
        type=int,
        default=90,
        help="seconds for each torchrun run (3× for torch.compile's: an H200 ran < 2 steps in 75 s)",
    )
    p.add_argument("--sample-batch", type=int, default=64, help="batch of the sampling throughput")
    p.add_argument("--pc-steps", type=int, default=256, help="steps of the PC sampler's throughput")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: known cards by name)")
    p.add_argument("--per-gpu", type=int, default=8, help="clips per GPU in the NCCL scaling check")
    p.add_argument("--scaling-steps", type=int, default=10, help="timed steps of the NCCL scaling check")
    p.add_argument(
        "--peer-wheels",
        default=os.environ.get("VIDIFF_PEER_WHEELS"),
        help="folder of the peer's wheels, installed from when it does not import (bench/peer.py)",
    )
    p.add_argument("--peer-batch", type=int, default=8, help="clips per step of the peer comparison")
    p.add_argument("--peer-frames", type=int, default=16, help="frames of the peer comparison's clips")
    p.add_argument("--peer-size", type=int, default=64, help="frame size of the peer comparison's clips")
    p.add_argument("--scaling-child", help=argparse.SUPPRESS)  # one process of the scaling check
    p.add_argument("--scaling-preset", default=SCALING_PRESET, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scaling_child:
        return scaling_child(args.scaling_child, args.per_gpu, args.scaling_steps, args.scaling_preset)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu-check: no CUDA GPU is visible (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}); run it on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    peak, peak_source = bf16_peak_tflops(name, args.peak_tflops) if device.type == "cuda" else (None, "CPU")
    report = {
        "device": name,
        "torch": torch.__version__,
        "bf16_peak_tflops": peak,
        "peak_source": peak_source,
        "presets": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(report, indent=2))  # noqa: E731  after every stage
    report["fused_norm"] = fused_norm_check(device)
    print(f"fused norm under autocast: {json.dumps(report['fused_norm'])}", flush=True)
    save()
    for preset in args.presets.split(","):
        report["presets"][preset] = check_preset(preset, device, device.type == "cuda", args, peak)
        torch.cuda.empty_cache() if device.type == "cuda" else None
        save()
    from bench.peer import peer_check, summary

    report["peer"] = peer_check(
        device, device.type == "cuda", args.peer_frames, args.peer_size, args.peer_batch, args.peer_wheels
    )
    save()
    if not args.skip_launch:
        tmp = out.parent / "gpu-check-runs"
        report["launch"] = {
            "ddp": launch(tmp, "ddp", "bair-64x64", ["train.batch_size=2", "train.parallel=ddp"], args.launch_timeout),
            "fsdp": launch(
                tmp, "fsdp", "bair-64x64", ["train.batch_size=2", "train.parallel=fsdp"], args.launch_timeout
            ),
            "compile": launch(tmp, "compile", "cpu-demo", ["train.compile=true"], 3 * args.launch_timeout),
            "nccl": nccl_scaling(tmp, args.per_gpu, args.scaling_steps, 3 * args.launch_timeout),
        }
        save()
    print(table(report["presets"], name))
    print()
    print(throughput_table(report["presets"], peak_source))
    print()
    print(f"Peer, the same training step on {name}, one run: {summary(report['peer'])}")
    print(f"wrote {out}")
    failed = [k for k, v in report.get("launch", {}).items() if not v["ok"]] + (
        [] if report["fused_norm"]["ok"] else ["fused_norm"]
    )
    if failed:
        sys.exit(f"gpu-check: FAILED {', '.join(failed)} (details in {out})")


if __name__ == "__main__":
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    main()
