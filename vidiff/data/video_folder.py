"""A folder of video files as a dataset of fixed-length clips.

Every video file under the root (:func:`vidiff.io.files.find_videos`: recursively, sorted, hidden files
skipped; extensions :data:`vidiff.io.files.VIDEO_EXTENSIONS`) is probed once at construction with PyAV
(:func:`vidiff.io.decode.probe_video`): its timing and size; the first frame is decoded to check
that the file is usable. An item is one clip per file: ``frames`` frames ``frame_stride`` apart from a
random start, on a clock of ``fps`` frames per second (default: each file's nominal rate). Frames are
taken by presentation time (see :mod:`vidiff.io.decode`): each clip frame is the frame shown at
its time, so held frames (GIF) repeat and variable-frame-rate video plays at its real speed; a
constant-frame-rate file at its nominal rate gives its frames one by one. Only the clip is decoded: the
reader seeks to the keyframe before the clip start and decodes forward, falling back to decoding from
the start where the container cannot seek.

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
:class:`DataError` naming the file, or with ``skip_bad_files=True`` (``--skip-bad-files``) are logged
and skipped.

Random choices (clip start, flip) come from the generator given to ``item(index, generator)``, which
training seeds from (seed, step) so that loader workers, several processes and a resumed run see the
same clips; ``dataset[index]`` draws them from torch's global RNG.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from vidiff.data.annotations import load_annotations
from vidiff.errors import DataError
from vidiff.io.decode import ShortVideoError, VideoInfo, as_fps, decode_frames, probe_video
from vidiff.io.files import find_videos
from vidiff.io.frames import center_crop, cover_shape, parse_size, to_model_video

__all__ = ["ShortVideoError", "VideoFolder", "VideoInfo", "decode_frames", "probe_video"]

logger = logging.getLogger("vidiff.data")


class VideoFolder(Dataset):
    """Fixed-length clips from a folder of videos, one item per usable file (see module docstring).

    Args:
        root: folder searched recursively for video files.
        frames: frames per clip.
        size: output frame size, an int or (h, w).
        frame_stride: take every ``frame_stride``-th frame (of the ``fps`` clock).
        flip: randomly flip clips left-right.
        skip_bad_files: log and skip unreadable files instead of raising :class:`DataError`.
        labels: ``"auto"``, ``"metadata"``, ``"folders"`` or None; see
            :func:`vidiff.data.annotations.load_annotations`.
        captions: ``"auto"`` (from the metadata file) or None.
        num_threads: threads used to index the files.
        fps: frames per second the clips are sampled at; None: each file's nominal frame rate.
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
        fps: Union[float, Fraction, None] = None,
    ):
        self.root = Path(root)
        if frames < 1 or frame_stride < 1:
            raise ValueError(f"frames and frame_stride must be >= 1, got frames={frames}, frame_stride={frame_stride}")
        self.frames, self.frame_stride, self.size = frames, frame_stride, parse_size(size)
        self.flip, self.skip_bad_files, self.fps = flip, skip_bad_files, as_fps(fps)
        self.clip_length = (frames - 1) * frame_stride + 1

        files = [p.relative_to(self.root).as_posix() for p in find_videos(self.root)]
        all_labels, all_captions, self.classes = load_annotations(self.root, files, labels, captions)
        probed = self._probe_all(files, num_threads)
        ok = [(f, r) for f, r in zip(files, probed) if isinstance(r, VideoInfo)]
        short = [f for f, r in ok if r.num_frames < self.clip_length]
        if short:
            logger.warning(
                "skipping %d of %d videos under %s shorter than one clip of %d frames (frames=%d, frame_stride=%d, "
                "fps=%s), e.g. %s",
                len(short),
                len(files),
                self.root,
                self.clip_length,
                frames,
                frame_stride,
                fps or "nominal",
                ", ".join(short[:3]),
            )
        self.skipped_short = short
        keep = [i for i, r in enumerate(probed) if isinstance(r, VideoInfo) and r.num_frames >= self.clip_length]
        if not keep:
            raise DataError(
                f"{self.root}: none of the {len(files)} video files is usable: {len(self.skipped_bad)} unreadable, "
                f"{len(short)} shorter than one clip of {self.clip_length} frames (frames={frames}, "
                f"frame_stride={frame_stride}); use shorter clips or other videos"
            )
        self.files = [files[i] for i in keep]
        self.infos = [probed[i] for i in keep]
        self.labels = [all_labels[i] for i in keep]
        self.captions = [all_captions[i] for i in keep]

    def _probe_all(self, files: list[str], num_threads: int) -> list[Union[VideoInfo, DataError]]:
        """Probe every file; raise for unreadable ones, or log them in ``skipped_bad`` with skip_bad_files."""

        def probe(rel: str) -> VideoInfo | DataError:
            try:
                return probe_video(self.root / rel, fps=self.fps)
            except DataError as e:
                return e

        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            probed = list(pool.map(probe, files))
        bad = [(f, r) for f, r in zip(files, probed) if isinstance(r, DataError)]
        if len(bad) == 1 and not self.skip_bad_files:
            raise bad[0][1]
        if bad and not self.skip_bad_files:
            others = ", ".join(f for f, _ in bad[1:4]) + (", ..." if len(bad) > 4 else "")
            raise DataError(f"{bad[0][1]}\n...and {len(bad) - 1} more unusable video files under {self.root}: {others}")
        for _, err in bad:
            logger.warning("skipping bad video: %s", err)
        self.skipped_bad = [f for f, _ in bad]
        return probed

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
        return self.item(index, None)

    def item(self, index: int, generator: Optional[torch.Generator]) -> dict:
        """Item ``index`` with its clip start and flip drawn from ``generator`` (None: torch's global RNG).

        A clip that cannot be decoded is replaced, with ``skip_bad_files``, by one of the next file.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"VideoFolder index {index} out of range for {len(self)} videos")
        # Two uniform draws, mapped onto whichever file ends up used, so that the generator's state after
        # an item does not depend on how many files were tried.
        where, coin = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        flip = self.flip and coin < 0.5
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return self._clip_at(i, where, flip)
            except DataError as e:
                if not self.skip_bad_files:
                    raise
                logger.warning("skipping a clip of a bad video, using the next file instead: %s", e)
        raise DataError(f"{self.root}: no video in this folder could be decoded")

    def _clip_at(self, i: int, where: float, flip: bool) -> dict:
        """The clip of file ``i`` starting at fraction ``where`` in [0, 1) of its possible starts."""
        info = self.infos[i]
        starts = info.num_frames - self.clip_length + 1
        try:
            return self.get_clip(i, min(int(where * starts), starts - 1), flip)
        except ShortVideoError as e:
            if not self.clip_length <= e.frames_decoded < info.num_frames:
                raise
            # the metadata overstated the length: trust the decoder from now on
            logger.warning("%s; using its %d decodable frames", e, e.frames_decoded)
            self.infos[i] = replace(info, num_frames=e.frames_decoded)
            return self._clip_at(i, where, flip)
