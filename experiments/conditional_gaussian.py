"""Conditional sampling on Gaussian data (exact denoiser, exact conditional), and its memory cost.

1. Temporal: x ~ N(μ, Σ) of shape 1×6×2×2 (time correlation 0.95), the first 2 frames known. Mean and
   covariance error of x^b against the true N(μ_{b|a}, Σ_{b|a}) for replacement and reconstruction
   guidance at several w_r, for each sampler.
2. Spatial: a 1×2×4×4 Gaussian observed through 2× area downsampling; error against the exact
   conditional of x given D x, and max |D(x) − y|, for several weights.
3. Peak memory of plain, replacement and guided sampling on a tiny UNet (each in a fresh process:
   ru_maxrss above the baseline after building the model, and the bytes autograd saves for backward).

    OMP_NUM_THREADS=1 python -m experiments.conditional_gaussian [--n 4000] [--steps 128] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.guidance import downsample, reconstruction_guidance, replacement
from vidiff.diffusion.sampling import SAMPLERS, initial_noise, logsnr_grid


def sampler_budget():
    """Every registered sampler with the step divisor that gives it the same network evaluations."""
    return {
        name: (spec.fn, max(1, round(spec.evaluations(logsnr_grid(100), spec.options) / 100)))
        for name, spec in sorted(SAMPLERS.items())
    }


def draw(data, denoise, sampler, steps, n):
    g = torch.Generator().manual_seed(0)
    return sampler(denoise, initial_noise((n, *data.shape), g), logsnr_grid(steps), noise=g)


def errors(x, index, mu, cov, scale):
    xb = x.reshape(x.shape[0], -1)[:, index].double()
    return (xb.mean(0) - mu).abs().max().item(), ((torch.cov(xb.T) - cov).norm() / scale.norm()).item()


def temporal(n, steps, weights):
    data = GaussianData.video(channels=1, frames=6, height=2, width=2, time_corr=0.95)
    x0 = data.sample(1, torch.Generator().manual_seed(1))
    known = torch.zeros(1, 1, 6, 1, 1, dtype=torch.bool)
    known[:, :, :2] = True
    ia = known.expand(1, *data.shape)[0].reshape(-1)
    mu, cov = data.conditional(ia, x0.reshape(-1)[ia])
    print(f"\n## Temporal: 1×6×2×2, time corr 0.95, first 2 frames known, N={n}; errors of x^b vs N(μ_b|a, Σ_b|a)")
    print(f"(prior mean is {(data.mean[~ia] - mu).abs().max():.3f} from μ_b|a; cov err = ‖Ĉ − Σ_b|a‖_F / ‖Σ_b|a‖_F)")
    print(f"{'sampler':10s} {'method':16s} {'mean err':>9s} {'cov err':>8s} {'s':>6s}")
    for name, (sampler, div) in sampler_budget().items():
        methods = [
            ("replacement", lambda: replacement(data.denoise, x0, known, noise=torch.Generator().manual_seed(5)))
        ]
        methods += [
            (
                f"guidance w={w:g}",
                lambda w=w: reconstruction_guidance(
                    data.denoise, x0, known, weight=w, noise=torch.Generator().manual_seed(5)
                ),
            )
            for w in weights
        ]
        for label, make in methods:
            t = time.perf_counter()
            x = draw(data, make(), sampler, steps // div, n)
            assert torch.equal(x[:, :, :2], x0[:, :, :2].expand(n, -1, -1, -1, -1))
            m, c = errors(x, ~ia, mu, cov, cov)
            print(f"{name:10s} {label:16s} {m:9.3f} {c:8.3f} {time.perf_counter() - t:6.1f}")


def spatial(n, steps, weights):
    data = GaussianData.video(channels=1, frames=2, height=4, width=4, time_corr=0.9, space_corr=0.8)
    x0 = data.sample(1, torch.Generator().manual_seed(1))
    y = downsample(x0, (2, 2))
    d = data.mean.numel()
    D = downsample(torch.eye(d).reshape(d, *data.shape), (2, 2)).reshape(d, -1).T.double()
    k = data.cov @ D.T @ torch.linalg.inv(D @ data.cov @ D.T)
    mu = data.mean + k @ (y.reshape(-1).double() - D @ data.mean)
    cov = data.cov - k @ D @ data.cov
    allx = torch.ones(d, dtype=torch.bool)
    print(f"\n## Spatial: 1×2×4×4 observed through 2× area downsampling, N={n}; errors vs x | D x = y")
    print(f"(prior mean is {(data.mean - mu).abs().max():.3f} from the conditional mean; cov err relative to ‖Σ‖)")
    print(f"{'sampler':10s} {'w':>5s} {'max|Dx−y|':>10s} {'mean err':>9s} {'cov err':>8s}")
    for name, (sampler, div) in sampler_budget().items():
        for w in weights:
            x = draw(data, reconstruction_guidance(data.denoise, low_res=y, weight=w), sampler, steps // div, n)
            obs = (downsample(x, (2, 2)) - y).abs().max().item()
            m, c = errors(x, allx, mu, cov, data.cov)
            print(f"{name:10s} {w:5g} {obs:10.4f} {m:9.4f} {c:8.4f}")


def memory_child(mode: str) -> dict:
    """One sampling run on a tiny UNet (batch 8, 8×32×32, 4 DDIM steps) in this process."""
    from vidiff.pipeline import VideoDiffusion
    from vidiff.presets import get_preset
    from vidiff.tasks import _inference

    torch.manual_seed(0)
    model = VideoDiffusion(get_preset("cpu-tiny").override(["data.frames=8", "data.size=32"])).eval()
    shape = (8, 3, 8, 32, 32)
    x_a = torch.rand(shape) * 2 - 1
    known = torch.zeros(1, 1, 8, 1, 1, dtype=torch.bool)
    known[:, :, :4] = True
    saved = [0, 0]  # bytes autograd keeps for backward during one network pass: current, peak

    def net_pass(z, logsnr, **cond):
        saved[0] = 0
        return model.denoiser(z, logsnr, **cond)

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        saved[1] = max(saved[1], saved[0])
        return t

    den = net_pass
    if mode == "replacement":
        den = replacement(den, x_a, known, noise=torch.Generator().manual_seed(1))
    elif mode.startswith("guidance"):
        den = reconstruction_guidance(den, x_a, known, weight=9.0, noise=torch.Generator().manual_seed(1))
    with torch.no_grad():  # warm-up on one frame: library initialisation is not counted
        model.denoiser(torch.zeros(1, 3, 1, 32, 32), torch.zeros(1))
    z = initial_noise(shape, torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == "guidance, weights frozen":
        model.requires_grad_(False)
    with _inference(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        SAMPLERS["ddim"].fn(den, z, logsnr_grid(4))
    return dict(
        mode=mode,
        rss_mib=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
        saved_mib=saved[1] / 2**20,
        seconds=time.perf_counter() - t,
    )


def memory():
    print("\n## Peak memory, tiny UNet (cpu-tiny at 8×32×32), batch 8, 4 DDIM steps, each in a fresh process")
    print(f"{'mode':32s} {'Δ maxrss MiB':>13s} {'saved for backward MiB':>23s} {'s':>6s}")
    for mode in ["plain", "replacement", "guidance", "guidance, weights frozen"]:
        out = subprocess.run(
            [sys.executable, "-m", __spec__.name, "--memory-child", mode],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        )
        if out.returncode:
            print(out.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['mode']:32s} {r['rss_mib']:13.1f} {r['saved_mib']:23.2f} {r['seconds']:6.1f}")
    print(
        "(Δ maxrss: peak resident memory above that after building the model and a one-frame warm-up pass;\n"
        " saved for backward: what autograd keeps during one network pass)"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--steps", type=int, default=128, help="sampling steps (PC: half, each with one corrector)")
    p.add_argument("--weights", default="1,2,3,5,9,50")
    p.add_argument("--spatial-weights", default="1,2,4,8,16,32")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    temporal(args.n, args.steps, [float(w) for w in args.weights.split(",")])
    spatial(args.n, args.steps, [float(w) for w in args.spatial_weights.split(",")])
    if not args.skip_memory:
        memory()


if __name__ == "__main__":
    main()
