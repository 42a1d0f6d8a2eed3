"""`vidiff train`: train a model (a preset with overrides), or continue a run with --resume."""

from __future__ import annotations

from pathlib import Path

from vidiff import spread
from vidiff.cli.common import add_config_arguments, config_from_args


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (a preset with overrides)")
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, config, logs, samples)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run folder's latest checkpoint with its own configuration; --set may "
        "change train.* and sample.* settings (each change is logged)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.checkpoint import load_config, resolve_checkpoint
    from vidiff.train import train

    base = load_config(resolve_checkpoint(Path(args.out))) if args.resume else None  # a local folder, never the Hub
    cfg = config_from_args(args, base)
    result = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if not spread.is_main():
        return
    if args.resume and result["loss"] is None:
        print(
            f"{args.out} already has {result['step']} steps; --steps {cfg.train.steps} (train.steps) is not more: "
            f"nothing to train"
        )
    else:
        loss = "" if result["loss"] is None else f" (final loss {result['loss']:.4f})"
        print(f"trained {result['step']} steps{loss}; checkpoint in {args.out}")
