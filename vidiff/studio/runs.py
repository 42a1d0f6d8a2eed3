"""Run folders as the studio shows them: the list with each run's preset, steps, last loss and FVD,
and one run's curves, sample grids over training, checkpoints and configuration."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
from pathlib import Path
from typing import Optional

from vidiff.checkpoint import list_checkpoints
from vidiff.io.files import read_metrics
from vidiff.studio.paths import StudioError, resolve_inside

MAX_POINTS = 1000  # a curve is thinned to about this many points for the page
SECTIONS = ("model", "conditioning", "diffusion", "data", "train", "sample")  # of a vidiff config.json


def series(rows: list, key: str, max_points: int = MAX_POINTS) -> list:
    """[(step, value)] of the rows that hold a finite number under `key`, thinned evenly to at most
    `max_points` (the last point is always kept)."""
    points = [
        (int(r["step"]), float(r[key]))
        for r in rows
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and math.isfinite(r["step"])
    ]
    if len(points) > max_points:
        stride = -(-len(points) // max_points)
        points = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
    return points


def is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        (folder / "checkpoints").is_dir() or (folder / "metrics.jsonl").is_file()
    )


def list_runs(root, depth: int = 2) -> list:
    """The run folders under `root` (itself excluded), as posix paths relative to it, down to `depth`
    levels (runs/ablation/lr3e-4); hidden folders are skipped and a run's own subfolders not searched."""
    root = Path(root)
    found = []

    def walk(folder: Path, level: int) -> None:
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_run(child):
                found.append(child.relative_to(root).as_posix())
            elif level < depth:
                walk(child, level + 1)

    if root.is_dir():
        walk(root, 1)
    return found


def run_folder(root, name: str) -> Path:
    """The run `name` (relative to `root`), refused unless it is a run folder inside `root`."""
    path = resolve_inside(root, name)
    if not path.is_dir() or not is_run(path):
        raise StudioError(f"{name}: not a run folder (config.json with checkpoints/ or metrics.jsonl)", 404)
    return path


def read_config(run: Path) -> dict:
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StudioError(f"{run.name}/config.json cannot be read: {e}") from e
    if not isinstance(config, dict):
        raise StudioError(f"{run.name}/config.json does not hold a configuration")
    bad = [s for s in SECTIONS if not isinstance(config.get(s, {}), dict)]
    missing = [s for s in ("model", "data") if s not in config]
    if bad or missing or not isinstance(config["data"].get("source", ""), str):
        why = (
            f"its {bad[0]} is {json.dumps(config[bad[0]])[:60]}, not a section"
            if bad
            else f"it has no {missing[0]} section"
            if missing
            else "its data.source is not a path"
        )
        raise StudioError(f"{run.name}/config.json is not a vidiff configuration ({why}): not a vidiff run")
    return config


def training_state(run: Path) -> str:
    """ "training" while a process holds the run's lock, "interrupted" when the lock names a holder
    that is gone (killed: it had no chance to clear the file; the OS released its lock), else ""."""
    try:
        fd = os.open(run / ".lock", os.O_RDONLY)
    except OSError:
        return ""
    try:
        if not os.read(fd, 200).strip():
            return ""  # cleared by a process that ended normally
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return "interrupted"  # the lock was free; it goes with our descriptor, closed below
    except OSError as e:
        return "training" if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else ""
    finally:
        os.close(fd)


def preset_of(config: dict) -> str:
    """The preset whose network, diffusion, conditioning kind and clip shape the run has, else "custom"."""
    from vidiff.presets import PRESETS

    derived = ("num_classes", "text_dim")

    def key(d: dict) -> tuple:
        model = {k: v for k, v in d.get("model", {}).items() if k not in derived}
        data = d.get("data", {})
        return (
            json.dumps(model, sort_keys=True),
            json.dumps(d.get("diffusion", {}), sort_keys=True),
            d.get("conditioning", {}).get("kind", "none"),
            data.get("frames"),
            data.get("size"),
        )

    mine = key(config)
    for name, preset in PRESETS.items():
        if key(json.loads(preset.to_json())) == mine:
            return name
    return "custom"


def sample_grids(run: Path) -> list:
    """[(step, file name relative to the run)] of the sample grids written during training."""
    grids = []
    for f in sorted((run / "samples").glob("step_*.gif")):
        m = re.fullmatch(r"step_(\d+)\.gif", f.name)
        if m:
            grids.append((int(m.group(1)), f"samples/{f.name}"))
    return grids


def _last(rows: list, key: str) -> Optional[float]:
    values = series(rows, key, max_points=len(rows) + 1)
    return values[-1][1] if values else None


def run_summary(root, name: str) -> dict:
    """One row of the runs table."""
    run = run_folder(root, name)
    config = read_config(run)
    rows = read_metrics(run / "metrics.jsonl")
    checkpoints = list_checkpoints(run)
    steps = max((int(r["step"]) for r in rows if math.isfinite(r["step"])), default=0)
    if checkpoints:
        steps = max(steps, int(checkpoints[-1].name.split("_")[-1]))
    state = training_state(run)
    return {
        "name": name,
        "preset": preset_of(config),
        "steps": steps,
        "target_steps": config.get("train", {}).get("steps"),
        "loss": _last(rows, "loss"),
        "fvd": _last(rows, "fvd"),
        "checkpoints": len(checkpoints),
        "conditioning": config.get("conditioning", {}).get("kind", "none"),
        "training": state == "training",
        "state": state,
    }


def run_details(root, name: str) -> dict:
    """Everything the runs tab and the forms need about one run."""
    run = run_folder(root, name)
    config = read_config(run)
    rows = read_metrics(run / "metrics.jsonl")
    cond = config.get("conditioning", {})
    return {
        **run_summary(root, name),
        "config": config,
        "curves": {"loss": series(rows, "loss"), "fvd": series(rows, "fvd")},
        "grids": [{"step": s, "path": f"{name}/{p}"} for s, p in sample_grids(run)],
        "checkpoint_names": [c.name for c in list_checkpoints(run)],
        "classes": list(cond.get("classes", [])),
        "sample": config.get("sample", {}),
        "frames": config.get("data", {}).get("frames"),
        "size": config.get("data", {}).get("size"),
        "data_source": config.get("data", {}).get("source", ""),
    }
