"""What the fast samplers buy: FVD against evaluations for every sampler, on a model trained on the
built-in moving shapes at 16 frames (so that FVD applies), with the same seeds for every sampler and
a second seed set to show the noise. Also the progressively distilled student at 8 and 4 steps.

    python -m experiments.sampler_quality --run runs/sampler-quality [--minutes 20] [--num 256] [--seeds 0,1]

Each stage is cached in the run folder (the teacher run, the distillation rounds, the real clips'
I3D features, each sampler's result in results.json), so an interrupted run continues. It writes
results.json, a table on stdout (FVD per seed set, network evaluations and seconds per sample) and
fvd_vs_evaluations.png. `--quick` shrinks everything to check that the bench runs (minutes, not hours).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import matmul_peak
from experiments.common import real_features, train_once
from experiments.plots import draw_series, save_panels
from vidiff.diffusion.sampling import sampler_spec
from vidiff.metrics.fvd import extract_i3d_features, fvd
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train.distill import distill

# (label, sampler, steps, options): the paper's PC sampler (the reference) first, then the fast ones
SAMPLERS = [
    ("pc 256", "pc", 256, {}),
    ("dpm++ 2m 10", "dpmpp-2m", 10, {}),
    ("dpm++ 2m 15", "dpmpp-2m", 15, {}),
    ("dpm++ 2m 20", "dpmpp-2m", 20, {}),
    ("dpm++ 2m 25", "dpmpp-2m", 25, {}),
    ("ddim 25", "ddim", 25, {}),
    ("ddim 50", "ddim", 50, {}),
    ("ddim 100", "ddim", 100, {}),
    ("dpm++ 2m sde 20", "dpmpp-2m-sde", 20, {}),
    ("dpm++ 2m sde 25", "dpmpp-2m-sde", 25, {}),
    ("ancestral 256", "ancestral", 256, {"gamma": 0.1}),
    ("ddim 8", "ddim", 8, {}),
    ("ddim 4", "ddim", 4, {}),
]  # the teacher at the students' step counts
STUDENTS = [("distilled 8", 8), ("distilled 4", 4)]


def teacher(run: Path, args) -> Path:
    """The teacher's run folder: --teacher, or one trained at 16 frames for --minutes (once)."""
    if args.teacher:
        return Path(args.teacher)
    cfg = get_preset(args.preset).override(
        [
            "data.frames=16",
            f"train.max_minutes={args.minutes}",
            "train.steps=1000000",
            "train.num_samples=0",
            "train.save_every=500",
            *args.set,
        ]
    )
    return train_once(cfg, run / "teacher")


def measure(model: VideoDiffusion, sampler: str, steps: int, options: dict, num: int, seed: int, real, args) -> dict:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    videos = model.sample(
        num, frames=16, sampler=sampler, steps=steps, options=options, seed=seed * 100_000, batch_size=args.batch
    )
    sync()
    seconds = (time.perf_counter() - t) / num
    call = model.sampling(sampler=sampler, steps=steps, options=options)
    feats = extract_i3d_features(videos, batch_size=args.i3d_batch, progress=False)
    return {"fvd": fvd(real, feats), "evaluations": call.evaluations, "seconds_per_sample": seconds}


def distilled(run: Path, teacher_run: Path, args, device) -> dict:
    """The teacher progressively distilled to 8 DDIM steps (--from-steps → … → 8), then to 4."""
    distill(
        teacher_run,
        run / "student8",
        from_steps=args.from_steps,
        to_steps=8,
        steps_per_round=args.steps_per_round,
        overrides=["train.num_samples=0"],
    )
    distill(
        run / "student8",
        run / "student4",
        from_steps=8,
        to_steps=4,
        steps_per_round=args.steps_per_round,
        overrides=["train.num_samples=0"],
    )
    return {
        "distilled 8": VideoDiffusion.from_pretrained(run / "student8", device=device),
        "distilled 4": VideoDiffusion.from_pretrained(run / "student4", device=device),
    }


def plot(results: dict, path: Path) -> None:
    """FVD against network evaluations (log scale): a curve per sampler family, a dot per seed set."""
    families: dict = {}
    for label, runs in results.items():
        families.setdefault(label.rsplit(" ", 1)[0], []).extend((r["evaluations"], r["fvd"]) for r in runs)
    save_panels(
        [
            draw_series(
                families,
                "network evaluations per sample (log)",
                "FVD (lower is better)",
                log_x=True,
                title="FVD against network evaluations",
            )
        ],
        path,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/sampler-quality")
    p.add_argument("--preset", default="cpu-demo", help="the teacher's preset (trained at 16 frames)")
    p.add_argument("--minutes", type=float, default=20.0, help="teacher training time")
    p.add_argument("--teacher", help="an existing run (trained at 16 frames) instead of training one")
    p.add_argument("--from-steps", type=int, default=256, help="the teacher's DDIM steps distillation starts from")
    p.add_argument("--samplers", help="labels of SAMPLERS to measure (default: all), e.g. 'ddim 50'")
    p.add_argument("--num", type=int, default=256, help="samples per sampler and seed set (and real clips)")
    p.add_argument("--seeds", default="0,1", help="seed sets")
    p.add_argument("--steps-per-round", type=int, default=500, help="distillation steps per halving")
    p.add_argument("--batch", type=int, default=32, help="samples per batch")
    p.add_argument("--i3d-batch", type=int, default=8, help="clips per I3D batch")
    p.add_argument("--set", action="append", default=[], help="teacher config override, e.g. train.batch_size=32")
    p.add_argument("--no-distill", action="store_true", help="compare the samplers only (no students)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the bench runs")
    args = p.parse_args()
    if args.quick:
        args.preset, args.minutes, args.num, args.steps_per_round = "cpu-tiny", 0.2, 16, 4
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    print(
        f"fp32 matmul peak (CPU): {matmul_peak():.0f} GFLOP/s; torch threads {torch.get_num_threads()}; "
        f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher_run = teacher(run, args)
    model = VideoDiffusion.from_pretrained(teacher_run, device=device)
    real = real_features(run / f"real_i3d_{args.num}.npy", args.num, 16, model.config.data.size, args.i3d_batch)
    students = {} if args.no_distill else distilled(run, teacher_run, args, device)
    results_path = run / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = args.samplers.split(",") if args.samplers else [s[0] for s in SAMPLERS]
    todo = [(label, model, name, steps, opts) for label, name, steps, opts in SAMPLERS if label in chosen]
    todo += [(label, students[label], "ddim", steps, {}) for label, steps in STUDENTS if label in students]
    for label, m, name, steps, opts in todo:
        sampler_spec(name)
        while len(results.get(label, [])) < len(seeds):
            seed = seeds[len(results.get(label, []))]
            results.setdefault(label, []).append(measure(m, name, steps, opts, args.num, seed, real, args))
            results_path.write_text(json.dumps(results, indent=2))
            r = results[label][-1]
            print(
                f"{label:18s} seed set {seed}: FVD {r['fvd']:8.2f}  {r['evaluations']:4d} evaluations  "
                f"{r['seconds_per_sample']:.3f} s/sample",
                flush=True,
            )
    print(
        f"\n{'sampler':18s} {'FVD':>19s} {'evaluations':>12s} {'s/sample':>9s}   ({args.num} samples, "
        f"{args.num} real clips, 16 frames, seed sets {args.seeds})"
    )
    for label, runs in results.items():
        fvds = " / ".join(f"{r['fvd']:.1f}" for r in runs)
        print(
            f"{label:18s} {fvds:>19s} {runs[0]['evaluations']:12d} "
            f"{np.mean([r['seconds_per_sample'] for r in runs]):9.3f}"
        )
    plot(results, run / "fvd_vs_evaluations.png")
    print(f"wrote {run / 'fvd_vs_evaluations.png'} and {results_path}")


if __name__ == "__main__":
    main()
