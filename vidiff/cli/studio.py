"""`vidiff studio`: the local web app (generate, condition, runs, evaluate) over a runs folder."""
from __future__ import annotations

from .common import one_process


def register(sub) -> None:
    p = sub.add_parser("studio", help="local web app: generate, condition, browse runs, evaluate")
    p.add_argument("--runs", default="runs", help="folder that holds the run folders (default runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--outputs", help="folder for the studio's own files (default RUNS/.studio)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1; more wait in a queue)")
    p.set_defaults(func=run)


def run(args) -> None:
    one_process("studio")
    from pathlib import Path

    from ..errors import VidiffError
    from ..studio.app import serve
    from ..studio.runs import is_run
    from ..studio.server import is_loopback
    runs = Path(args.runs)
    if is_run(runs):  # a run folder itself: show it among its siblings
        runs = runs.resolve().parent
    if not runs.is_dir():
        raise VidiffError(f"--runs {args.runs}: no such folder; train a run first (`vidiff train --out "
                          f"{args.runs}/demo`) or point --runs at the folder that holds your runs")
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the studio and "
              f"read the runs folder's videos and metrics")
    try:
        serve(runs, args.host, args.port, args.outputs, args.workers,
              ready=lambda url: print(f"vidiff studio on {url} (runs: {runs}); Ctrl+C stops it", flush=True))
    except OSError as e:
        raise VidiffError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; choose another --port") from e
