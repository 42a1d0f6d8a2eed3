"""Requests from the page → the `vidiff` command lines that carry them out.

The studio runs exactly these commands (as `python -m vidiff.cli …`) and shows them as `vidiff …`,
so every result in the page can be reproduced from a terminal. Each builder validates its request
first; a bad field is a StudioError naming it.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Optional

from vidiff.diffusion.sampling import GRIDS, SAMPLERS
from vidiff.metrics.evaluate import METRICS
from vidiff.request import SampleRequest
from vidiff.studio.paths import StudioError
from vidiff.tasks import METHODS

TASKS = ("predict", "extend", "interpolate", "upsample")
MAX_VIDEOS = 16
MAX_FRAMES = 512


def _int(req: dict, key: str, lo: int, hi: int, default: Optional[int] = None) -> Optional[int]:
    value = req.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise StudioError(f"{key} must be a whole number, got {value!r}") from None
    if not lo <= number <= hi:
        raise StudioError(f"{key} must be between {lo} and {hi}, got {number}")
    return number


def _float(req: dict, key: str, lo: float, hi: float) -> Optional[float]:
    value = req.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        raise StudioError(f"{key} must be a number, got {value!r}") from None
    if not lo <= number <= hi:
        raise StudioError(f"{key} must be between {lo:g} and {hi:g}, got {number:g}")
    return number


def _choice(req: dict, key: str, choices, default: Optional[str] = None) -> Optional[str]:
    value = req.get(key) or default
    if value is not None and value not in choices:
        raise StudioError(f"{key} must be one of {', '.join(sorted(choices))}, got {value!r}")
    return value


def _text(req: dict, key: str, limit: int = 500) -> Optional[str]:
    value = req.get(key)
    if value is None or str(value).strip() == "":
        return None
    if len(str(value)) > limit:
        raise StudioError(f"{key} is longer than {limit} characters")
    return str(value)


def _flags(pairs) -> list:
    out = []
    for flag, value in pairs:
        if value is not None:
            text = f"{value:g}" if isinstance(value, float) else str(value)
            out += [f"{flag}={text}"] if text.startswith("-") else [flag, text]  # "-1", "- a prompt": not a flag
    return out


def _request_flags(req: dict, checks: dict) -> list:
    """The flags of the SampleRequest fields in `checks` (field name → its checked value in `req`):
    the page's keys are the request's field names, the flags are those the CLI defines for them."""
    flag = {f.name: f.metadata.get("flag") for f in fields(SampleRequest)}
    return _flags([(flag[name], value) for name, value in checks.items()])


def sampling_flags(req: dict) -> list:
    """The flags every sampling command shares: --num-videos, --seed, --sampler, --steps, --grid,
    --guidance, --prompt, --class (only those the request sets)."""
    return _flags([("--num-videos", _int(req, "num", 1, MAX_VIDEOS, 1))]) + _request_flags(
        req,
        {
            "seed": _int(req, "seed", 0, 2**31 - 1, 0),
            "sampler": _choice(req, "sampler", SAMPLERS),
            "steps": _int(req, "steps", 1, 10_000),
            "grid": _choice(req, "grid", GRIDS),
            "guidance": _float(req, "guidance", 0.0, 100.0),
            "prompt": _text(req, "prompt"),
            "class_label": _text(req, "class_label", 100),
        },
    )


def sample_argv(checkpoint: str, out: str, req: dict) -> list:
    """`vidiff sample` for a Generate request."""
    return [
        "sample",
        "--checkpoint",
        checkpoint,
        *sampling_flags(req),
        *_flags([("--frames", _int(req, "frames", 1, MAX_FRAMES))]),
        "--out",
        out,
    ]


def task_argv(checkpoint: str, video: str, out: str, req: dict) -> list:
    """`vidiff predict | extend | interpolate | upsample` for a Condition request."""
    task = _choice(req, "task", TASKS, "predict")
    argv = [
        task,
        "--checkpoint",
        checkpoint,
        "--video",
        video,
        *sampling_flags(req),
        *_request_flags(
            req,
            {
                "method": _choice(req, "method", METHODS, "reconstruction"),
                "reconstruction_weight": _float(req, "reconstruction_weight", 0.0, 1e4),
            },
        ),
    ]
    if task == "predict":
        argv += _flags(
            [
                ("--context", _int(req, "context", 1, MAX_FRAMES, 1)),
                ("--frames", _int(req, "total_frames", 2, MAX_FRAMES)),
            ]
        )
    elif task == "extend":
        argv += _flags(
            [("--length", _int(req, "length", 2, MAX_FRAMES)), ("--overlap", _int(req, "overlap", 1, MAX_FRAMES))]
        )
        if "--length" not in argv:
            raise StudioError("length: give the number of frames of the extended video")
    elif task == "interpolate":
        argv += _flags(
            [("--factor", _int(req, "factor", 2, 16, 2)), ("--max-frames", _int(req, "max_frames", 2, MAX_FRAMES))]
        )
    else:
        argv += _flags([("--max-frames", _int(req, "max_frames", 1, MAX_FRAMES))])
    return argv + ["--out", out]


def eval_argv(real: str, fake: str, report: str, req: dict) -> list:
    """`vidiff eval` for an Evaluate request; the report is written as JSON to `report`."""
    metrics = req.get("metrics") or ["fvd"]
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise StudioError(f"metrics must be chosen from {', '.join(METRICS)}, got {', '.join(map(str, bad)) or 'none'}")
    return [
        "eval",
        "--real",
        real,
        "--fake",
        fake,
        "--metrics",
        ",".join(metrics),
        *_flags(
            [
                ("--num-videos", _int(req, "num", 2, 100_000)),
                ("--num-frames", _int(req, "num_frames", 9, MAX_FRAMES, 16)),
                ("--inception-weights", _text(req, "inception_weights")),
            ]
        ),
        "--out",
        report,
    ]


def shell_line(argv: list) -> str:
    """The command as one would type it: `vidiff sample --checkpoint runs/demo …`, quoted for a POSIX shell."""
    return shlex.join(["vidiff", *argv])
