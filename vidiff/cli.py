"""The `vidiff` command line: train, sample, demo, presets, eval, predict, extend, interpolate, upsample.

It only parses arguments and calls the Python API; every default lives in the config and presets.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch


def _user_errors():
    """Errors that report bad input: our own (ConfigError, DataError, CheckpointError,
    TextEncoderError, ConditioningError all derive from these) and the metrics' ValueError / FileNotFoundError."""
    return (ValueError, FileNotFoundError)


# ---- train -------------------------------------------------------------------------------------
def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu-demo", help="named configuration (see `vidiff presets`)")
    p.add_argument("--config", help="a config.json to start from instead of a preset")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config field, e.g. --set model.base_channels=32 (repeatable)")
    p.add_argument("--data", help="builtin:moving-shapes or a folder of videos (sets data.source)")
    p.add_argument("--steps", type=int, help="sets train.steps")
    p.add_argument("--minutes", type=float, help="stop after this many minutes (sets train.max_minutes)")
    p.add_argument("--batch-size", type=int, help="global batch size (sets train.batch_size)")
    p.add_argument("--image-frames", type=int, help="joint image-video training: images per video (data.image_frames)")
    p.add_argument("--conditioning", choices=["none", "class", "text"], help="sets train.conditioning")
    p.add_argument("--text-encoder", help="local Hugging Face encoder folder (sets train.text_encoder)")
    p.add_argument("--skip-bad-files", action="store_true", help="log and skip unreadable videos")


def config_from_args(args):
    from .config import Config
    from .presets import get_preset
    cfg = Config.from_dict(json.loads(Path(args.config).read_text())) if args.config else get_preset(args.preset)
    sets = list(args.set)
    for flag, key in [("data", "data.source"), ("steps", "train.steps"), ("minutes", "train.max_minutes"),
                      ("batch_size", "train.batch_size"), ("image_frames", "data.image_frames"),
                      ("conditioning", "train.conditioning"), ("text_encoder", "train.text_encoder")]:
        if getattr(args, flag, None) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    if getattr(args, "skip_bad_files", False):
        sets.append("data.skip_bad_files=true")
    return cfg.override(sets)


def cmd_train(args):
    from .train import train
    cfg = config_from_args(args)
    result = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        print(f"trained {result['step']} steps (final loss {result['loss']:.4f}); checkpoint in {args.out}")


# ---- sample ------------------------------------------------------------------------------------
def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or save_pretrained folder")
    p.add_argument("--num", type=int, default=4, help="number of videos")
    p.add_argument("--sampler", choices=["ancestral", "pc", "ddim"])
    p.add_argument("--steps", type=int, help="sampling steps")
    p.add_argument("--gamma", type=float, help="ancestral variance interpolation γ")
    p.add_argument("--seed", type=int, default=0, help="video i uses seed + i")
    p.add_argument("--prompt", help="text prompt (text-conditional models)")
    p.add_argument("--class", dest="class_label", type=int, help="class index (class-conditional models)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight w")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--out", required=True, help="output folder")


def write_videos(videos: torch.Tensor, out: Path, fps: int = 8, prefix: str = "sample") -> list:
    """Each video as MP4 and GIF, a grid GIF of all (enlarged with nearest neighbours to at least
    256 px wide, so that small videos can be seen), every frame of every video in one PNG
    (`frames.png`, a row per video), and the raw tensor (safetensors)."""
    from safetensors.torch import save_file

    from .videoio import make_grid, write_filmstrip, write_gif, write_mp4
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, v in enumerate(videos):
        write_mp4(out / f"{prefix}_{i:03d}.mp4", v, fps=fps)
        write_gif(out / f"{prefix}_{i:03d}.gif", v, fps=fps)
        paths.append(out / f"{prefix}_{i:03d}.mp4")
    grid = make_grid(videos, nrow=min(len(videos), 4))  # c f H W
    scale = max(1, 256 // grid.shape[-1])
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=(1, scale, scale), mode="nearest")[0]
    write_gif(out / "grid.gif", grid, fps=fps)
    write_filmstrip(out / "frames.png", videos)
    save_file({"videos": videos.contiguous()}, str(out / f"{prefix}s.safetensors"),
              metadata={"layout": "b c f h w", "range": "[-1, 1]"})
    return paths


def load_model(args):
    from .pipeline import VideoDiffusion
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return VideoDiffusion.from_pretrained(args.checkpoint, use_ema=not args.no_ema, device=device)


def cmd_sample(args):
    model = load_model(args)
    videos = model.sample(args.num, frames=args.frames, sampler=args.sampler, steps=args.steps, gamma=args.gamma,
                          guidance=args.guidance, prompt=args.prompt, class_label=args.class_label, seed=args.seed,
                          batch_size=args.batch_size, progress=True)
    write_videos(videos, Path(args.out), fps=args.fps)
    print(f"wrote {len(videos)} videos ({tuple(videos.shape[1:])}) to {args.out}: sample_*.mp4, sample_*.gif, "
          f"grid.gif, samples.safetensors")


# ---- presets, demo -----------------------------------------------------------------------------
def cmd_presets(args):
    from .presets import DESCRIPTIONS, PRESETS
    from .text import text_encoder_dim
    from .unet import UNet3D
    print(f"{'preset':22s} {'params':>9s}  {'input':>12s}  description")
    for name, cfg in PRESETS.items():
        model = cfg.model
        if cfg.train.conditioning == "text" and not model.text_dim:  # counted with the configured encoder's tokens
            model = replace(model, text_dim=text_encoder_dim(cfg.train.text_encoder or None))
        with torch.device("meta"):
            n = sum(p.numel() for p in UNet3D(model).parameters())
        shape = f"{cfg.data.frames}x{cfg.data.size}x{cfg.data.size}"
        print(f"{name:22s} {n / 1e6:8.1f}M  {shape:>12s}  {DESCRIPTIONS.get(name, '')}")


def cmd_demo(args):
    """Train the cpu-demo preset on the built-in moving shapes, then sample a few videos."""
    from .presets import get_preset
    from .train import train
    cfg = get_preset("cpu-demo").override([f"train.max_minutes={args.minutes}", f"train.num_samples={args.num}"]
                                          + list(args.set))
    out = Path(args.out)
    print(f"vidiff demo: training a {cfg.model.base_channels}-wide video UNet on builtin:moving-shapes "
          f"({cfg.data.frames}×{cfg.data.size}×{cfg.data.size}) for {args.minutes:g} minutes → {out}")
    result = train(cfg, out, resume=args.resume)  # ends by sampling train.num_samples videos from the EMA weights
    write_videos(result["samples"], out / "samples" / "final")
    print(f"\ntrained {result['step']} steps in {result['minutes']:.1f} min (loss {result['loss']:.4f})")
    print(f"videos: {out / 'samples' / 'final'}/sample_*.mp4 and grid.gif; checkpoint: {out}")
    print(f"tensorboard --logdir {out / 'tb'}")


def builtin_source(args):
    """`builtin:moving-shapes` as an evaluation source: `num` clips of the eval's frame count, 64×64."""
    def resolve(spec: str):
        from .data import build_dataset
        frames = getattr(args, "num_frames", 16) or 16
        ds = build_dataset(spec, frames=frames, size=64)  # DataError for unknown names and missing folders

        def real_source(num: int) -> torch.Tensor:
            return torch.stack([ds[i]["video"] for i in range(num)])
        real_source.cache_key = f"{spec}:frames={frames}:size=64"
        return real_source
    return resolve


# ---- main --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidiff", description="Video Diffusion Models: train, sample, evaluate")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (a preset with overrides)")
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, config, logs, samples)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample videos from a checkpoint")
    add_sampling_arguments(p)
    p.add_argument("--frames", type=int, help="frames per video (default: as trained)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("presets", help="list the named configurations")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("demo", help="train on the built-in dataset for a few minutes, then sample")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=cmd_demo)

    try:
        from .evaluate import add_eval_arguments, run_eval
        p = sub.add_parser("eval", help="FVD / KVD / FID / IS / KID between real and generated videos")
        add_eval_arguments(p)
        p.set_defaults(func=lambda args: run_eval(args, resolve_source=builtin_source(args)))
    except ImportError:
        pass
    try:
        from .conditional_cli import add_conditional_commands
        add_conditional_commands(sub)
    except ImportError:
        pass
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except _user_errors() as e:
        if args.verbose:
            raise
        print(f"vidiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
