"""What the fast samplers buy: FVD against evaluations for every sampler, on a model trained on the
built-in moving shapes at 16 frames (so that FVD applies), with the same seeds for every sampler and
a second seed set to show the noise. Also the progressively distilled student at 8 and 4 steps.

    python bench/sampler_quality.py --run runs/sampler-quality [--minutes 20] [--num 256] [--seeds 0,1]

Each stage is cached in the run folder (the teacher run, the distillation rounds, the real clips'
I3D features, each sampler's result in results.json), so an interrupted run continues. It writes
results.json, a table on stdout (FVD per seed set, network evaluations and seconds per sample) and
fvd_vs_evaluations.png. `--quick` shrinks everything to check that the bench runs (minutes, not hours).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from vidiff.data import MovingShapes
from vidiff.metrics.fvd import extract_i3d_features, fvd
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.sampling import sampler_spec
from vidiff.train import train
from vidiff.train.distill import distill

# (label, sampler, steps, options): the paper's samplers, DDIM, DPM-Solver++, then the students
SAMPLERS = [("ancestral 256", "ancestral", 256, {"gamma": 0.1}), ("pc 256", "pc", 256, {}),
            ("ddim 25", "ddim", 25, {}), ("ddim 50", "ddim", 50, {}), ("ddim 100", "ddim", 100, {}),
            ("dpm++ 2m 10", "dpmpp-2m", 10, {}), ("dpm++ 2m 15", "dpmpp-2m", 15, {}),
            ("dpm++ 2m 20", "dpmpp-2m", 20, {}), ("dpm++ 2m 25", "dpmpp-2m", 25, {}),
            ("dpm++ 2m sde 20", "dpmpp-2m-sde", 20, {}), ("dpm++ 2m sde 25", "dpmpp-2m-sde", 25, {})]
STUDENTS = [("distilled 8", 8), ("distilled 4", 4)]


def peak_gflops() -> float:
    a = torch.randn(2048, 2048)
    a @ a
    t = time.perf_counter()
    for _ in range(5):
        a @ a
    return 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9


def teacher(run: Path, args) -> Path:
    folder = run / "teacher"
    cfg = get_preset(args.preset).override(["data.frames=16", f"train.max_minutes={args.minutes}",
                                            "train.steps=1000000", "train.num_samples=0", "train.save_every=500",
                                            *args.set])
    if not (folder / "checkpoints").is_dir():
        train(cfg, folder, progress=True)
    return folder


def real_features(run: Path, num: int, frames: int, size: int, batch: int) -> np.ndarray:
    path = run / f"real_i3d_{num}.npy"
    if not path.is_file():
        data = MovingShapes(num_videos=num, frames=frames, size=size, seed=4242)  # clips not seen in training
        np.save(path, extract_i3d_features(torch.stack([data[i]["video"] for i in range(num)]), batch_size=batch,
                                           progress=True))
    return np.load(path)


def measure(model: VideoDiffusion, sampler: str, steps: int, options: dict, num: int, seed: int, real,
            args) -> dict:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    videos = model.sample(num, frames=16, sampler=sampler, steps=steps, options=options, seed=seed * 100_000,
                          batch_size=args.batch)
    sync()
    seconds = (time.perf_counter() - t) / num
    call = model.sampling(sampler=sampler, steps=steps, options=options)
    feats = extract_i3d_features(videos, batch_size=args.i3d_batch, progress=False)
    return {"fvd": fvd(real, feats), "evaluations": call.evaluations, "seconds_per_sample": seconds}


def plot(results: dict, path: Path) -> None:
    """FVD against network evaluations (log scale), one mark per sampler and seed set (Pillow only)."""
    from PIL import Image, ImageDraw
    w, h, pad = 900, 560, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pts = [(r["evaluations"], r["fvd"], label) for label, runs in results.items() for r in runs]
    xs, ys = [math.log10(p[0]) for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs) - 0.1, max(xs) + 0.1, 0.0, max(ys) * 1.1

    def at(x, y):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    d.line([at(x0, y0), at(x1, y0)], fill="black")
    d.line([at(x0, y0), at(x0, y1)], fill="black")
    for e in (1, 10, 100, 1000):
        if x0 <= math.log10(e) <= x1:
            x, y = at(math.log10(e), y0)
            d.line([(x, y), (x, y + 5)], fill="black")
            d.text((x - 10, y + 8), str(e), fill="black")
    for f in np.linspace(0, y1, 5):
        x, y = at(x0, f)
        d.text((x - 55, y - 6), f"{f:.0f}", fill="black")
    d.text((w // 2 - 120, h - 30), "network evaluations per sample (log)", fill="black")
    d.text((10, 10), "FVD (lower is better)", fill="black")
    labelled = set()
    for (_, f, label), lx in zip(pts, xs):
        x, y = at(lx, f)
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill="navy")
        if label not in labelled:  # one label per sampler, beside its first seed set
            d.text((x + 6, y - 6), label, fill="gray")
            labelled.add(label)
    img.save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/sampler-quality")
    p.add_argument("--preset", default="cpu-demo", help="the teacher's preset (trained at 16 frames)")
    p.add_argument("--minutes", type=float, default=20.0, help="teacher training time")
    p.add_argument("--num", type=int, default=256, help="samples per sampler and seed set (and real clips)")
    p.add_argument("--seeds", default="0,1", help="seed sets")
    p.add_argument("--steps-per-round", type=int, default=500, help="distillation steps per halving")
    p.add_argument("--batch", type=int, default=32, help="samples per batch")
    p.add_argument("--i3d-batch", type=int, default=8, help="clips per I3D batch")
    p.add_argument("--set", action="append", default=[], help="teacher config override, e.g. train.batch_size=32")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the bench runs")
    args = p.parse_args()
    if args.quick:
        args.preset, args.minutes, args.num, args.steps_per_round = "cpu-tiny", 0.2, 16, 4
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    print(f"fp32 matmul peak (CPU): {peak_gflops():.0f} GFLOP/s; torch threads {torch.get_num_threads()}; "
          f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = VideoDiffusion.from_pretrained(teacher(run, args), device=device)
    real = real_features(run, args.num, 16, model.config.data.size, args.i3d_batch)
    distill(run / "teacher", run / "student8", to_steps=8, steps_per_round=args.steps_per_round,
            overrides=["train.num_samples=0"])
    distill(run / "student8", run / "student4", from_steps=8, to_steps=4, steps_per_round=args.steps_per_round,
            overrides=["train.num_samples=0"])
    students = {"distilled 8": VideoDiffusion.from_pretrained(run / "student8", device=device),
                "distilled 4": VideoDiffusion.from_pretrained(run / "student4", device=device)}
    results_path = run / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    todo = [(label, model, name, steps, opts) for label, name, steps, opts in SAMPLERS]
    todo += [(label, students[label], "ddim", steps, {}) for label, steps in STUDENTS]
    for label, m, name, steps, opts in todo:
        sampler_spec(name)
        while len(results.get(label, [])) < len(seeds):
            seed = seeds[len(results.get(label, []))]
            results.setdefault(label, []).append(measure(m, name, steps, opts, args.num, seed, real, args))
            results_path.write_text(json.dumps(results, indent=2))
            r = results[label][-1]
            print(f"{label:18s} seed set {seed}: FVD {r['fvd']:8.2f}  {r['evaluations']:4d} evaluations  "
                  f"{r['seconds_per_sample']:.3f} s/sample", flush=True)
    print(f"\n{'sampler':18s} {'FVD':>19s} {'evaluations':>12s} {'s/sample':>9s}   ({args.num} samples, "
          f"{args.num} real clips, 16 frames, seed sets {args.seeds})")
    for label, runs in results.items():
        fvds = " / ".join(f"{r['fvd']:.1f}" for r in runs)
        print(f"{label:18s} {fvds:>19s} {runs[0]['evaluations']:12d} "
              f"{np.mean([r['seconds_per_sample'] for r in runs]):9.3f}")
    plot(results, run / "fvd_vs_evaluations.png")
    print(f"wrote {run / 'fvd_vs_evaluations.png'} and {results_path}")


if __name__ == "__main__":
    main()
