"""`vidiff prepare`: decode a folder of videos once into WebDataset shards of fixed-size clips."""
from __future__ import annotations

from .common import one_process


def register(sub) -> None:
    p = sub.add_parser("prepare", help="decode videos once into WebDataset shards of fixed-size clips for fast "
                       "training (--data OUT)")
    p.add_argument("src", help="folder of videos (with captions.csv / metadata.jsonl or class sub-folders)")
    p.add_argument("out", help="new folder for the shards and their index.json")
    p.add_argument("--frames", type=int, required=True, help="frames per clip (data.frames of the training)")
    p.add_argument("--size", type=int, required=True, help="frame size S: clips of S×S (data.size of the training)")
    p.add_argument("--fps", type=float, help="read videos at this frame rate by presentation time (default: each "
                   "file's own)")
    p.add_argument("--shard-size", default="1GB", help="largest shard, e.g. 1GB, 500MB (default 1GB)")
    p.add_argument("--workers", default="auto", help="decoding processes (default auto: one per core but one)")
    p.add_argument("--skip-errors", "--skip-bad-files", dest="skip_errors", action="store_true",
                   help="skip unreadable videos (listed at the end) instead of stopping")
    p.set_defaults(func=run)


def run(args) -> None:
    one_process("prepare")
    from .. import spread
    from ..data.prepare import parse_bytes, prepare_shards
    from ..errors import VidiffError
    from ..files import writable
    if args.frames < 1 or args.size < 1:
        raise VidiffError(f"--frames {args.frames} --size {args.size}: both must be positive")
    if args.workers != "auto" and not args.workers.isdigit():
        raise VidiffError(f"--workers {args.workers}: give a number of processes or auto")
    if args.fps is not None and not args.fps > 0:
        raise VidiffError(f"--fps {args.fps:g}: give a positive frame rate, or leave it out to read each file's own")
    writable(args.out, "out")
    size = (args.size, args.size)
    workers = max(1, spread.usable_cores() - 1) if args.workers == "auto" else int(args.workers)
    s = prepare_shards(args.src, args.out, args.frames, size, fps=args.fps, shard_bytes=parse_bytes(args.shard_size),
                       skip_errors=args.skip_errors, workers=workers)
    print(f"wrote {s['clips']} clips of {args.frames}×{size[0]}×{size[1]} from {s['videos']} videos into "
          f"{s['shards']} shard{'s' if s['shards'] != 1 else ''} ({s['bytes'] / 1e6:.1f} MB) in {s['out']} "
          f"in {s['seconds']:.1f} s ({s['clips'] / max(s['seconds'], 1e-9):.1f} clips/s)")
    if s["skipped"]:
        print(f"skipped {len(s['skipped'])} video{'s' if len(s['skipped']) != 1 else ''}: " + ", ".join(s["skipped"]))
    print(f"train on them with: vidiff train --data {s['out']} --set data.frames={args.frames} "
          f"--set data.size={size[0]}")
