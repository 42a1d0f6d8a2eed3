"""Checkpoints: safetensors weights plus JSON, written atomically; nothing is ever unpickled.

A run folder holds `config.json`, `checkpoints/step_NNNNNNN/` and a `checkpoints/latest` pointer.
A checkpoint folder holds `model.safetensors`, `ema.safetensors`, `optimizer.safetensors`,
`config.json` and `state.json` (step, RNG states). It is first written as `*.tmp`, then renamed, and
`latest` is replaced last, so a crash while saving never leaves a broken latest checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import VidiffError
from .files import atomic_write, save_tensors


class CheckpointError(VidiffError, FileNotFoundError):
    """A missing or unreadable checkpoint, with what to do about it."""


def optimizer_to_tensors(state: dict) -> tuple[dict, dict]:
    """torch optimizer state_dict → flat tensors `state.{param}.{name}` plus JSON-able param groups."""
    tensors, scalars = {}, {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir, step: int, *, model: dict, ema: Optional[dict], optimizer: Optional[dict],
                    config: dict, state: dict, keep: int = 3) -> Path:
    ckdir = Path(run_dir) / "checkpoints"
    final = ckdir / f"step_{step:07d}"
    tmp = ckdir / f"step_{step:07d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_tensors(tmp / "model.safetensors", model)
    if ema is not None:
        save_tensors(tmp / "ema.safetensors", ema)
    if optimizer is not None:
        tensors, meta = optimizer_to_tensors(optimizer)
        save_tensors(tmp / "optimizer.safetensors", tensors)
        (tmp / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(ckdir / "latest", final.name + "\n")
    old = sorted(p for p in ckdir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder from a run folder (its latest checkpoint), a checkpoint folder, or a
    folder written by `save_pretrained` (model.safetensors + config.json)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; pass a run folder written by `vidiff train` "
                              f"(e.g. runs/demo) or one of its checkpoints/step_* folders")
    if (p / "checkpoints" / "latest").is_file():
        name = (p / "checkpoints" / "latest").read_text().strip()
        p = p / "checkpoints" / name
    elif (p / "checkpoints").is_dir():
        done = sorted(c for c in (p / "checkpoints").glob("step_*") if c.is_dir() and not c.name.endswith(".tmp"))
        if not done:
            raise CheckpointError(f"run folder {str(path)!r} has no finished checkpoint yet; train longer or "
                                  f"lower train.save_every")
        p = done[-1]
    if not (p / "model.safetensors").is_file() or not (p / "config.json").is_file():
        raise CheckpointError(f"{str(p)!r} is not a vidiff checkpoint: expected model.safetensors and config.json "
                              f"in it (a run folder, a checkpoints/step_* folder, or a save_pretrained folder)")
    return p


def load_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}; the file is damaged — use an earlier checkpoint "
                              f"from the run's checkpoints/ folder") from e


def load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from e


def load_config(ck: Path):
    """The Config of a checkpoint (a config.json of an earlier vidiff is converted on load)."""
    from .config import Config
    return Config.from_dict(load_json(Path(ck) / "config.json"))
