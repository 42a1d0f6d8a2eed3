"""Preparing a dataset for fast training: each video decoded once into fixed-size uint8 clips written
to WebDataset shards (:mod:`vidiff.data.shards`), with their captions and labels.

The dataset is read as it is published, through one module per layout (``format``): ``folder`` (a
folder of videos, annotated like a training folder: captions.csv / metadata.jsonl / class sub-folders),
``bair`` (:mod:`vidiff.data.bair`), ``ucf101`` (:mod:`vidiff.data.ucf101`), ``kinetics``
(:mod:`vidiff.data.kinetics`). A video gives its clips back to back: clip k is the ``frames`` slots from
``k * frames`` of the file read at ``fps`` frames per second (default: its own rate) by presentation time,
exactly as :class:`~vidiff.data.VideoFolder` reads a clip; frames are resized to just cover ``size`` and
centre cropped. An unreadable video stops the run with one error naming it, or with ``skip_errors`` is
skipped and listed in the summary. Given a text encoder, each clip also stores its caption's encoder
output (float16), so that training a text model reads it instead of running the encoder in every step.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from vidiff.data import bair, kinetics, ucf101
from vidiff.data.listing import Listing, VideoJob, video_clips
from vidiff.data.shards import INDEX, ShardWriter, encode_clip
from vidiff.data.video_folder import VideoFolder
from vidiff.errors import DataError
from vidiff.io.frames import parse_size

__all__ = ["FORMATS", "caption_tokens", "parse_bytes", "prepare_shards", "text_embeddings_meta", "video_clips"]

logger = logging.getLogger("vidiff.data")


def parse_bytes(text: str) -> int:
    """'1GB', '500MB', '64k', '1e9' -> bytes (powers of 1000; KiB/MiB/GiB powers of 1024)."""
    units = {
        "": 1,
        "b": 1,
        "k": 1e3,
        "kb": 1e3,
        "m": 1e6,
        "mb": 1e6,
        "g": 1e9,
        "gb": 1e9,
        "t": 1e12,
        "tb": 1e12,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
        "tib": 2**40,
    }
    t = text.strip().lower()
    number = t.rstrip("kmgtib")
    try:
        value = float(number) * units[t[len(number) :].strip()]
    except (ValueError, KeyError):
        raise DataError(f"{text!r} is not a size in bytes; write e.g. 1GB, 500MB or 64MiB") from None
    if value < 1:
        raise DataError(f"a shard size must be positive, got {text!r}")
    return int(value)


def folder_listing(src, frames: int, size, fps: Optional[float] = None, skip_errors: bool = False) -> Listing:
    """A folder of videos, probed and annotated like a training folder."""
    folder = VideoFolder(src, frames, size, skip_bad_files=skip_errors, fps=fps)
    jobs = [
        VideoJob(info.path, f, label, caption, fps, info)
        for f, info, label, caption in zip(folder.files, folder.infos, folder.labels, folder.captions)
    ]
    return Listing(jobs, tuple(folder.classes), [*folder.skipped_bad, *folder.skipped_short])


@dataclass(frozen=True)
class Format:
    """A published layout: how its videos are listed, (src, the options of dataset_listing) -> Listing,
    and what `vidiff prepare --help` says of its folder and of its splits."""

    listing: Callable
    layout: str
    splits: str = ""


# A published layout is one module that lists its videos, and one entry here.
FORMATS = {
    "folder": Format(
        lambda src, o: folder_listing(src, o["frames"], o["size"], o["fps"], o["skip_errors"]),
        "videos, with captions.csv / metadata.jsonl or class sub-folders (the default)",
    ),
    "bair": Format(
        lambda src, o: bair.listing(src, o["split"] or "train", o["camera"]),
        "softmotion30_44k/{train,test}/*.tfrecords",
        "train | test",
    ),
    "ucf101": Format(
        lambda src, o: ucf101.listing(src, o["split"] or "train1", o["fps"], o["skip_errors"]),
        "UCF-101/<Class>/*.avi + ucfTrainTestlist/",
        "train1 | test1 | train2 | test2 | train3 | test3 | all",
    ),
    "kinetics": Format(
        lambda src, o: kinetics.listing(src, o["split"] or "train", o["fps"], o["annotations"]),
        "annotation CSV + downloaded youtube_id_start_end.mp4 videos",
        "train | val | test | all (the CSV's split column)",
    ),
}


def dataset_listing(
    src,
    frmt: str,
    frames: int,
    size,
    fps=None,
    skip_errors: bool = False,
    split=None,
    camera: str = "aux1",
    annotations=None,
) -> Listing:
    """The videos of ``src`` as the published layout ``frmt`` (one of :data:`FORMATS`) lists them."""
    if frmt not in FORMATS:
        raise DataError(f"--format {frmt}: the formats are {', '.join(FORMATS)}")
    options = dict(
        frames=frames, size=size, fps=fps, skip_errors=skip_errors, split=split, camera=camera, annotations=annotations
    )
    return FORMATS[frmt].listing(src, options)


def text_embeddings_meta(encoder) -> dict:
    """What the shard index records of the text encoder (a :class:`vidiff.nn.text.TextEncoder`) that made
    the stored caption encodings: the model checks it is its own."""
    return {
        "encoder": encoder.name,
        "fingerprint": encoder.fingerprint,
        "max_length": encoder.max_length,
        "dim": encoder.dim,
    }


def caption_tokens(encoder, captions: list) -> list:
    """Each caption's encoder output without its padding: float16 numpy arrays (n, d)."""
    tokens, mask = encoder.encode(captions)  # (b, n, d) float32, (b, n)
    return [t[:n].half().cpu().numpy() for t, n in zip(tokens, mask.sum(1).tolist())]


def _decode_job(job):
    job, frames, size = job
    try:
        return job.videos(frames, size)
    except DataError as e:
        return e


def _results(jobs: list, workers: int):
    if workers <= 1:
        yield from map(_decode_job, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_decode_job, jobs)  # in order: the shards do not depend on the workers


def prepare_shards(
    src,
    out,
    frames: int,
    size,
    fps: Optional[float] = None,
    shard_bytes: int = 10**9,
    skip_errors: bool = False,
    workers: int = 0,
    progress: bool = True,
    format: str = "folder",
    text_encoder=None,
    **options,
) -> dict:
    """Decode every video of ``src`` (read as the published layout ``format``; ``options``: split, camera,
    annotations) once into clips in shards under ``out`` (see the module docstring), with each clip's
    caption encoded by ``text_encoder`` (a :class:`vidiff.nn.text.TextEncoder`) where given. Returns the summary:
    clips, shards, bytes, seconds, videos, skipped (unreadable or short files), missing (listed by the
    dataset, not found), out."""
    t0 = time.time()
    out = Path(out)
    if (out / INDEX).exists():
        raise DataError(f"{out} already holds prepared shards ({INDEX}); give a new folder or delete it")
    h, w = parse_size(size)
    listing = dataset_listing(src, format, frames, (h, w), fps, skip_errors, **options)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, shard_bytes)
    try:
        clips, captioned, videos, failed = _write(
            listing, writer, frames, (h, w), skip_errors, workers, progress, text_encoder
        )
    except BaseException:
        writer.abort()
        raise
    if not clips:
        raise DataError(f"{src}: no clip of {frames} frames could be made from its videos")
    meta = {"format": format, **listing.meta, "missing": len(listing.missing)}
    index = writer.close(
        {
            "frames": frames,
            "size": [h, w],
            "fps": listing.meta.get("fps", fps),
            "classes": list(listing.classes),
            "captioned": captioned,
            "source": str(src),
            "videos": videos,
            "dataset": meta,
            **({"text_embeddings": text_embeddings_meta(text_encoder)} if text_encoder is not None else {}),
        }
    )
    return {
        "clips": clips,
        "shards": len(index["shards"]),
        "bytes": index["bytes"],
        "seconds": time.time() - t0,
        "videos": videos,
        "skipped": listing.skipped + failed,
        "missing": listing.missing,
        "out": str(out),
    }


def _write(
    listing: Listing,
    writer: ShardWriter,
    frames: int,
    size: tuple,
    skip_errors: bool,
    workers: int,
    progress: bool,
    text_encoder=None,
) -> tuple[int, int, int, list]:
    """Every clip of every video of ``listing`` into ``writer``: (clips, captioned clips, videos, failed)."""
    clips = captioned = videos = 0
    failed: list = []
    jobs = [(job, frames, size) for job in listing.jobs]
    bar = tqdm(total=len(jobs), desc="preparing", unit="file", disable=not progress, dynamic_ncols=True)
    for (job, _, _), result in zip(jobs, _results(jobs, workers)):
        bar.update(1)
        if isinstance(result, DataError):
            if not skip_errors:
                raise DataError(
                    f"{result}\n(no index written: {writer.out} is incomplete; fix or remove the file and "
                    f"prepare again, or pass --skip-errors)"
                )
            logger.warning("skipping %s", result)
            failed.append(getattr(job, "name", job.path))
            continue
        for video in result:
            if not video.clips:
                failed.append(video.name)  # shorter than one clip
            videos += bool(video.clips)
            # a video's clips share its caption ("" too: the text conditioning encodes it like any other)
            tokens = caption_tokens(text_encoder, [video.caption])[0] if text_encoder and video.clips else None
            for start, clip in video.clips:
                meta = {
                    "file": video.name,
                    "start": start,
                    "fps": video.fps,
                    "caption": video.caption,
                    "label": video.label,
                }
                writer.add(f"{clips:09d}", encode_clip(clip, meta, tokens))
                clips += 1
                captioned += bool(video.caption)
        bar.set_postfix(clips=clips, shards=len(writer.shards) + 1)
    bar.close()
    return clips, captioned, videos, failed
