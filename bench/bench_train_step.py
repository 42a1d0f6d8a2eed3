"""Training-step speed and memory of the factorized space-time UNet on the CPU (issue: core library).

Reference configuration: 8 frames × 32×32 × 3, batch 4, base width 64, multipliers (1, 2, 4), one res
block per level, spatial + temporal attention at the two lower levels (about 13M parameters).
`--preset cpu-demo` measures the `make demo` model at its own data size instead.

Each variant runs in its own process (so that each reports its own peak memory), one after the
other, `--rounds` times, next to the fp32 matmul peak measured in the same run. It prints seconds per
step (forward + backward + AdamW, median), the step's FLOPs (counted by torch's FlopCounterMode on the
direct algorithm), the achieved GFLOP/s and the process's peak RSS (VmHWM).

    python -m bench.bench_train_step [--threads 2] [--steps 5] [--rounds 1] [--variants fast,direct]

Variants: "fast" (as vidiff trains: upsampling as one transposed convolution, normalisations
recomputed in the backward pass, channels_last, fused AdamW), "lean" (as fast, and the attention
blocks recomputed too: `model.recompute_attention`), "direct" (literal nearest-neighbour
upsampling then the 3×3 convolution, normalisations stored), "nchw" (as direct, in NCHW memory), and
"reference": the most used open
implementation of the paper (lucidrains' video-diffusion-pytorch 0.7.0, Unet3D(dim=64,
dim_mults=(1, 2, 4)), 10.6M parameters, its own GaussianDiffusion loss) at the same input. It is not
a dependency of vidiff; to include it:

    pip install --no-deps --target /tmp/refpkgs video-diffusion-pytorch==0.7.0 einops-exts rotary-embedding-torch
    PYTHONPATH=/tmp/refpkgs python -m bench.bench_train_step --variants reference,fast,direct

(its module imports torchvision for its dataset code only; the bench gives it an empty stand-in.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import types
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import matmul_peak
from vidiff.diffusion.loss import DiffusionLoss
from vidiff.diffusion.process import Denoiser
from vidiff.nn.layers import Upsample
from vidiff.nn.unet import UNet3D, UNetConfig
from vidiff.presets import get_preset

REFERENCE = UNetConfig(
    base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=1, attention_levels=(1, 2), emb_dim=256
)


def ours(cfg: UNetConfig, variant: str):
    """(module, loss function) of our UNet in one of the variants."""
    net = UNet3D(
        replace(
            cfg,
            recompute_norms=variant in ("fast", "lean") and cfg.recompute_norms,
            recompute_attention=variant == "lean" or (variant == "fast" and cfg.recompute_attention),
        )
    )
    for m in net.modules():
        if isinstance(m, Upsample):
            m.fused = variant == "fast"
    net.channels_last = variant != "nchw"
    den, loss_fn = Denoiser(net, "epsilon"), DiffusionLoss()
    return net, lambda x: loss_fn(den, x).mean()


def reference(size: int, frames: int):
    """(module, loss function) of video-diffusion-pytorch's Unet3D at the reference size."""
    stub = types.ModuleType("torchvision")
    stub.transforms, stub.utils = types.ModuleType("torchvision.transforms"), types.ModuleType("torchvision.utils")
    stub.transforms.ToTensor = lambda: None
    sys.modules.update(
        {"torchvision": stub, "torchvision.transforms": stub.transforms, "torchvision.utils": stub.utils}
    )
    from video_diffusion_pytorch import GaussianDiffusion, Unet3D

    net = Unet3D(dim=64, dim_mults=(1, 2, 4))
    diffusion = GaussianDiffusion(net, image_size=size, num_frames=frames, timesteps=1000)
    return net, diffusion


def measure(variant: str, cfg: UNetConfig, steps: int, batch: int, frames: int, size: int) -> dict:
    torch.manual_seed(0)
    net, loss_of = reference(size, frames) if variant == "reference" else ours(cfg, variant)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=variant != "reference")  # as vidiff's trainer
    x = torch.randn(batch, 3, frames, size, size)
    if variant == "reference":
        with FlopCounterMode(display=False) as fc:
            loss_of(x).backward()
        opt.zero_grad(set_to_none=True)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        loss_of(x).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return dict(
        variant=variant,
        sec=sorted(times[1:])[steps // 2],
        flops=fc.get_total_flops() if variant == "reference" else None,
        params=sum(p.numel() for p in net.parameters()),
        rss_mib=peak_rss_mib(),
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux from /proc (VmHWM): getrusage's ru_maxrss would
    carry over the parent's peak at the time of the fork into the child process."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--preset", help="measure this preset's model at its data size (default: the reference)")
    ap.add_argument("--variants", default="fast,direct", help="fast, lean, direct, nchw, reference (see above)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.preset:
        p = get_preset(args.preset)
        cfg, batch, frames, size = p.model, p.train.batch_size, p.data.frames, p.data.size
    else:
        cfg, batch, frames, size = REFERENCE, 4, 8, 32
    if args.child:
        print(json.dumps(measure(args.child, cfg, args.steps, batch, frames, size)))
        return

    peak = matmul_peak()
    print(f"fp32 matmul peak ({args.threads} threads): {peak:.0f} GFLOP/s; input {batch}×3×{frames}×{size}×{size}")
    results = []
    torch.manual_seed(0)
    net, loss_of = ours(cfg, "direct")
    with FlopCounterMode(display=False) as fc:  # what our step computes, counted the direct way
        loss_of(torch.randn(batch, 3, frames, size, size)).backward()
    our_flops = fc.get_total_flops()
    del net, loss_of
    for _ in range(args.rounds):
        for v in args.variants.split(","):
            cmd = [
                sys.executable,
                "-m",
                __spec__.name,
                "--child",
                v,
                "--threads",
                str(args.threads),
                "--steps",
                str(args.steps),
            ]
            if args.preset:
                cmd += ["--preset", args.preset]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            results.append(r)
            flops = r["flops"] or our_flops
            print(
                f"{v:10s} params {r['params'] / 1e6:5.2f}M  step {r['sec']:.3f} s  {flops / 1e9:.0f} GFLOP/step  "
                f"{flops / r['sec'] / 1e9:.0f} GFLOP/s ({100 * flops / r['sec'] / 1e9 / peak:.0f}% of peak)  "
                f"peak RSS {r['rss_mib']:.0f} MiB",
                flush=True,
            )
    secs, rss = {}, {}
    for r in results:
        secs.setdefault(r["variant"], []).append(r["sec"])
        rss.setdefault(r["variant"], []).append(r["rss_mib"])
    if "reference" in secs:

        def median(xs):
            return sorted(xs)[len(xs) // 2]

        ref = secs["reference"]
        for v in secs:
            if v != "reference":
                print(
                    f"{v}: {min(ref) / min(secs[v]):.2f}× the reference's steps per second (best of rounds), "
                    f"{median(ref) / median(secs[v]):.2f}× (median of rounds); peak RSS "
                    f"{100 * median(rss[v]) / median(rss['reference']):.0f}% of the reference's"
                )
    print(f"fp32 matmul peak after: {matmul_peak():.0f} GFLOP/s")


if __name__ == "__main__":
    main()
