"""File I/O in one home: the atomic write every file goes through.

A file is written next to its destination under a temporary name, flushed to disk, given the
permissions any new file gets (0666 less the process's umask: 0644 under umask 022) and renamed
over the destination, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Union

from vidiff.errors import CheckpointError, DataError, OutputError, RunLockedError, VidiffError

PathLike = Union[str, os.PathLike]


def cache_dir(kind: str = "") -> Path:
    """vidiff's cache folder for `kind` (``"eval"``, ``"shards"``, ``"hub"``; ``""``: the root, where converted
    weights live): under ``$VIDIFF_CACHE``, else ``~/.cache/vidiff``. Every cache asks here, so one variable
    moves them all; a kind's own override (``VIDIFF_SHARD_CACHE``, ``HF_HUB_CACHE``) is its caller's."""
    root = os.environ.get("VIDIFF_CACHE") or Path.home() / ".cache" / "vidiff"
    return Path(root).expanduser() / kind


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


# a write that failed for want of room: the disk (or the quota, or the file size limit) is full
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _output_error(path: Path, e: OSError) -> OutputError:
    """One line for a write to `path` that failed: a full disk named by where it is mounted, or the reason."""
    if e.errno in _FULL:
        where = Path(os.path.abspath(path.parent))
        while not os.path.ismount(where) and where != where.parent:
            where = where.parent
        try:
            free = f", {shutil.disk_usage(where).free / 2**20:.0f} MiB free"
        except OSError:
            free = ""
        error = OutputError(
            f"cannot write {str(path)!r}: the disk is full (the file system mounted at {str(where)!r}"
            f"{free}); free some space there or write to another disk"
        )
    elif isinstance(e, (FileExistsError, NotADirectoryError)):  # a file where a folder of the path should be
        error = OutputError(
            f"cannot write {str(path)!r}: a file is in the way of its folder {str(path.parent)!r}; "
            f"move it or write elsewhere"
        )
    else:
        error = OutputError(
            f"cannot write {str(path)!r}: {e.strerror or e}; make {str(path.parent)!r} writable or write elsewhere"
        )
    error.errno = e.errno  # (not filename: OSError's str would show its strerror and filename instead of the message)
    error.path = str(path)
    return error


def atomic_write(path: PathLike, content: Union[bytes, str, Callable[[str], None]]) -> Path:
    """Write `content` (bytes, text, or a function that writes the file at a given path) to `path`
    atomically. Returns the path. On any failure the temporary file is removed and the error raised;
    a folder that cannot be written and a full disk raise OutputError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _output_error(path, e) from e
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a written file gets the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _FULL and not isinstance(e, OutputError):
            raise _output_error(path, e) from e
        raise
    return path


def save_npz(path: PathLike, **arrays) -> Path:
    """Numpy arrays in one .npz file, written atomically."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append ".npz" to it
            np.savez(f, **arrays)

    return atomic_write(path, write)


def writable(path: PathLike, flag: str = "--out", *, folder: bool = True) -> Path:
    """Check, before any work, that the output `path` given by `flag` can be written: a folder (created
    later if missing) or, with `folder=False`, a file whose folder can hold it. Creates nothing; raises
    OutputError naming the path and what to do."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a file, not a folder; give a folder (it is created if missing)")
    if not folder and path.is_dir():
        raise OutputError(f"{flag} {str(path)!r} is a folder; give the name of a file to write")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a folder; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".vidiff-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(
            f"{flag} {str(path)!r}: cannot write in {str(existing)!r} ({e.strerror or e}); make it "
            f"writable or choose another {flag}"
        ) from None
    return path


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def find_files(root: PathLike, extensions: tuple[str, ...]) -> list[Path]:
    """The files under `root` (recursively) whose names end with one of `extensions` (any case), as
    `root / relative path`, sorted by the relative posix path. Follows symlinks, visits each real
    folder once (so a symlink loop ends), and skips hidden files and folders. A missing folder gives []."""
    root = Path(root)
    extensions = tuple(e.lower() for e in extensions)
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or a second link to a folder already listed
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath, name) for name in filenames if name.lower().endswith(extensions) and not name.startswith(".")
        ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def find_videos(
    root: PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS, *, allow_empty: bool = False
) -> list[Path]:
    """The video files under `root`, as :func:`find_files` lists them (`root / relative path`, sorted).

    Raises DataError when `root` is not a folder, or holds no videos (unless `allow_empty`)."""

    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise DataError(f"{root}: {what}; give the folder that holds the video files")
    files = find_files(root, extensions)
    if not files and not allow_empty:
        raise DataError(
            f"{root}: no video files found (searched recursively for {' '.join(extensions)}, hidden files "
            f"skipped); put videos there or point to another folder"
        )
    return files


def read_metrics(path) -> list:
    """The rows of a metrics.jsonl (dicts with "step"), skipping lines that are not JSON objects (one
    cut short when training was killed mid-append). A missing file gives []."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    return rows


def load_tensors(path: PathLike) -> dict:
    """The tensors of a safetensors file; a missing or damaged file is one CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError as e:
        raise CheckpointError(f"{str(path)!r} not found") from e
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"cannot read {str(path)!r}: {e}; the file is damaged — use an earlier checkpoint "
            f"from the run's checkpoints/ folder"
        ) from e


def save_tensors(path: PathLike, tensors: dict, metadata: Optional[dict] = None) -> Path:
    """A safetensors file, written atomically with the usual mode (safetensors alone writes 0600). A
    failed write (a full disk) is the OSError it is, not safetensors' own error."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as e:  # "Error while serializing: I/O error: … (os error 28)"
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from e

    return atomic_write(path, write)


_HELD_LOCKS: set = set()  # the descriptors of the run locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a data-loader worker): let go of the parent's run locks. A lock belongs to the
    open file, which a fork shares, so a worker orphaned by a killed trainer would keep the folder locked
    until it noticed; /dev/null takes the descriptor's place, so the number stays valid but locks nothing."""
    for fd in list(_HELD_LOCKS):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, fd, inheritable=False)
        os.close(null)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def run_lock(folder: PathLike):
    """Hold the exclusive lock of a run folder (an OS file lock on `folder/.lock`) while the block runs.
    The OS releases it when the process ends, however it ends, so a stale lock cannot exist; forked
    children (data-loader workers) do not hold it (`_drop_inherited_locks`). The file
    records who holds it (pid, host, start time), for the message a second writer gets."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise VidiffError(f"{str(folder)!r} is a file, not a run folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise VidiffError(
            f"cannot write to the run folder {str(folder)!r}: {e.strerror or e}; choose a writable --out"
        ) from e
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip() or "another process"
            raise RunLockedError(
                f"run folder {str(folder)!r} is in use: {holder} is training into it; wait for it "
                f"to finish (or stop it), or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        _HELD_LOCKS.add(fd)
        try:
            yield
        finally:
            _HELD_LOCKS.discard(fd)
            f.seek(0)
            f.truncate()  # the lock goes with the file descriptor; an empty file means nobody holds it
