"""The peer of `make gpu-check`: the same training step of lucidrains' video-diffusion-pytorch 0.7.0
(the most used open implementation of the paper) and of vidiff at a matched configuration, on the
same device, one run each: Unet3D(dim=64, dim_mults=(1, 2, 4)) with its own GaussianDiffusion loss
against vidiff's UNet of width 64, multipliers (1, 2, 4) (`bench.bench_train_step.REFERENCE`) with
the ucf101 preset's loss, the same clips (frames × size², batch), the same fused AdamW and gradient
clipping, bf16 autocast on a GPU.

The peer is not a dependency of vidiff. Where it does not import, `--peer-wheels DIR` installs it
from a folder of wheels (no network: a GPU machine often has none) into a temporary folder; made
where PyPI is reachable with

    pip download --no-deps -d DIR video-diffusion-pytorch==0.7.0 einops-exts rotary-embedding-torch

Without it the check is skipped with a line giving that command.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
from dataclasses import replace
from typing import Optional

import torch

from bench.bench_train_step import REFERENCE, reference
from vidiff.nn.unet import UNet3D
from vidiff.presets import get_preset

PACKAGES = ("video-diffusion-pytorch==0.7.0", "einops-exts", "rotary-embedding-torch")
DOWNLOAD = f"pip download --no-deps -d WHEELS {' '.join(PACKAGES)}"
INSTALL = f"pip install --no-deps --target /tmp/refpkgs {' '.join(PACKAGES)}"


def find_peer(wheels: Optional[str]) -> Optional[str]:
    """None when video_diffusion_pytorch imports, installed first from the wheels folder `wheels`
    where given and needed; otherwise why it is skipped, with the commands that install it."""
    if importlib.util.find_spec("video_diffusion_pytorch") is not None:
        return None
    if not wheels:
        return (
            f"skipped: video-diffusion-pytorch 0.7.0 is not installed; run `{INSTALL}` and rerun with "
            f"PYTHONPATH=/tmp/refpkgs, or offline: `{DOWNLOAD}` where PyPI is reachable, then --peer-wheels WHEELS"
        )
    target = tempfile.mkdtemp(prefix="vidiff-peer-")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, "--no-deps"]
    run = subprocess.run([*cmd, "--target", target, *PACKAGES], capture_output=True, text=True)
    if run.returncode:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return f"skipped: installing the peer from --peer-wheels {wheels} failed ({last}); make it with `{DOWNLOAD}`"
    sys.path.insert(0, target)
    importlib.invalidate_caches()
    return None


def _timed_steps(step, device: torch.device, repeats: int) -> float:
    """Seconds per step of `step()` after one warm-up step (synchronised on a GPU)."""
    from bench.gpu_check import Meter

    step()
    with Meter(device) as m:
        for _ in range(repeats):
            step()
    return m.seconds / repeats


def peer_step(device: torch.device, amp: bool, frames: int, size: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net, diffusion = reference(size, frames)
    diffusion.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)  # as vidiff's trainer
    x = torch.rand(batch, 3, frames, size, size, device=device)  # the peer takes images in [0, 1]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = diffusion(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    seconds = _timed_steps(step, device, repeats)
    return {
        "model": "video-diffusion-pytorch Unet3D(dim=64, dim_mults=(1, 2, 4))",
        "version": importlib.metadata.version("video-diffusion-pytorch"),
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds_per_step": seconds,
        "clips_per_second": batch / seconds,
    }


def vidiff_step(device: torch.device, amp: bool, frames: int, size: int, batch: int, repeats: int) -> dict:
    from bench.gpu_check import train_steps

    torch.manual_seed(0)
    base = get_preset("ucf101-16x64x64")
    cfg = replace(base, model=REFERENCE, data=replace(base.data, frames=frames, size=size))
    with torch.device(device):
        net = UNet3D(cfg.model)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    seconds = train_steps(cfg, net, opt, batch, device, amp, repeats)["seconds_per_step"]
    return {
        "model": "vidiff UNet3D(base 64, (1, 2, 4), 1 res block, attention at 1/2 and 1/4 size)",
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds_per_step": seconds,
        "clips_per_second": batch / seconds,
    }


def peer_check(device: torch.device, amp: bool, frames: int, size: int, batch: int, wheels=None) -> dict:
    """Both training steps at frames × size², `batch` clips (see the module docstring), or why not."""
    why = find_peer(wheels)
    if why:
        print(f"peer: {why}", flush=True)
        return {"skipped": why}
    out = {"frames": frames, "size": size, "batch": batch, "bf16": amp}
    for name, measure in (("peer", peer_step), ("vidiff", vidiff_step)):
        try:
            out[name] = measure(device, amp, frames, size, batch, repeats=3)
        except torch.OutOfMemoryError as e:
            out[name] = {"error": f"out of memory: {str(e)[:200]}"}
        torch.cuda.empty_cache() if device.type == "cuda" else None
    if "error" not in out["peer"] and "error" not in out["vidiff"]:
        out["speedup"] = out["vidiff"]["clips_per_second"] / out["peer"]["clips_per_second"]
    print(f"peer: {summary(out)}", flush=True)
    return out


def summary(r: dict) -> str:
    """One line: both clips/s and the ratio (the issue's target: vidiff at least 2× the peer)."""
    if "skipped" in r:
        return r["skipped"]
    sides = [
        f"{r[k].get('model', k)}, {r[k]['parameters'] / 1e6:.1f}M: {r[k]['clips_per_second']:.2f} clips/s"
        if "error" not in r[k]
        else f"{k}: {r[k]['error'][:80]}"
        for k in ("peer", "vidiff")
    ]
    ratio = f"; vidiff/peer {r['speedup']:.2f}× (target ≥ 2×)" if "speedup" in r else ""
    return f"{r['batch']} clips of {r['frames']}×{r['size']}×{r['size']}: " + "; ".join(sides) + ratio
