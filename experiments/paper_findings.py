"""The paper's findings, reproduced at small scale on the built-in moving shapes at 16 frames (so that
FVD applies), each with the same seeds and two seed sets to show the noise:

1. joint: joint image-video training — the same model and wall-clock budget with 0, 4 and 8
   independent image frames per video; FVD and KVD (I3D features; the Inception weights FID needs do
   not ship with a package) of unconditional samples.
2. guidance: a class-conditional model sampled at w = 0, 1, 2, 5 — FVD, how often a sample shows the
   requested colour and shape (`describe_video`), and the spread of the samples' I3D features (trace
   of their covariance over the real clips'; it grows with artefacts as well as with diversity).
3. conditioning: video prediction from the first 4 real frames with the unconditional model of 1.
   (0 image frames) — replacement against reconstruction guidance at w_r = 1, 3, 9; FVD of the 12
   generated frames against real frames 5–16, and the seam (last given → first generated frame
   difference over the real one).

    python -m experiments.paper_findings --out runs/paper-findings [--minutes 6] [--num 64] [--real 256]
        [--seeds 0,1] [--only joint,guidance,conditioning] [--sampler dpmpp-2m --steps 20] [--quick]

Every stage is cached in --out (each trained model, the real clips' I3D features, each measurement
in findings.json), so an interrupted run continues where it stopped. Writes findings.json and
joint.png, guidance.png, conditioning.png; prints a table per experiment. About an hour on 2 CPU
cores with the defaults (4 models × --minutes of training, then sampling and I3D).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from experiments import common
from experiments.plots import draw_series, save_panels
from vidiff.data import describe_video
from vidiff.metrics.fvd import extract_i3d_features, fvd, kvd
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.tasks import predict

FRAMES, CONTEXT = 16, 4
JOINT_IMAGES = (0, 4, 8)
WEIGHTS = (0.0, 1.0, 2.0, 5.0)
METHODS = (("replacement", 0.0), ("reconstruction", 1.0), ("reconstruction", 3.0), ("reconstruction", 9.0))
EXPERIMENTS = ("joint", "guidance", "conditioning")
CONTEXT_SEED = 777  # clips the models never saw in training (their data start at seed 0)


def trained(out: Path, name: str, preset: str, overrides: list, args) -> VideoDiffusion:
    """Train `preset` at 16 frames for --minutes into out/name (once: a finished run is reused; an
    unfinished one is started again) and load its EMA weights."""
    cfg = get_preset(preset).override(
        [
            f"data.frames={FRAMES}",
            f"train.max_minutes={args.minutes}",
            "train.steps=1000000",
            "train.num_samples=0",
            "train.save_every=0",
            *overrides,
            *args.set,
        ]
    )
    return VideoDiffusion.from_pretrained(common.train_once(cfg, out / name, progress=not args.quiet))


def i3d(videos: torch.Tensor, args) -> np.ndarray:
    return extract_i3d_features(videos, batch_size=args.i3d_batch, progress=False)


def real_features(out: Path, args, frames: slice = slice(None)) -> np.ndarray:
    return common.real_features(
        out / f"real_i3d_{args.real}_{frames.start or 0}.npy", args.real, FRAMES, 16, args.i3d_batch, frames
    )


def spread(feats: np.ndarray, real: np.ndarray) -> float:
    """Trace of the features' covariance over the real clips' (1 = spread as much as real clips)."""
    return float(np.trace(np.cov(feats, rowvar=False)) / np.trace(np.cov(real, rowvar=False)))


def seam(videos: torch.Tensor, real: torch.Tensor) -> float:
    """Mean squared difference between the last given and the first generated frame, over the real one."""

    def step(v):
        return common.step_mse(v)[:, CONTEXT - 1].mean().item()

    return step(videos) / max(step(real), 1e-8)


def joint(out: Path, args, seed: int, images: int) -> dict:
    model = trained(out, f"joint-{images}", "cpu-demo", [f"data.image_frames={images}"], args)
    videos = model.sample(
        args.num, frames=FRAMES, sampler=args.sampler, steps=args.steps, seed=seed * 100_000, batch_size=args.batch
    )
    feats, real = i3d(videos, args), real_features(out, args)
    steps = json.loads((out / f"joint-{images}" / "finished.json").read_text())["steps"]
    return {"fvd": fvd(real, feats), "kvd": kvd(real, feats)[0], "train_steps": steps}


def guidance(out: Path, args, seed: int, w: float) -> dict:
    model = trained(out, "class", "cpu-demo-class", [], args)
    classes = list(model.config.conditioning.classes)
    labels = [i % len(classes) for i in range(args.num)]
    videos = model.sample(
        args.num,
        frames=FRAMES,
        class_label=labels,
        guidance=w,
        sampler=args.sampler,
        steps=args.steps,
        seed=seed * 100_000,
        batch_size=args.batch,
    )
    colour = shape = 0
    for v, label in zip(videos, labels):
        want_colour, want_shape = classes[label].split()
        got = describe_video(v)
        colour += got["color"] == want_colour
        shape += got["shape"] == want_shape
    feats, real = i3d(videos, args), real_features(out, args)
    return {
        "fvd": fvd(real, feats),
        "feature_spread": spread(feats, real),
        "colour_match": colour / args.num,
        "shape_match": shape / args.num,
    }


def conditioning(out: Path, args, seed: int, method: str, weight: float) -> dict:
    model = trained(out, "joint-0", "cpu-demo", ["data.image_frames=0"], args)
    clips = common.real_clips(args.num, FRAMES, 16, CONTEXT_SEED + seed)
    videos = torch.cat(
        [
            predict(
                model,
                clips[i : i + args.batch, :, :CONTEXT],
                FRAMES,
                method=method,
                reconstruction_weight=weight or None,
                sampler=args.sampler,
                steps=args.steps,
                seed=seed * 100_000 + i,
            )
            for i in range(0, args.num, args.batch)
        ]
    )
    feats = i3d(videos[:, :, CONTEXT:], args)
    return {"fvd": fvd(real_features(out, args, slice(CONTEXT, None)), feats), "seam": seam(videos, clips)}


def conditions(name: str) -> list:
    """(label, x for the plot, series, measure(out, args, seed) -> dict) of one experiment."""
    if name == "joint":
        return [(f"{n} images", n, "joint", lambda o, a, s, n=n: joint(o, a, s, n)) for n in JOINT_IMAGES]
    if name == "guidance":
        return [(f"w={w:g}", w, "guidance", lambda o, a, s, w=w: guidance(o, a, s, w)) for w in WEIGHTS]
    return [
        (
            "replacement" if m == "replacement" else f"reconstruction w_r={w:g}",
            w,
            m,
            lambda o, a, s, m=m, w=w: conditioning(o, a, s, m, w),
        )
        for m, w in METHODS
    ]


def run_experiment(name: str, out: Path, args, results: dict) -> None:
    seeds = [int(s) for s in args.seeds.split(",")]
    table = results.setdefault(name, {})
    for label, _, _, measure in conditions(name):
        runs = table.setdefault(label, [])
        while len(runs) < len(seeds):
            seed = seeds[len(runs)]
            t = time.perf_counter()
            runs.append({"seed_set": seed, **measure(out, args, seed), "seconds": time.perf_counter() - t})
            (out / "findings.json").write_text(json.dumps(results, indent=2))
            print(
                f"{name:12s} {label:26s} seed set {seed}: "
                + "  ".join(f"{k} {v:.4g}" for k, v in runs[-1].items() if k not in ("seed_set", "seconds")),
                flush=True,
            )


PLOTS = {
    "joint": (["fvd", "kvd"], "image frames per video"),
    "guidance": (["fvd", "shape_match", "feature_spread"], "guidance weight w"),
    "conditioning": (["fvd", "seam"], "reconstruction weight w_r (replacement at 0)"),
}


def table(name: str, rows: dict) -> str:
    """A markdown table: a row per condition, a column per measure with each seed set's value."""
    keys = [k for k in next(iter(rows.values()))[0] if k not in ("seed_set", "seconds")]
    lines = [f"| {name} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, runs in rows.items():
        cells = [" / ".join(f"{r[k]:.3g}" for r in runs) for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(name: str, out: Path, results: dict) -> None:
    """Print the experiment's table (each seed set) and write NAME.png, a panel per plotted measure."""
    metrics, x_title = PLOTS[name]
    rows = results.get(name, {})
    print(table(name, rows), flush=True)
    panels = []
    for metric in metrics:
        series: dict = {}
        for label, x, group, _ in conditions(name):
            series.setdefault(group, []).extend((x, r[metric]) for r in rows.get(label, []))
        panels.append(
            draw_series(
                {k: v for k, v in series.items() if v},
                x_title,
                metric,
                size=(600, 420),
                title=f"{name}: {metric} (a dot per seed set; the line joins the means)",
            )
        )
    save_panels(panels, out / f"{name}.png")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/paper-findings")
    p.add_argument("--minutes", type=float, default=6.0, help="training time of each of the 4 models")
    p.add_argument("--num", type=int, default=64, help="samples per condition and seed set")
    p.add_argument("--real", type=int, default=256, help="real clips FVD compares with")
    p.add_argument("--seeds", default="0,1", help="seed sets")
    p.add_argument("--only", default=",".join(EXPERIMENTS), help="experiments to run")
    p.add_argument("--sampler", default="dpmpp-2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=32, help="samples per batch")
    p.add_argument("--i3d-batch", type=int, default=16)
    p.add_argument("--set", action="append", default=[], help="config override for every model")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the bench runs")
    p.add_argument("--quiet", action="store_true", help="no training progress bars")
    args = p.parse_args()
    if args.quick:
        args.minutes, args.num, args.real, args.steps = 0.1, 12, 16, 4
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "findings.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.only.split(","):
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
        run_experiment(name, out, args, results)
        report(name, out, results)
    print(f"wrote {path} and the plots in {out}")


if __name__ == "__main__":
    main()
