"""Labels and captions for the folder datasets.

Two sources, in this order:

1. A metadata file in the dataset root: ``captions.csv`` (with a header row) or ``metadata.jsonl``
   (one JSON object per line). Each row names a ``file`` (path relative to the root, ``/``-separated)
   and may give a ``caption`` and a ``label``. Labels may be integers (used as class indices) or
   class names (sorted, then numbered). Every data file must appear exactly once, and every row must
   name an existing data file.
2. Sub-folders: when no label comes from the metadata and every file sits in a sub-folder of the
   root, the first folder name is the class (sorted names -> indices).

Missing labels are -1, missing captions "".
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Sequence

from vidiff.errors import DataError

METADATA_FILES = ("captions.csv", "metadata.jsonl")


def _read_metadata(root: Path) -> tuple[Path, list[dict]] | None:
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: found both {' and '.join(p.name for p in found)}; keep only one of them")
    if not found:
        return None
    path = found[0]
    rows = []
    try:
        if path.suffix == ".csv":
            # utf-8-sig: spreadsheet programs start the file with a byte-order mark, which would
            # otherwise become part of the first column's name
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        else:
            with open(path, encoding="utf-8-sig") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise ValueError(f"line {n} is not a JSON object")
                        rows.append(row)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read this metadata file ({e}); fix or remove it") from e
    if any("file" not in row or not str(row["file"]).strip() for row in rows):
        raise DataError(f"{path}: every row needs a 'file' column/key holding a path relative to {root}")
    return path, rows


def _few(items: Sequence[str], n: int = 5) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_annotations(
    root: Path, files: Sequence[str], labels: str | None = "auto", captions: str | None = "auto"
) -> tuple[list[int], list[str], list[str]]:
    """Labels, captions and class names for ``files`` (posix paths relative to ``root``).

    Args:
        labels: ``"auto"`` (metadata, else sub-folders, else none), ``"metadata"``, ``"folders"`` or
            None (no labels).
        captions: ``"auto"`` (from the metadata file when there is one) or None.

    Returns:
        (per-file labels, -1 where none; per-file captions, "" where none; class names).
    """
    if labels not in ("auto", "metadata", "folders", None) or captions not in ("auto", None):
        raise ValueError(
            f"labels must be 'auto', 'metadata', 'folders' or None and captions 'auto' or None; "
            f"got labels={labels!r}, captions={captions!r}"
        )
    n = len(files)
    out_labels, out_captions, classes = [-1] * n, [""] * n, []
    meta = _read_metadata(root) if labels in ("auto", "metadata") or captions == "auto" else None
    if meta is None and labels == "metadata":
        raise DataError(f"{root}: labels='metadata' but there is no {' or '.join(METADATA_FILES)} in it")

    meta_labels = None
    if meta is not None:
        path, rows = meta
        index = {f: i for i, f in enumerate(files)}
        named = [str(row["file"]).strip().replace("\\", "/") for row in rows]
        missing = sorted({f for f in named if f not in index})
        if missing:
            raise DataError(f"{path} names files that are not data files under {root}: {_few(missing)}")
        unlisted = sorted(set(files) - set(named))
        if unlisted:
            raise DataError(f"{path} has no row for these files under {root}: {_few(unlisted)}; add rows")
        twice = sorted(f for f, k in Counter(named).items() if k > 1)
        if twice:
            raise DataError(f"{path} lists these files more than once: {_few(twice)}")
        if captions == "auto":
            for f, row in zip(named, rows):
                out_captions[index[f]] = "" if row.get("caption") is None else str(row["caption"])
        if labels in ("auto", "metadata"):
            values = {
                index[f]: str(row["label"]).strip()
                for f, row in zip(named, rows)
                if row.get("label") is not None and str(row["label"]).strip()
            }
            if values:
                meta_labels = values
            elif labels == "metadata":
                raise DataError(f"{path} has no 'label' values; add a label column or use other labels")

    if meta_labels is not None:
        if all(v.lstrip("-").isdigit() for v in meta_labels.values()):
            ints = {i: int(v) for i, v in meta_labels.items()}
            if min(ints.values()) < 0:
                raise DataError(f"{meta[0]}: integer labels must be >= 0")
            classes = [str(c) for c in range(max(ints.values()) + 1)]
            for i, v in ints.items():
                out_labels[i] = v
        else:
            classes = sorted(set(meta_labels.values()))
            for i, v in meta_labels.items():
                out_labels[i] = classes.index(v)
    elif labels in ("auto", "folders"):
        in_folders = all("/" in f for f in files)
        if labels == "folders" and not in_folders:
            loose = [f for f in files if "/" not in f]
            raise DataError(f"{root}: labels='folders' but some files are not in a class sub-folder: {_few(loose)}")
        if in_folders and files:
            classes = sorted({f.split("/", 1)[0] for f in files})
            out_labels = [classes.index(f.split("/", 1)[0]) for f in files]
    return out_labels, out_captions, classes
