"""Kinetics (400 / 600 / 700) as published: an annotation CSV ``label,youtube_id,time_start,time_end,split``
(one row per clip; a test CSV may have no label) and the videos as the common downloaders lay them out.

A clip's video is ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` (any video extension), flat or in
per-label folders: already cut to the clip's 10 s window, so all of it is read. A whole YouTube video
``{youtube_id}.mp4`` is read within the window (seconds from its first frame). Videos that are missing (a
tenth of Kinetics is gone from YouTube) are counted and listed, not fatal. Labels follow the sorted class
names of the whole CSV, so every split of it numbers the classes the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from vidiff.data.listing import Listing, VideoJob
from vidiff.errors import DataError
from vidiff.io.files import find_videos

__all__ = ["listing", "read_annotations"]

COLUMNS = ("youtube_id", "time_start", "time_end")
SPLIT_NAMES = {"val": "val", "validate": "val", "validation": "val", "train": "train", "test": "test"}


def read_annotations(path: Path) -> list[dict]:
    """The rows of a Kinetics CSV, each with youtube_id, time_start, time_end (ints), label, split."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not set(COLUMNS) <= set(reader.fieldnames or ()):
            raise DataError(
                f"{path}: not a Kinetics annotation CSV; its header should name "
                f"label,youtube_id,time_start,time_end,split"
            )
        rows = []
        for n, row in enumerate(reader, start=2):
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise DataError(f"{path}: line {n}: time_start and time_end must be seconds") from None
            rows.append(
                {
                    "youtube_id": row["youtube_id"],
                    "time_start": start,
                    "time_end": end,
                    "label": (row.get("label") or "").strip(),
                    "split": (row.get("split") or "").strip(),
                }
            )
    return rows


def _annotation_file(src: Path, split: str, annotations: Optional[str]) -> Path:
    if annotations:
        return Path(annotations)
    csvs = sorted(src.glob("*.csv"))
    named = [p for p in csvs if SPLIT_NAMES.get(p.stem.lower()) == SPLIT_NAMES.get(split)]
    if len(named) == 1 or len(csvs) == 1:
        return (named or csvs)[0]
    raise DataError(
        f"{src}: give the annotation CSV with --annotations (found {len(csvs)} CSV files, none named "
        f"for split {split!r})"
    )


def listing(src, split: str = "train", fps=None, annotations: Optional[str] = None) -> Listing:
    """The clips of ``split`` (a value of the CSV's split column, or ``all``) whose videos are under ``src``."""
    src = Path(src)
    path = _annotation_file(src, split, annotations)
    rows = read_annotations(path)
    classes = tuple(sorted({r["label"] for r in rows if r["label"]}))
    index = {name: i for i, name in enumerate(classes)}
    if split != "all":
        want = SPLIT_NAMES.get(split, split)
        rows = [r for r in rows if SPLIT_NAMES.get(r["split"], r["split"]) == want]
        if not rows:
            raise DataError(f"{path}: no clip of split {split!r}")
    files = {p.stem: p for p in find_videos(src, allow_empty=True)}
    jobs, missing = [], []
    for r in rows:
        clip = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
        label = index.get(r["label"], -1)
        if clip in files:
            jobs.append(VideoJob(str(files[clip]), files[clip].relative_to(src).as_posix(), label, fps=fps))
        elif r["youtube_id"] in files:
            whole = files[r["youtube_id"]]
            jobs.append(
                VideoJob(
                    str(whole),
                    f"{whole.relative_to(src).as_posix()}@{r['time_start']}-{r['time_end']}",
                    label,
                    fps=fps,
                    window=(r["time_start"], r["time_end"]),
                )
            )
        else:
            missing.append(clip)
    if not jobs:
        raise DataError(
            f"{src}: none of the {len(rows)} videos of {path.name} ({split}) is there; give the folder the "
            f"videos were downloaded into (named youtube_id_start_end.mp4, flat or in label folders)"
        )
    return Listing(
        jobs, classes, missing=missing, meta={"dataset": "kinetics", "split": split, "annotations": path.name}
    )
