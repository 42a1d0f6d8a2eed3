"""`vidiff prepare`: decode a dataset (a folder of videos, or BAIR / UCF-101 / Kinetics as published)
once into WebDataset shards of fixed-size clips."""

from __future__ import annotations

from pathlib import Path

from vidiff.cli.common import one_process
from vidiff.data.prepare import FORMATS


def register(sub) -> None:
    p = sub.add_parser(
        "prepare", help="decode videos once into WebDataset shards of fixed-size clips for fast training (--data OUT)"
    )
    p.add_argument(
        "src",
        help="folder of videos (with captions.csv / metadata.jsonl or class sub-folders), or the "
        "folder a published dataset unpacks into (see --format)",
    )
    p.add_argument(
        "--format",
        default="folder",
        choices=FORMATS,
        help="how SRC is laid out: " + "; ".join(f"{name} ({f.layout})" for name, f in FORMATS.items()),
    )
    p.add_argument("--split", help="; ".join(f"{name}: {f.splits}" for name, f in FORMATS.items() if f.splits))
    p.add_argument("--camera", default="aux1", help="bair: aux1 (default, what the literature uses) or main")
    p.add_argument("--annotations", help="kinetics: the annotation CSV (default: the CSV in SRC named for the split)")
    p.add_argument("out", help="new folder for the shards and their index.json")
    p.add_argument("--frames", type=int, required=True, help="frames per clip (data.frames of the training)")
    p.add_argument("--size", type=int, required=True, help="frame size S: clips of S×S (data.size of the training)")
    p.add_argument(
        "--fps", type=float, help="read videos at this frame rate by presentation time (default: each file's own)"
    )
    p.add_argument("--shard-size", default="1GB", help="largest shard, e.g. 1GB, 500MB (default 1GB)")
    p.add_argument("--workers", default="auto", help="decoding processes (default auto: one per core but one)")
    p.add_argument(
        "--text-encoder",
        nargs="?",
        const="default",
        metavar="PATH",
        help="also store each clip's caption encoded by this text encoder (a local Hugging Face model folder; "
        "alone: the packaged all-MiniLM-L6-v2), so training a text model does not run the encoder in its steps; "
        "it must be the model's conditioning.text_encoder",
    )
    p.add_argument(
        "--text-max-length",
        type=int,
        default=32,
        help="with --text-encoder: tokens per caption, the model's conditioning.text_max_length (default 32)",
    )
    p.add_argument(
        "--skip-errors",
        "--skip-bad-files",
        dest="skip_errors",
        action="store_true",
        help="skip unreadable videos (listed at the end) instead of stopping",
    )
    p.set_defaults(func=run)


def run(args) -> None:
    one_process("prepare")
    from vidiff import spread
    from vidiff.data.prepare import parse_bytes, prepare_shards
    from vidiff.errors import VidiffError
    from vidiff.io.files import atomic_write, writable

    if args.frames < 1 or args.size < 1:
        raise VidiffError(f"--frames {args.frames} --size {args.size}: both must be positive")
    if args.workers != "auto" and not args.workers.isdigit():
        raise VidiffError(f"--workers {args.workers}: give a number of processes or auto")
    if args.fps is not None and not args.fps > 0:
        raise VidiffError(f"--fps {args.fps:g}: give a positive frame rate, or leave it out to read each file's own")
    writable(args.out, "out")
    size = (args.size, args.size)
    workers = max(1, spread.usable_cores() - 1) if args.workers == "auto" else int(args.workers)
    options = (
        {"split": args.split, "camera": args.camera, "annotations": args.annotations} if args.format != "folder" else {}
    )
    encoder = None
    if args.text_encoder is not None:
        from vidiff.nn.text import TextEncoder

        encoder = TextEncoder(None if args.text_encoder == "default" else args.text_encoder, args.text_max_length)
    s = prepare_shards(
        args.src,
        args.out,
        args.frames,
        size,
        fps=args.fps,
        shard_bytes=parse_bytes(args.shard_size),
        skip_errors=args.skip_errors,
        workers=workers,
        format=args.format,
        text_encoder=encoder,
        **options,
    )
    print(
        f"wrote {s['clips']} clips of {args.frames}×{size[0]}×{size[1]} from {s['videos']} videos into "
        f"{s['shards']} shard{'s' if s['shards'] != 1 else ''} ({s['bytes'] / 1e6:.1f} MB) in {s['out']} "
        f"in {s['seconds']:.1f} s ({s['clips'] / max(s['seconds'], 1e-9):.1f} clips/s)"
    )
    if s["skipped"]:
        print(f"skipped {len(s['skipped'])} video{'s' if len(s['skipped']) != 1 else ''}: " + ", ".join(s["skipped"]))
    if s["missing"]:
        listed = Path(s["out"]) / "missing.txt"
        atomic_write(listed, "".join(f"{m}\n" for m in s["missing"]))
        print(f"{len(s['missing'])} videos of the dataset's list are not in {args.src} (listed in {listed})")
    text = ""
    if encoder is not None:
        text = f" --set conditioning.kind=text --set conditioning.text_max_length={args.text_max_length}"
        text += "" if args.text_encoder == "default" else f" --set conditioning.text_encoder={args.text_encoder}"
    print(
        f"train on them with: vidiff train --data {s['out']} --set data.frames={args.frames} "
        f"--set data.size={size[0]}{text}"
    )
