"""Which files the studio may read and serve: only those inside a given root, named by a relative path."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from vidiff.errors import StudioError

# what the file routes serve, by suffix; anything else (weights, locks, configs of other tools) is refused
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".gif": "image/gif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".json": "application/json",
    ".jsonl": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def is_inside(root: Path, path: Path) -> bool:
    """Whether the resolved `path` is the resolved folder `root` or lies under it."""
    return path == root or root in path.parents


def resolve_inside(root, relative: str, *, hidden: bool = False) -> Path:
    """`root / relative`, refused (StudioError 403) unless it stays inside `root` after following
    symlinks: no absolute paths, no `..`, no NUL, and no hidden parts unless `hidden`. Missing: 404."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or "\\" in relative:
        raise StudioError(f"refused path {relative!r}", 403)
    parts = PurePosixPath(relative).parts
    if (
        PurePosixPath(relative).is_absolute()
        or any(p in ("..", ".") for p in parts)
        or (not hidden and any(p.startswith(".") for p in parts))
    ):
        raise StudioError(f"refused path {relative!r}: only paths inside the folder are served", 403)
    base = Path(root).resolve()
    path = (base / Path(*parts)).resolve()
    if not is_inside(base, path):
        raise StudioError(f"refused path {relative!r}: it leads outside the folder", 403)
    if not path.exists():
        raise StudioError(f"{relative}: not found", 404)
    return path


def servable(root, relative: str, *, hidden: bool = False) -> tuple[Path, str]:
    """A file the studio serves: (path inside `root`, its content type). Refused: folders, other suffixes."""
    path = resolve_inside(root, relative, hidden=hidden)
    kind = CONTENT_TYPES.get(path.suffix.lower())
    if not path.is_file() or kind is None:
        raise StudioError(f"refused path {relative!r}: not a media, JSON or text file", 403)
    return path, kind
