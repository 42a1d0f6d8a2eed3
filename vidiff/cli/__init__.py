"""The `vidiff` command line: one module per command, each with `register(subparsers)` and
`run(args)`, all importing the shared helpers in :mod:`vidiff.cli.common` and never each other.

It only parses arguments and calls the Python API; the model's defaults live in its config and presets.
Under torchrun (`torchrun --nproc-per-node N -m vidiff.cli COMMAND …`) every command joins the
process group and spreads its work (see :mod:`vidiff.spread`); the files are those of one process.
vidiff's own errors (:class:`vidiff.errors.VidiffError`) are reported as one line; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from vidiff import spread
from vidiff.cli import (
    demo,
    distill,
    ema,
    eval,
    extend,
    interpolate,
    predict,
    prepare,
    presets,
    push,
    sample,
    studio,
    train,
    upsample,
)
from vidiff.errors import VidiffError

COMMANDS = (
    train,
    sample,
    demo,
    presets,
    eval,
    predict,
    extend,
    interpolate,
    upsample,
    distill,
    prepare,
    studio,
    push,
    ema,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidiff", description="Video Diffusion Models: train, sample, evaluate")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs, and tracebacks for every error")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    spread.init(spread.local_device())  # under torchrun: every command spreads its work over the processes
    try:
        args.func(args)
    except VidiffError as e:
        if args.verbose:
            raise
        print(f"vidiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        spread.finish()
    return 0
