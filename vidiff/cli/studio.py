"""`vidiff studio`: the local web app (generate, condition, runs, evaluate) over a runs folder."""

from __future__ import annotations

from vidiff.cli.common import one_process


def register(sub) -> None:
    p = sub.add_parser("studio", help="local web app: generate, condition, browse runs, evaluate")
    p.add_argument("--runs", default="runs", help="folder that holds the run folders (default runs)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network, "
        "behind a token)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument(
        "--token",
        help="the token every request must carry (default $VIDIFF_STUDIO_TOKEN, which `ps` does "
        "not show; beyond loopback one is made up and printed in the URL; on loopback none unless given)",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the studio answers to besides IP addresses, localhost and this machine's name, "
        "e.g. the name of a reverse proxy (repeatable)",
    )
    p.add_argument("--outputs", help="folder for the studio's own files (default RUNS/.studio)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1; more wait in a queue)")
    p.set_defaults(func=run)


def run(args) -> None:
    one_process("studio")
    import os
    from pathlib import Path

    from vidiff.errors import VidiffError
    from vidiff.studio.app import serve
    from vidiff.studio.runs import is_run
    from vidiff.studio.server import TOKEN_ENV, check_token, is_loopback

    runs = Path(args.runs)
    if is_run(runs):  # a run folder itself: show it among its siblings
        runs = runs.resolve().parent
    if not runs.is_dir():
        raise VidiffError(
            f"--runs {args.runs}: no such folder; train a run first (`vidiff train --out "
            f"{args.runs}/demo`) or point --runs at the folder that holds your runs"
        )
    if not 0 <= args.port <= 65535:
        raise VidiffError(f"--port {args.port}: a port is a number from 0 to 65535 (0 picks a free one)")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None:
        check_token(token)
    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: whoever has the URL below (its token) can use the studio and "
            f"read the runs folder's videos and metrics; an SSH tunnel to a loopback studio is safer"
        )
    serve(
        runs,
        args.host,
        args.port,
        args.outputs,
        args.workers,
        token=token,
        allow_hosts=args.allow_host,
        ready=lambda url: print(f"vidiff studio on {url} (runs: {runs}); Ctrl+C stops it", flush=True),
    )
