"""Checkpoints: safetensors weights plus JSON, written atomically; nothing is ever unpickled.

A run folder holds `config.json`, `checkpoints/step_NNNNNNN/` and a `checkpoints/latest` pointer.
A checkpoint folder holds `model.safetensors`, `ema.safetensors`, `optimizer.safetensors`,
`config.json` and `state.json` (step, RNG states). It is first written as `*.tmp`, then renamed, and
`latest` is replaced last, so a crash while saving never leaves a broken latest checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch

from vidiff.errors import CheckpointError, RemovedOptionError
from vidiff.hub.download import PREFIX, HubError, download_checkpoint, parse_reference
from vidiff.io.files import atomic_write, load_tensors, save_tensors

T = TypeVar("T")
READERS = ".readers"  # in each checkpoint folder: the file readers lock


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


def _tensor_bytes(*states: Optional[dict]) -> int:
    return sum(v.numel() * v.element_size() for st in states if st for v in st.values() if torch.is_tensor(v))


def _write_checkpoint(
    tmp: Path,
    model: dict,
    ema: Optional[dict],
    optimizer: Optional[dict],
    config: dict,
    state: dict,
    extra: Optional[dict] = None,
) -> None:
    (tmp / READERS).touch()  # readers hold a shared lock on it; the writer removes only unread checkpoints
    save_tensors(tmp / "model.safetensors", model)
    if ema is not None:
        save_tensors(tmp / "ema.safetensors", ema)
    for name, (tensors, metadata) in (extra or {}).items():
        save_tensors(tmp / name, tensors, metadata)
    if optimizer is not None:
        tensors, meta = optimizer_to_tensors(optimizer)
        save_tensors(tmp / "optimizer.safetensors", tensors)
        (tmp / "optimizer.json").write_text(json.dumps(meta))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "state.json").write_text(json.dumps(state))


def save_checkpoint(
    run_dir,
    step: int,
    *,
    model: dict,
    ema: Optional[dict],
    optimizer: Optional[dict],
    config: dict,
    state: dict,
    keep: int = 3,
    extra: Optional[dict] = None,
) -> Path:
    """Write checkpoint `step` as a `.tmp` folder, rename it, then point `latest` at it and remove all
    but the newest `keep`. A failed write (a full disk) removes its `.tmp` and says what it needs.
    `extra`: more safetensors files of the checkpoint, file name → (tensors, metadata)."""
    ckdir = Path(run_dir) / "checkpoints"
    final = ckdir / f"step_{step:07d}"
    tmp = ckdir / f"step_{step:07d}.tmp"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        _write_checkpoint(tmp, model, ema, optimizer, config, state, extra)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        name = getattr(e, "path", None) or e.filename  # an OutputError names the file it failed on as its path
        where = f"{name} of checkpoint {str(final)!r}" if name else f"checkpoint {str(final)!r}"
        if e.errno == errno.ENOSPC:
            need = _tensor_bytes(model, ema, *(optimizer or {}).get("state", {}).values())
            free = shutil.disk_usage(ckdir).free if ckdir.exists() else 0
            raise CheckpointError(
                f"no space left on the device while writing {where}: it needs about "
                f"{need / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free on the disk of "
                f"{str(ckdir)!r}; free some space (older runs, other files) and continue with "
                f"--resume"
            ) from e
        raise CheckpointError(
            f"cannot write {where}: {e.strerror or e}; check that the run folder is writable, or choose another --out"
        ) from e
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(ckdir / "latest", final.name + "\n")
    for p in _complete(ckdir)[:-keep] if keep > 0 else []:
        _remove_unless_read(p)
    return final


def _remove_unless_read(ck: Path) -> None:
    """Remove an old checkpoint unless a reader holds it; then it goes at a later save. The readers'
    file goes last, so a reader that finds it missing knows the folder is going."""
    try:
        fd = os.open(ck / READERS, os.O_RDONLY)
    except FileNotFoundError:
        shutil.rmtree(ck, ignore_errors=True)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for p in ck.iterdir():
            if p.name != READERS:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        shutil.rmtree(ck, ignore_errors=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def has_checkpoints(run_dir) -> bool:
    """Whether a run folder holds a finished checkpoint (a `.tmp` left by a crash does not count)."""
    ckdir = Path(run_dir) / "checkpoints"
    return ckdir.is_dir() and bool(_complete(ckdir))


@contextlib.contextmanager
def _reading(ck: Path):
    """A shared lock on a checkpoint while it is read, so the writer leaves it in place."""
    try:
        fd = os.open(ck / READERS, os.O_RDONLY)
    except FileNotFoundError:  # written by an earlier vidiff (no such file), or being removed
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def list_checkpoints(run_dir) -> list:
    """The finished checkpoint folders of a run, oldest first ([] when it has none)."""
    ckdir = Path(run_dir) / "checkpoints"
    return _complete(ckdir) if ckdir.is_dir() else []


def _complete(ckdir: Path) -> list:
    """The finished checkpoints of a run, oldest first."""
    return sorted(
        c
        for c in ckdir.glob("step_*")
        if c.is_dir() and not c.name.endswith(".tmp") and (c / "model.safetensors").is_file()
    )


def resolve_checkpoint(path, **hub) -> Path:
    """A checkpoint folder from a run folder (its latest checkpoint, or the newest finished one when
    `latest` is missing or points at a removed folder), a checkpoint folder, a folder written by
    `save_pretrained` (model.safetensors + config.json), or a model on the Hugging Face Hub
    (`org/name` or `hf://org/name[@revision]`, when no such local path exists): its snapshot in the
    Hugging Face cache. `hub` keywords (revision, cache_dir, local_files_only, token) reach the download."""
    p = Path(path) if not str(path).startswith(PREFIX) else None
    if p is None or not p.exists():
        return _from_hub(path, hub)
    ckdir = p / "checkpoints"
    if ckdir.is_dir():
        latest = ckdir / "latest"
        name = latest.read_text().strip() if latest.is_file() else ""
        done = _complete(ckdir)
        if name and (ckdir / name) in done:
            p = ckdir / name
        elif done:
            p = done[-1]
        else:
            raise CheckpointError(
                f"run folder {str(path)!r} has no finished checkpoint yet; train longer or lower train.save_every"
            )
    if not (p / "model.safetensors").is_file() or not (p / "config.json").is_file():
        raise CheckpointError(
            f"{str(p)!r} is not a vidiff checkpoint: expected model.safetensors and config.json "
            f"in it (a run folder, a checkpoints/step_* folder, or a save_pretrained folder)"
        )
    return p


def _from_hub(path, hub: dict) -> Path:
    """The Hub snapshot of `path`, or the error of a local path that does not exist."""
    if parse_reference(path) is None:  # (a malformed hf:// name is a HubError)
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; pass a run folder written by `vidiff train` "
            f"(e.g. runs/demo), one of its checkpoints/step_* folders, or a Hub model "
            f"(hf://org/name)"
        )
    if str(path).startswith(PREFIX):
        return download_checkpoint(path, **hub)
    try:
        return download_checkpoint(path, **hub)
    except HubError as e:  # a bare org/name: the user may have meant either
        raise CheckpointError(f"checkpoint {str(path)!r} is not a local folder, nor a model on the Hub: {e}") from None


def read_checkpoint(path, read: Callable[[Path], T], attempts: int = 10, **hub) -> T:
    """`read(checkpoint folder)` of the checkpoint `path` resolves to, under a shared lock that keeps
    the training process from removing it meanwhile (no lock on the run folder, which the writer
    holds); a checkpoint removed between resolving and locking is replaced by the newest one. `hub`
    keywords reach the download of a Hub model (see resolve_checkpoint)."""
    for _ in range(attempts):
        ck = resolve_checkpoint(path, **hub)
        try:
            with _reading(ck):
                if not (ck / "model.safetensors").is_file():
                    continue  # removed between resolving and locking
                return read(ck)
        except (CheckpointError, OSError):
            if (ck / "model.safetensors").is_file():
                raise  # still there: the error is the file's own
    raise CheckpointError(
        f"{str(path)!r}: its checkpoints were replaced {attempts} times while being read; "
        f"try again, or read a checkpoints/step_* folder that training keeps"
    )


# The weight names of vidiff 0.1.0 (levels `down.level1`, each a list per kind of block; the
# extensions at the top) → today's (`down.1.block0.res`, `extensions.frame_embed`).
OLD_NAMES = (
    (re.compile(r"^(down|up)\.level(\d+)\.(res|spatial|temporal|cross)\.(\d+)\."), r"\1.\2.block\4.\3."),
    (re.compile(r"^(down|up)\.level(\d+)\.(downsample|upsample)\."), r"\1.\2.\3."),
    (re.compile(r"^middle\.(res|spatial|temporal|cross)\.(\d+)\."), r"middle.block\2.\1."),
    (re.compile(r"^(frame_embed|frame_time|frame_mix|time_pool)\."), r"extensions.\1."),
)


def renamed(name: str) -> str:
    """Today's name of a weight named `name` by any vidiff (vidiff 0.1.0's names are mapped)."""
    for pattern, new in OLD_NAMES:
        if pattern.match(name):
            return pattern.sub(new, name)
    return name


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Weights from a safetensors file into `module`, with one clear error when they do not fit it.
    Weights named by vidiff 0.1.0 are renamed (OLD_NAMES)."""
    state = {renamed(k): v for k, v in load_tensors(path).items()}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"{str(path)!r} holds weights of another architecture than the config.json beside it "
            f"describes ({len(lines)} tensors differ, e.g. {lines[0] if lines else e}); the folder "
            f"mixes files of two runs: use a checkpoint written by one run"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{str(path)!r} does not fit the config.json beside it: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; the folder mixes files of two runs"
        )


def load_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from e


def load_config(ck: Path):
    """The Config of a checkpoint (a config.json of an earlier vidiff is converted on load)."""
    from vidiff.config import Config, ConfigError

    path = Path(ck) / "config.json"
    try:
        return Config.from_dict(load_json(path), trained=True)
    except RemovedOptionError as e:
        raise RemovedOptionError(f"{str(path)!r}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{str(path)!r}: {e}; the checkpoint's configuration is damaged or not vidiff's") from None
