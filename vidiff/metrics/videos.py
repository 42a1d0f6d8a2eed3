"""Video inputs of the metrics: layout conversion, batching, and clips read from video files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidiff.errors import DataError, MetricsError
from vidiff.io.video import read_video


def as_float_videos(videos) -> torch.Tensor:
    """uint8 frames `b f h w c` (0..255) or float videos `b c f h w` in [−1, 1] -> float32 `b c f h w`."""
    x = torch.as_tensor(videos)
    if x.ndim != 5:
        raise MetricsError(f"expected 5-d videos (uint8 b f h w c or float b c f h w), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise MetricsError(f"uint8 videos must be b f h w c with c = 3, got {tuple(x.shape)}")
        return rearrange(x, "b f h w c -> b c f h w").float() / 127.5 - 1.0  # 0..255 -> [−1, 1]
    if not x.is_floating_point():
        raise TypeError(f"videos must be uint8 or float, got {x.dtype}")
    if x.shape[1] != 3:
        raise MetricsError(f"float videos must be b c f h w with c = 3, got {tuple(x.shape)}")
    return x.float()


def iter_batches(source, num: int | None = None) -> Iterator:
    """Batches of a video tensor/array (one batch) or of an iterable of batches, cut after `num` clips."""
    if isinstance(source, (torch.Tensor, np.ndarray)):
        source = [source]
    seen = 0
    for batch in source:
        if num is not None and seen >= num:
            return
        if num is not None and seen + len(batch) > num:
            batch = batch[: num - seen]
        seen += len(batch)
        yield batch


def iter_video_files(files: Iterable[Path], num_frames: int, frame_stride: int = 1, batch_size: int = 8):
    """Batches of uint8 videos `b f h w c`, the first `num_frames` frames (every `frame_stride`-th) of
    each file (kept uint8 until resized; sizes may differ between files: each batch holds one size, so
    a size change starts a new batch). A file with fewer frames raises DataError naming it."""
    batch: list[torch.Tensor] = []
    for path in files:
        clip = read_video(path, max_frames=num_frames, frame_stride=frame_stride)  # (f, h, w, c)
        if len(clip) < num_frames:
            raise DataError(
                f"{path}: has {len(clip)} frames at frame stride {frame_stride}, but {num_frames} are needed; "
                f"use longer videos, fewer frames (--num-frames) or a smaller --frame-stride"
            )
        if batch and clip.shape != batch[0].shape or len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
        batch.append(clip)
    if batch:
        yield torch.stack(batch)  # (b, f, h, w, c)
