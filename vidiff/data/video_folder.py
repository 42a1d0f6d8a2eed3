"""A folder of video files as a dataset of fixed-length clips.

Every video file under the root (:func:`vidiff.files.find_videos`: recursively, sorted, hidden files
skipped; extensions :data:`vidiff.files.VIDEO_EXTENSIONS`) is probed once at
construction with PyAV: its frame count (from the stream metadata, or by counting demuxed packets when
the metadata has none), its first frame's timestamp and its frame rate; the first frame is decoded
to check that the file is usable. An item is one clip per file: ``frames`` frames ``frame_stride``
apart from a random start. Only the clip is decoded: the reader seeks to the keyframe before the clip
start and decodes forward, mapping timestamps to frame indices at the stream's frame rate; where the
timestamps do not fit that rate (variable frame rate), it falls back to decoding from the start.

Frames are converted to RGB whatever their pixel format (grey, RGBA, palette, 10-bit YUV, ...),
resized so that they just cover ``size`` and centre cropped, optionally flipped left-right, and scaled
to [-1, 1]. Items are dicts ``{"video": float32 (c f h w), "label": int, "caption": str}``.

Labels and captions (see :mod:`vidiff.data.annotations`):

- a ``captions.csv`` or ``metadata.jsonl`` in the root with columns/keys ``file`` (path relative to the
  root), optional ``caption`` and optional ``label`` (integer or class name); it must list every video
  exactly once and nothing else;
- otherwise, when every video sits in a sub-folder, the sub-folder name is the class (sorted names ->
  indices).

Without a label the item's label is -1; without a caption it is "".

Videos shorter than one clip are skipped, and their number is logged on the ``vidiff.data`` logger.
Unreadable files (corrupt, truncated, no frames, not a video, unsupported pixel format) raise one
:class:`DataError` naming the file, or with ``skip_bad_files=True`` are logged and skipped.
Random choices (start frame, flip) use torch's global RNG, which a ``DataLoader`` seeds per worker and
per epoch; call ``torch.manual_seed`` for a reproducible run.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from vidiff.data.annotations import load_annotations
from vidiff.data.errors import DataError
from vidiff.data.transforms import center_crop, cover_shape, parse_size, to_model_video
from vidiff.files import find_videos

logger = logging.getLogger("vidiff.data")

_ADVICE = "re-encode it (e.g. `ffmpeg -i IN -pix_fmt yuv420p OUT.mp4`), remove it, or pass skip_bad_files=True"


@dataclass(frozen=True)
class VideoInfo:
    """What the index knows about one video file."""

    path: str
    num_frames: int
    height: int
    width: int
    start_pts: int
    pts_per_frame: Fraction | None  # stream time-base units per frame; None: cannot seek by time


def _rgb(frame: av.VideoFrame, path: str, hw: tuple[int, int] | None = None) -> np.ndarray:
    try:
        if hw is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", height=hw[0], width=hw[1], interpolation="AREA")
    except (av.FFmpegError, ValueError) as e:
        raise DataError(f"{path}: cannot convert pixel format {frame.format.name!r} to RGB ({e}); {_ADVICE}") from e


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Index one video file: frame count, size and timing; decodes its first frame as a check."""
    path = str(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise DataError(f"{path}: has no video stream; is it really a video? Remove it or {_ADVICE}")
            stream = container.streams.video[0]
            num_frames = stream.frames
            if num_frames <= 0:
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
                if num_frames > 0:
                    container.seek(0)
            first = next(iter(container.decode(stream)), None) if num_frames > 0 else None
            if first is None:
                raise DataError(f"{path}: the video has zero frames; remove it or pass skip_bad_files=True")
            _rgb(first, path)
            rate = stream.guessed_rate or stream.average_rate
            pts_per_frame = None
            if rate and stream.time_base and first.pts is not None:
                pts_per_frame = 1 / (Fraction(rate) * Fraction(stream.time_base))
            return VideoInfo(
                path=path,
                num_frames=num_frames,
                height=first.height,
                width=first.width,
                start_pts=first.pts or 0,
                pts_per_frame=pts_per_frame,
            )
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot be read as a video ({type(e).__name__}: {e}); the file is corrupt, truncated or "
            f"not a video; {_ADVICE}"
        ) from e


class ShortVideoError(DataError):
    """A video decoded to fewer frames than its index promised."""

    def __init__(self, message: str, frames_decoded: int):
        super().__init__(message)
        self.frames_decoded = frames_decoded


class _NeedSequential(Exception):
    """The seek path could not place the frames; decode from the start instead."""


def _decode_after_seek(container, stream, info: VideoInfo, wanted: list[int], hw) -> dict[int, np.ndarray]:
    step = info.pts_per_frame
    container.seek(info.start_pts + int(wanted[0] * step), backward=True, any_frame=False, stream=stream)
    got, previous, want = {}, None, set(wanted)
    for frame in container.decode(stream):
        if frame.pts is None:
            raise _NeedSequential
        index = round((frame.pts - info.start_pts) / step)
        if (previous is None and index > wanted[0]) or (previous is not None and index != previous + 1):
            raise _NeedSequential  # landed after the clip start, or timestamps off the frame grid
        previous = index
        if index in want:
            got[index] = _rgb(frame, info.path, hw)
        if index >= wanted[-1]:
            break
    return got


def _decode_from_start(container, stream, info: VideoInfo, wanted: list[int], hw) -> tuple[dict[int, np.ndarray], int]:
    got, want, count = {}, set(wanted), 0
    for index, frame in enumerate(container.decode(stream)):
        count = index + 1
        if index in want:
            got[index] = _rgb(frame, info.path, hw)
        if index >= wanted[-1]:
            break
    return got, count


def decode_frames(
    info: VideoInfo, indices: list[int], hw: tuple[int, int] | None = None, seek: bool = True
) -> np.ndarray:
    """Decode the frames at sorted ``indices`` of a video as uint8 RGB (f, h, w, c).

    With ``seek`` (and a known frame rate) decoding starts at the keyframe before ``indices[0]``;
    otherwise at the start of the file. ``hw`` resizes the frames (area filter) while converting.
    Raises :class:`DataError` when the file cannot be decoded or has fewer frames than needed.
    """
    try:
        got = None
        if seek and info.pts_per_frame is not None and indices[0] > 0:
            with av.open(info.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                try:
                    got = _decode_after_seek(container, stream, info, indices, hw)
                except _NeedSequential:
                    got = None
                if got is not None and len(got) < len(indices):
                    got = None
        if got is None:
            with av.open(info.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                got, count = _decode_from_start(container, stream, info, indices, hw)
            if len(got) < len(indices):
                raise ShortVideoError(
                    f"{info.path}: decoded only {count} frames but the index says {info.num_frames} and "
                    f"frame {indices[-1]} was needed; the file is truncated or corrupt; {_ADVICE}",
                    frames_decoded=count,
                )
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(
            f"{info.path}: decoding failed ({type(e).__name__}: {e}); the file is corrupt; {_ADVICE}"
        ) from e
    return np.stack([got[i] for i in indices])  # (f, h, w, c)


class VideoFolder(Dataset):
    """Fixed-length clips from a folder of videos, one item per usable file (see module docstring).

    Args:
        root: folder searched recursively for video files.
        frames: frames per clip.
        size: output frame size, an int or (h, w).
        frame_stride: take every ``frame_stride``-th frame.
        flip: randomly flip clips left-right.
        skip_bad_files: log and skip unreadable files instead of raising :class:`DataError`.
        labels: ``"auto"``, ``"metadata"``, ``"folders"`` or None; see
            :func:`vidiff.data.annotations.load_annotations`.
        captions: ``"auto"`` (from the metadata file) or None.
        num_threads: threads used to index the files.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int,
        size: int | tuple[int, int],
        frame_stride: int = 1,
        flip: bool = False,
        skip_bad_files: bool = False,
        labels: str | None = "auto",
        captions: str | None = "auto",
        num_threads: int = 4,
    ):
        self.root = Path(root)
        if frames < 1 or frame_stride < 1:
            raise ValueError(f"frames and frame_stride must be >= 1, got frames={frames}, frame_stride={frame_stride}")
        self.frames, self.frame_stride, self.size = frames, frame_stride, parse_size(size)
        self.flip, self.skip_bad_files = flip, skip_bad_files
        self.clip_length = (frames - 1) * frame_stride + 1

        files = [p.relative_to(self.root).as_posix() for p in find_videos(self.root)]
        all_labels, all_captions, self.classes = load_annotations(self.root, files, labels, captions)

        def probe(rel: str) -> VideoInfo | DataError:
            try:
                return probe_video(self.root / rel)
            except DataError as e:
                return e

        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            probed = list(pool.map(probe, files))
        bad = [(f, r) for f, r in zip(files, probed) if isinstance(r, DataError)]
        if len(bad) == 1 and not skip_bad_files:
            raise bad[0][1]
        if bad and not skip_bad_files:
            others = ", ".join(f for f, _ in bad[1:4]) + (", ..." if len(bad) > 4 else "")
            raise DataError(f"{bad[0][1]}\n...and {len(bad) - 1} more unusable video files under {self.root}: {others}")
        for _, err in bad:
            logger.warning("skipping bad video: %s", err)
        self.skipped_bad = [f for f, _ in bad]

        ok = [(f, r) for f, r in zip(files, probed) if isinstance(r, VideoInfo)]
        short = [f for f, r in ok if r.num_frames < self.clip_length]
        if short:
            logger.warning(
                "skipping %d of %d videos under %s shorter than one clip of %d frames (frames=%d, frame_stride=%d), "
                "e.g. %s",
                len(short), len(files), self.root, self.clip_length, frames, frame_stride, ", ".join(short[:3]),
            )
        self.skipped_short = short
        keep = [i for i, r in enumerate(probed) if isinstance(r, VideoInfo) and r.num_frames >= self.clip_length]
        if not keep:
            raise DataError(
                f"{self.root}: none of the {len(files)} video files is usable: {len(bad)} unreadable, {len(short)} "
                f"shorter than one clip of {self.clip_length} frames (frames={frames}, frame_stride={frame_stride}); "
                f"use shorter clips or other videos"
            )
        self.files = [files[i] for i in keep]
        self.infos = [probed[i] for i in keep]
        self.labels = [all_labels[i] for i in keep]
        self.captions = [all_captions[i] for i in keep]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.infos)

    def decode_clip(self, index: int, start: int, seek: bool = True) -> np.ndarray:
        """The raw clip of file ``index`` starting at frame ``start``: uint8 RGB (frames, H, W, c)."""
        info = self.infos[index]
        return decode_frames(info, list(range(start, start + self.clip_length, self.frame_stride)), seek=seek)

    def get_clip(self, index: int, start: int, flip: bool = False) -> dict:
        """Item ``index`` with a given start frame and flip, preprocessed like ``dataset[index]``."""
        info = self.infos[index]
        if not 0 <= start <= info.num_frames - self.clip_length:
            raise IndexError(f"{info.path}: clip start {start} out of range [0, {info.num_frames - self.clip_length}]")
        h, w = self.size
        wanted = list(range(start, start + self.clip_length, self.frame_stride))
        frames = decode_frames(info, wanted, hw=cover_shape(info.height, info.width, h, w))
        video = to_model_video(center_crop(frames, h, w), flip=flip)
        return {"video": video, "label": self.labels[index], "caption": self.captions[index]}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"VideoFolder index {index} out of range for {len(self)} videos")
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            info = self.infos[i]
            start = int(torch.randint(info.num_frames - self.clip_length + 1, ()))
            flip = self.flip and bool(torch.rand(()) < 0.5)
            try:
                return self.get_clip(i, start, flip)
            except ShortVideoError as e:
                if e.frames_decoded >= self.clip_length:
                    # the stream metadata overstated the frame count: trust the decoder from now on
                    logger.warning("%s; using its %d decodable frames", e, e.frames_decoded)
                    self.infos[i] = replace(info, num_frames=e.frames_decoded)
                    return self[i]
                if not self.skip_bad_files:
                    raise
                logger.warning("skipping a clip of a bad video, using the next file instead: %s", e)
            except DataError as e:
                if not self.skip_bad_files:
                    raise
                logger.warning("skipping a clip of a bad video, using the next file instead: %s", e)
        raise DataError(f"{self.root}: no video in this folder could be decoded")
