"""Datasets of videos for training: the built-in moving shapes, folders of videos, folders of images,
prepared shards (``vidiff prepare``: :mod:`vidiff.data.shards`).

Every dataset yields dicts ``{"video": float32 (c f h w) in [-1, 1], "label": int (-1 if none),
"caption": str ("" if none)}``, which the default ``DataLoader`` collate turns into a ``(b c f h w)``
batch, a label tensor and a list of captions. Each dataset exposes ``classes`` and ``num_classes``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vidiff.data.image_folder import ImageFolder
from vidiff.data.moving_shapes import COLORS, DIRECTIONS, PALETTE, SHAPES, MovingShapes, describe_video
from vidiff.data.shards import ShardDataset, is_shard_spec
from vidiff.data.video_folder import VideoFolder
from vidiff.errors import DataError
from vidiff.io.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, find_files, find_videos

__all__ = [
    "BUILTIN_DATASETS",
    "COLORS",
    "DIRECTIONS",
    "PALETTE",
    "SHAPES",
    "ShardDataset",
    "DataError",
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "MovingShapes",
    "VIDEO_EXTENSIONS",
    "VideoFolder",
    "build_dataset",
    "dataset_from_config",
    "describe_video",
]

logger = logging.getLogger("vidiff.data")

BUILTIN_DATASETS = ("builtin:moving-shapes",)


_BUILTIN_OPTIONS = {
    "colors": "comma list",
    "shapes": "comma list",
    "directions": "comma list",
    "label": "object | color | shape | direction",
    "second_shape": "true | false",
    "speed": "factor on the speeds",
}


def _builtin_options(spec: str) -> dict:
    """The keywords of ``builtin:moving-shapes?directions=right&label=direction``."""
    query = spec.partition("?")[2]
    options = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if key not in _BUILTIN_OPTIONS or not sep:
            raise DataError(
                f"{spec}: {part!r} is not an option of the built-in moving shapes; options: "
                + ", ".join(f"{k}=<{v}>" for k, v in _BUILTIN_OPTIONS.items())
            )
        if key == "second_shape":
            if value not in ("true", "false"):
                raise DataError(f"{spec}: second_shape takes true or false, got {value!r}")
            options[key] = value == "true"
        elif key == "speed":
            try:
                options[key] = float(value)
            except ValueError:
                raise DataError(f"{spec}: speed takes a number, got {value!r}") from None
        else:
            options[key] = tuple(value.split(",")) if key != "label" else value
    return options


def build_dataset(
    spec: str,
    *,
    frames: int,
    size: int | tuple[int, int],
    frame_stride: int = 1,
    flip: bool = False,
    skip_bad_files: bool = False,
    seed: int = 0,
    fps: float | None = None,
    **kw,
):
    """The dataset named by ``spec``: ``"builtin:moving-shapes"``, a folder, or prepared shards.

    The built-in shapes take options after a ``?``: ``builtin:moving-shapes?directions=right`` (only
    clips that move right), ``?label=direction`` (the direction is the class), ``colors=``, ``shapes=``
    (comma lists), ``second_shape=true``, ``speed=1.5`` (a factor on the speeds), joined with ``&``.

    Prepared shards (a folder holding ``index.json``, that index's path or URL, or a pattern of shards
    such as ``OUT/shards-{000000..000009}.tar``, a URL or a ``pipe:`` command) give a
    :class:`ShardDataset`; their clips were cut when they were prepared (``frame_stride`` and ``fps``
    are ignored). A folder with video files gives a :class:`VideoFolder`; one with images but no videos gives an
    :class:`ImageFolder` of one-frame videos. ``seed`` fixes the built-in dataset's clips (folder
    datasets draw their crops and flips from the generator given to ``item(index, generator)``);
    ``flip`` and ``frame_stride`` apply to folders only, ``fps`` (the rate clips are sampled at; None:
    each file's own) to video folders only. Extra keyword arguments go to the dataset class.
    """
    if spec.partition("?")[0] == "builtin:moving-shapes":
        if flip:
            logger.warning("flip ignored for builtin:moving-shapes: it would swap 'left' and 'right' in captions")
        if fps is not None:
            logger.warning("fps ignored for builtin:moving-shapes: its clips are generated frame by frame")
        options = _builtin_options(spec)
        try:
            return MovingShapes(frames=frames, size=size, seed=seed, **options, **kw)
        except ValueError as e:
            raise DataError(f"{spec}: {e}") from e
    if spec.startswith("builtin:"):
        raise DataError(f"unknown built-in dataset {spec!r}; available: {', '.join(BUILTIN_DATASETS)}")
    if is_shard_spec(spec):
        ds = ShardDataset(spec, frames, size, flip=flip, skip_bad_files=skip_bad_files, **kw)
        if fps is not None and ds.fps != fps:
            logger.warning("fps=%s ignored: the shards were prepared at %s", fps, ds.fps or "each file's own rate")
        if frame_stride != 1:
            logger.warning("frame_stride=%d ignored: the shards' clips were cut when they were prepared", frame_stride)
        return ds
    root = Path(spec).expanduser()
    if not root.exists():
        raise DataError(
            f"{spec}: no such folder; give a folder of videos (or images) or one of {', '.join(BUILTIN_DATASETS)}"
        )
    if not root.is_dir():
        raise DataError(f"{spec}: is a file; give the folder that holds the videos, or {', '.join(BUILTIN_DATASETS)}")
    if find_videos(root, allow_empty=True):
        return VideoFolder(
            root, frames, size, frame_stride=frame_stride, flip=flip, skip_bad_files=skip_bad_files, fps=fps, **kw
        )
    if find_files(root, IMAGE_EXTENSIONS):
        logger.info("%s holds images and no videos: using it as a dataset of one-frame videos", root)
        return ImageFolder(root, size, flip=flip, **kw)
    raise DataError(
        f"{root}: no videos ({' '.join(VIDEO_EXTENSIONS)}) or images ({' '.join(IMAGE_EXTENSIONS)}) found; "
        f"put data there or use {', '.join(BUILTIN_DATASETS)}"
    )


def dataset_from_config(data, *, seed: int = 0, **overrides):
    """The clips a config's ``data`` section (a :class:`vidiff.config.DataConfig`) names, read as training
    reads them: its source, frames, size, frame stride, fps (0: each file's own), flips, bad-file policy
    and, for a built-in set, its length. ``overrides`` replace fields (more frames for I3D, no flips);
    ``seed`` is the run's ``train.seed``, which fixes the built-in clips."""
    names = ("source", "frames", "size", "frame_stride", "fps", "flip", "skip_bad_files", "num_videos")
    d = {name: getattr(data, name) for name in names}
    unknown = set(overrides) - set(names)
    if unknown:
        raise TypeError(f"dataset_from_config: unknown field(s) {sorted(unknown)}; fields are {names}")
    d.update(overrides)
    kw = {"num_videos": d["num_videos"]} if d["source"].startswith("builtin:") else {}
    return build_dataset(
        d["source"],
        frames=d["frames"],
        size=d["size"],
        frame_stride=d["frame_stride"],
        flip=d["flip"],
        fps=d["fps"] or None,
        skip_bad_files=d["skip_bad_files"],
        seed=seed,
        **kw,
    )
