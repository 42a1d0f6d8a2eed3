"""Preparing a folder of videos for fast training: each video decoded once into fixed-size uint8 clips
written to WebDataset shards (:mod:`vidiff.data.shards`), with their captions and labels.

A video gives its clips back to back: clip k is the ``frames`` slots from ``k * frames`` of the file read
at ``fps`` frames per second (default: its own rate) by presentation time, exactly as
:class:`~vidiff.data.VideoFolder` reads a clip; frames are resized to just cover ``size`` and centre
cropped. The files are listed, probed and annotated like a training folder (captions.csv /
metadata.jsonl / class sub-folders). An unreadable video stops the run with one error naming it, or with
``skip_errors`` is skipped and listed in the summary.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from vidiff.data.errors import DataError
from vidiff.data.shards import INDEX, ShardWriter, encode_clip
from vidiff.data.transforms import center_crop, cover_shape, parse_size
from vidiff.data.video_folder import VideoFolder
from vidiff.data.video_reader import ShortVideoError, VideoInfo, decode_frames

__all__ = ["parse_bytes", "prepare_shards", "video_clips"]

logger = logging.getLogger("vidiff.data")

MAX_FRAMES_PER_READ = 512  # a long video is decoded in pieces of whole clips (each read seeks to its start)


def parse_bytes(text: str) -> int:
    """'1GB', '500MB', '64k', '1e9' -> bytes (powers of 1000; KiB/MiB/GiB powers of 1024)."""
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    t = text.strip().lower()
    number = t.rstrip("kmgtib")
    try:
        value = float(number) * units[t[len(number):].strip()]
    except (ValueError, KeyError):
        raise DataError(f"{text!r} is not a size in bytes; write e.g. 1GB, 500MB or 64MiB") from None
    if value < 1:
        raise DataError(f"a shard size must be positive, got {text!r}")
    return int(value)


def video_clips(info: VideoInfo, frames: int, size) -> list[tuple[int, np.ndarray]]:
    """Every whole clip of ``frames`` slots of a video, back to back: [(first slot, uint8 c f h w)]."""
    h, w = parse_size(size)
    try:
        return _clips(info, frames, h, w)
    except ShortVideoError as e:  # the metadata overstated the length: keep what decodes
        if e.frames_decoded < frames:
            raise
        logger.warning("%s; keeping the clips of its %d decodable frames", e, e.frames_decoded)
        return _clips(replace(info, num_frames=e.frames_decoded), frames, h, w)


def _clips(info: VideoInfo, frames: int, h: int, w: int) -> list[tuple[int, np.ndarray]]:
    starts = list(range(0, info.num_frames - frames + 1, frames))
    per_read = max(1, MAX_FRAMES_PER_READ // frames)
    out = []
    for i in range(0, len(starts), per_read):
        chunk = starts[i: i + per_read]
        got = decode_frames(info, list(range(chunk[0], chunk[-1] + frames)), hw=cover_shape(info.height, info.width,
                                                                                            h, w))
        got = center_crop(got, h, w)  # f h w c
        for k, s in enumerate(chunk):
            out.append((s, np.ascontiguousarray(got[k * frames: (k + 1) * frames].transpose(3, 0, 1, 2))))
    return out


def _decode_job(job):
    info, frames, size = job
    try:
        return video_clips(info, frames, size)
    except DataError as e:
        return e


def _results(jobs: list, workers: int):
    if workers <= 1:
        yield from map(_decode_job, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_decode_job, jobs)  # in order: the shards do not depend on the workers


def prepare_shards(src, out, frames: int, size, fps: Optional[float] = None, shard_bytes: int = 10**9,
                   skip_errors: bool = False, workers: int = 0, progress: bool = True) -> dict:
    """Decode every video under ``src`` once into clips in shards under ``out`` (see the module
    docstring). Returns the summary: clips, shards, bytes, seconds, videos, skipped (files), out."""
    t0 = time.time()
    out = Path(out)
    if (out / INDEX).exists():
        raise DataError(f"{out} already holds prepared shards ({INDEX}); give a new folder or delete it")
    h, w = parse_size(size)
    folder = VideoFolder(src, frames, (h, w), skip_bad_files=skip_errors, fps=fps)
    skipped = [*folder.skipped_bad, *folder.skipped_short]
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, shard_bytes)
    try:
        clips, captioned, failed = _write(folder, writer, frames, (h, w), skip_errors, workers, progress)
    except BaseException:
        writer.abort()
        raise
    if not clips:
        raise DataError(f"{src}: no clip of {frames} frames could be made from its videos")
    index = writer.close({"frames": frames, "size": [h, w], "fps": fps, "classes": list(folder.classes),
                          "captioned": captioned, "source": str(src), "videos": len(folder.files) - len(failed)})
    return {"clips": clips, "shards": len(index["shards"]), "bytes": index["bytes"], "seconds": time.time() - t0,
            "videos": index["videos"], "skipped": skipped + failed, "out": str(out)}


def _write(folder: VideoFolder, writer: ShardWriter, frames: int, size: tuple, skip_errors: bool, workers: int,
           progress: bool) -> tuple[int, int, list]:
    """Every clip of every video of ``folder`` into ``writer``: (clips, captioned clips, failed files)."""
    clips = captioned = 0
    failed: list = []
    jobs = [(info, frames, size) for info in folder.infos]
    bar = tqdm(total=len(jobs), desc="preparing", unit="video", disable=not progress, dynamic_ncols=True)
    for i, result in enumerate(_results(jobs, workers)):
        bar.update(1)
        if isinstance(result, DataError):
            if not skip_errors:
                raise DataError(f"{result}\n(no index written: {writer.out} is incomplete; fix or remove the file and "
                                f"prepare again, or pass --skip-errors)")
            logger.warning("skipping %s", result)
            failed.append(folder.files[i])
            continue
        caption, label = folder.captions[i], folder.labels[i]
        for start, clip in result:
            meta = {"file": folder.files[i], "start": start, "fps": float(folder.infos[i].fps), "caption": caption,
                    "label": label}
            writer.add(f"{clips:09d}", encode_clip(clip, meta))
            clips += 1
            captioned += bool(caption)
        bar.set_postfix(clips=clips, shards=len(writer.shards) + 1)
    bar.close()
    return clips, captioned, failed
