"""What ``vidiff prepare`` reads from a dataset as it is published: a :class:`Listing` of jobs, each of
which a decoding process turns into whole videos (a name, a label, a caption, and the video's clips).

Every published layout (a folder of videos, BAIR's TFRecords, UCF-101's split files, Kinetics' CSV)
is one module in :mod:`vidiff.data` with a function ``listing(src, …) -> Listing``; the shards are written
the same way whichever it was (:func:`vidiff.data.prepare.prepare_shards`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Optional

import numpy as np

from vidiff.io.decode import ShortVideoError, VideoInfo, decode_frames, probe_video
from vidiff.io.frames import center_crop, cover_shape, parse_size

__all__ = ["Listing", "Video", "VideoJob", "frames_to_clips", "video_clips"]

MAX_FRAMES_PER_READ = 512  # a long video is decoded in pieces of whole clips (each read seeks to its start)


@dataclass
class Video:
    """One video made into clips: ``clips`` is [(first slot, uint8 c f h w)], back to back."""

    name: str
    label: int
    caption: str
    fps: float
    clips: list


@dataclass
class Listing:
    """The videos of a dataset: ``jobs`` (each with ``videos(frames, size) -> [Video]``, picklable, run in
    decoding processes), the class names, the files left out before decoding (``skipped``: unreadable or
    too short), the videos the dataset lists that are not there (``missing``), and what the index records
    about the source (``meta``)."""

    jobs: list
    classes: tuple = ()
    skipped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VideoJob:
    """One video file; ``window`` (seconds, [start, end)) limits the clips to a part of it."""

    path: str
    name: str
    label: int = -1
    caption: str = ""
    fps: Optional[float] = None  # the clock clips are read on; None: the file's own rate
    info: Optional[VideoInfo] = None  # already probed (a folder listing probes while it lists)
    window: Optional[tuple] = None

    def videos(self, frames: int, size) -> list:
        info = self.info or probe_video(self.path, fps=self.fps)
        slots = None
        if self.window is not None:  # slot k is shown at k / fps seconds
            start, end = (Fraction(t) * info.fps for t in self.window)
            slots = (math.ceil(start), min(info.num_frames, math.floor(end)))
        return [Video(self.name, self.label, self.caption, float(info.fps), video_clips(info, frames, size, slots))]


def video_clips(info: VideoInfo, frames: int, size, slots: Optional[tuple] = None) -> list[tuple[int, np.ndarray]]:
    """Every whole clip of ``frames`` slots of a video (within ``slots`` = [first, end) if given), back to
    back: [(first slot, uint8 c f h w)]."""
    h, w = parse_size(size)
    first, end = slots or (0, info.num_frames)
    try:
        return _clips(info, frames, h, w, first, end)
    except ShortVideoError as e:  # the metadata overstated the length: keep what decodes
        if e.frames_decoded < first + frames:
            raise
        import logging

        logging.getLogger("vidiff.data").warning(
            "%s; keeping the clips of its %d decodable frames", e, e.frames_decoded
        )
        return _clips(replace(info, num_frames=e.frames_decoded), frames, h, w, first, min(end, e.frames_decoded))


def _clips(info: VideoInfo, frames: int, h: int, w: int, first: int, end: int) -> list[tuple[int, np.ndarray]]:
    starts = list(range(first, end - frames + 1, frames))
    per_read = max(1, MAX_FRAMES_PER_READ // frames)
    out = []
    for i in range(0, len(starts), per_read):
        chunk = starts[i : i + per_read]
        got = decode_frames(
            info, list(range(chunk[0], chunk[-1] + frames)), hw=cover_shape(info.height, info.width, h, w)
        )
        got = center_crop(got, h, w)  # f h w c
        for k, s in enumerate(chunk):
            out.append((s, np.ascontiguousarray(got[k * frames : (k + 1) * frames].transpose(3, 0, 1, 2))))
    return out


def frames_to_clips(video: np.ndarray, frames: int, size) -> list[tuple[int, np.ndarray]]:
    """Back-to-back clips of decoded frames (f H W c, uint8), resized to just cover ``size`` (area filter)
    and centre cropped as a video file's are: [(first frame, uint8 c f h w)]."""
    from PIL import Image

    h, w = parse_size(size)
    ch, cw = cover_shape(video.shape[1], video.shape[2], h, w)
    if (ch, cw) != video.shape[1:3]:
        video = np.stack([np.asarray(Image.fromarray(f).resize((cw, ch), Image.BOX)) for f in video])
    video = center_crop(video, h, w)
    return [
        (s, np.ascontiguousarray(video[s : s + frames].transpose(3, 0, 1, 2)))
        for s in range(0, len(video) - frames + 1, frames)
    ]
