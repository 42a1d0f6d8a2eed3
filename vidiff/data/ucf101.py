"""UCF-101 (Soomro et al. 2012) as published: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the official
splits ``ucfTrainTestlist/{classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt}``.

``classInd.txt`` lines are ``<index from 1> <Class>``; a train list's lines ``<Class>/<file>.avi <index>``,
a test list's ``<Class>/<file>.avi``. Labels are the classInd order (from 0), so the class names of a
class-conditional model are UCF-101's. Split ``train1`` is trainlist01.txt, ``test2`` testlist02.txt,
``all`` every video under UCF-101/.
"""

from __future__ import annotations

from pathlib import Path

from vidiff.data.listing import Listing, VideoJob
from vidiff.errors import DataError
from vidiff.io.files import find_videos

__all__ = ["SPLITS", "listing", "read_classes", "read_split"]

SPLITS = ("train1", "test1", "train2", "test2", "train3", "test3", "all")


def _folders(src) -> tuple[Path, Path]:
    """(the UCF-101 video folder, the ucfTrainTestlist folder) under or beside ``src``."""
    src = Path(src)
    for videos, lists in (
        (src / "UCF-101", src / "ucfTrainTestlist"),
        (src, src / "ucfTrainTestlist"),
        (src, src.parent / "ucfTrainTestlist"),
    ):
        if videos.is_dir() and (lists / "classInd.txt").is_file():
            return videos, lists
    raise DataError(
        f"{src}: not UCF-101 as published; give the folder holding UCF-101/ (the class folders of .avi) "
        f"and ucfTrainTestlist/ (classInd.txt and the split lists, from UCF101TrainTestSplits-"
        f"RecognitionTask.zip)"
    )


def read_classes(lists: Path) -> tuple:
    """The class names in classInd.txt's order."""
    path = lists / "classInd.txt"
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    numbers = [int(r[0]) if len(r) == 2 and r[0].isdigit() else -1 for r in rows]
    if numbers != list(range(1, len(rows) + 1)):
        raise DataError(f"{path}: expected lines '<index from 1> <Class>' numbered 1, 2, 3, …")
    return tuple(r[1] for r in rows)


def read_split(lists: Path, split: str) -> list[str]:
    """The videos of ``split`` (train1 … test3) as listed: 'Class/v_Class_gXX_cYY.avi'."""
    kind, number = split[:-1], split[-1]
    path = lists / f"{kind}list0{number}.txt"
    if not path.is_file():
        raise DataError(f"{path}: missing; ucfTrainTestlist/ should hold {kind}list0{number}.txt")
    return [line.split()[0].replace("\\", "/") for line in path.read_text().splitlines() if line.strip()]


def listing(src, split: str = "train1", fps=None, skip_errors: bool = False) -> Listing:
    """The videos of ``split`` with their classInd labels."""
    if split not in SPLITS:
        raise DataError(f"--split {split}: UCF-101's splits are {', '.join(SPLITS)}")
    videos, lists = _folders(src)
    classes = read_classes(lists)
    index = {name: i for i, name in enumerate(classes)}
    files = (
        [p.relative_to(videos).as_posix() for p in find_videos(videos)] if split == "all" else read_split(lists, split)
    )
    missing = [f for f in files if not (videos / f).is_file()]
    unknown = [f for f in files if f.split("/")[0] not in index]
    if (missing or unknown) and not skip_errors:
        what = (
            f"{len(missing)} listed videos are missing, e.g. {videos / missing[0]}"
            if missing
            else f"{unknown[0]}: its folder is not a class of classInd.txt"
        )
        raise DataError(f"{videos}: {what}; download UCF-101 again, or pass --skip-errors to leave them out")
    bad = set(missing) | set(unknown)
    jobs = [VideoJob(str(videos / f), f, index[f.split("/")[0]], fps=fps) for f in files if f not in bad]
    return Listing(jobs, classes, skipped=unknown, missing=missing, meta={"dataset": "ucf101", "split": split})
