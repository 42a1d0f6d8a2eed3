"""`vidiff eval`: FVD / KVD / FID / IS / KID between real and generated videos."""

from __future__ import annotations


def register(sub) -> None:
    from vidiff.evaluate import add_eval_arguments
    from vidiff.protocols import PROTOCOLS
    from vidiff.sampling import SAMPLERS
    from vidiff.tasks import METHODS

    p = sub.add_parser(
        "eval",
        help="FVD / KVD / FID / IS / KID between real and generated videos, or one of the "
        "paper's protocols (--protocol)",
    )
    add_eval_arguments(p)
    g = p.add_argument_group("the paper's protocols: generate and measure as the published numbers were made")
    g.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        help="bair: 1 → 15 frames, 100 samples per test clip; "
        "kinetics600: 5 → 11 frames, 50,000 samples; ucf101: 2,048 unconditional samples vs the train split",
    )
    g.add_argument("--checkpoint", help="--protocol: the model (run folder, checkpoint folder or Hub model)")
    g.add_argument("--data", help="--protocol: shards of the protocol's real split made by `vidiff prepare --format`")
    g.add_argument("--sampler", choices=sorted(SAMPLERS), help="--protocol: default the model's sample.sampler")
    g.add_argument("--steps", type=int, help="--protocol: sampling steps (default the model's sample.steps)")
    g.add_argument("--method", choices=METHODS, default="reconstruction", help="--protocol: conditioning method")
    g.add_argument("--reconstruction-weight", type=float, help="--protocol: w_r (default the model's)")
    g.add_argument("--no-ema", action="store_true", help="--protocol: the raw weights instead of the EMA")
    p.set_defaults(func=run)


def run_protocol_command(args) -> None:
    from vidiff import spread
    from vidiff.errors import VidiffError
    from vidiff.protocols import run_protocol

    missing = [
        flag
        for flag, value in (("--checkpoint", args.checkpoint), ("--data", args.data), ("--out", args.out))
        if not value
    ]
    if missing or args.real or args.fake:
        raise VidiffError(
            f"--protocol {args.protocol} takes {', '.join(missing) or '--checkpoint, --data and --out'}"
            f"{' (and no --real/--fake: it makes both)' if args.real or args.fake else ''}"
        )
    from vidiff.data.shards import trust_command

    trust_command(args.data)  # a pipe: source typed here is the user's own command
    request = {
        "sampler": args.sampler,
        "steps": args.steps,
        "method": args.method,
        "reconstruction_weight": args.reconstruction_weight,
    }
    report = run_protocol(
        args.protocol,
        args.checkpoint,
        args.data,
        args.out,
        num=args.num,
        seed=args.seed,
        batch_size=args.batch_size,
        i3d_weights=args.i3d_weights,
        use_ema=not args.no_ema,
        request={k: v for k, v in request.items() if v is not None},
    )
    if spread.is_main():
        s = report["settings"]
        print(
            f"{args.protocol}: FVD {report['fvd']:.2f} of {s['num_fake']} generated clips "
            f"({'reduced from ' + str(s['protocol_num_fake']) if s['reduced'] else 'as published'}) against "
            f"{s['num_real']} real ones; report in {args.out}/report.json"
        )


def fake_size(fake) -> tuple:
    """(height, width) of the generated clips in folder ``fake``: its samples.safetensors, else its first
    video file; None when it cannot be told."""
    from pathlib import Path

    folder = Path(fake or "")
    if (folder / "samples.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "samples.safetensors"), "pt") as st:
            return tuple(st.get_slice("videos").get_shape()[-2:])  # b c f h w
    if folder.is_dir():
        from vidiff.evaluate import clip_files
        from vidiff.videoio import probe

        files = clip_files(folder)
        if files:
            info = probe(files[0])
            return info.height, info.width
    return None


def builtin_source(args):
    """`builtin:moving-shapes` as an evaluation source: `num` clips of the eval's frame count at the
    generated clips' size (64×64 when it cannot be told), so that the FVD compares like with like."""

    def resolve(spec: str):
        import torch

        from vidiff.config import DataConfig
        from vidiff.data import dataset_from_config

        frames = getattr(args, "num_frames", 16) or 16
        size = fake_size(getattr(args, "fake", None)) or (64, 64)
        # DataError for unknown names and missing folders
        ds = dataset_from_config(DataConfig(source=spec, frames=frames, size=size))

        def real_source(num: int) -> torch.Tensor:
            return torch.stack([ds[i]["video"] for i in range(num)])

        real_source.cache_key = f"{spec}:frames={frames}:size={size[0]}x{size[1]}"
        return real_source

    return resolve


def run(args) -> None:
    from vidiff.errors import VidiffError
    from vidiff.evaluate import run_eval

    if args.protocol:
        return run_protocol_command(args)
    if not args.real or not args.fake:
        raise VidiffError(
            "give --real and --fake (folders of videos, or builtin:moving-shapes for --real), or "
            "--protocol with --checkpoint and --data"
        )
    run_eval(args, resolve_source=builtin_source(args))
