"""`vidiff demo` (what `make demo` runs): train the cpu-demo preset on the built-in moving shapes for
a few minutes, then sample a few videos."""

from __future__ import annotations

from pathlib import Path

from vidiff.cli.common import write_videos


def register(sub) -> None:
    p = sub.add_parser("demo", help="train on the built-in dataset for a few minutes, then sample")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--num-videos", "--num", dest="num", type=int, default=8, help="videos sampled at the end")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.presets import get_preset
    from vidiff.train import train

    cfg = get_preset("cpu-demo").override(
        [f"train.max_minutes={args.minutes}", f"train.num_samples={args.num}"] + list(args.set)
    )
    out = Path(args.out)
    print(
        f"vidiff demo: training a {cfg.model.base_channels}-wide video UNet on builtin:moving-shapes "
        f"({cfg.data.frames}×{cfg.data.size}×{cfg.data.size}) for {args.minutes:g} minutes → {out}"
    )
    result = train(cfg, out, resume=args.resume)  # ends by sampling train.num_samples videos from the EMA weights
    loss = "no step left to train" if result["loss"] is None else f"loss {result['loss']:.4f}"
    print(f"\ntrained {result['step']} steps in {result['minutes']:.1f} min ({loss})")
    if result["samples"] is not None:
        write_videos(result["samples"], out / "samples" / "final")
        print(f"videos: {out / 'samples' / 'final'}/sample_*.mp4 and grid.gif; checkpoint: {out}")
    print(f"tensorboard --logdir {out / 'tb'}")
