"""`vidiff distill`: progressive distillation of a trained model to a few DDIM steps."""

from __future__ import annotations

from vidiff import spread


def register(sub) -> None:
    p = sub.add_parser("distill", help="progressive distillation: halve the sampling steps round by round")
    p.add_argument(
        "--checkpoint", required=True, help="the teacher: a run folder, checkpoint folder or Hub model (hf://org/name)"
    )
    p.add_argument("--out", required=True, help="run folder of the distilled model (earlier rounds in out/rounds/)")
    p.add_argument("--to-steps", type=int, default=8, help="DDIM steps of the distilled model (default 8)")
    p.add_argument("--from-steps", type=int, default=256, help="the teacher's DDIM steps (default 256; to-steps × 2^k)")
    p.add_argument("--steps-per-round", type=int, default=1000, help="training steps of each round")
    p.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="class/text models: distil the output guided at this weight w (recorded in the config)",
    )
    p.add_argument(
        "--data", help="the rounds' training data (sets data.source; default the teacher's; needed for a Hub teacher)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a train.* setting of the rounds, e.g. --set train.lr=1e-4",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> None:
    from vidiff.cli.common import trust_command_line_sources
    from vidiff.train.distill import distill

    overrides = [*args.set, *([f"data.source={args.data}"] if args.data else [])]
    trust_command_line_sources(overrides)
    result = distill(
        args.checkpoint,
        args.out,
        to_steps=args.to_steps,
        from_steps=args.from_steps,
        steps_per_round=args.steps_per_round,
        guidance=args.guidance,
        overrides=overrides,
        progress=not args.quiet,
    )
    if spread.is_main():
        print(
            f"distilled to {result['steps']} DDIM steps in {args.out}; sample with "
            f"`vidiff sample --checkpoint {args.out}`"
        )
