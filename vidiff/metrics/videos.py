"""Video inputs of the metrics: layout conversion, batching, and reading files with PyAV."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

VIDEO_EXTENSIONS = (".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def as_float_videos(videos) -> torch.Tensor:
    """uint8 frames `b f h w c` (0..255) or float videos `b c f h w` in [−1, 1] -> float32 `b c f h w`."""
    x = torch.as_tensor(videos)
    if x.ndim != 5:
        raise ValueError(f"expected 5-d videos (uint8 b f h w c or float b c f h w), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"uint8 videos must be b f h w c with c = 3, got {tuple(x.shape)}")
        return rearrange(x, "b f h w c -> b c f h w").float() / 127.5 - 1.0  # 0..255 -> [−1, 1]
    if not x.is_floating_point():
        raise TypeError(f"videos must be uint8 or float, got {x.dtype}")
    if x.shape[1] != 3:
        raise ValueError(f"float videos must be b c f h w with c = 3, got {tuple(x.shape)}")
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


def list_videos(directory: str | os.PathLike) -> list[Path]:
    """Video files under `directory` (recursively), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory of videos: {directory}")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in {directory}")
    return files


def read_video(path: str | os.PathLike, num_frames: int, frame_stride: int = 1) -> np.ndarray:
    """The first `num_frames` frames (every `frame_stride`-th) of a video file as uint8 `f h w c`."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % frame_stride:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))  # (h, w, 3)
            if len(frames) == num_frames:
                break
    if len(frames) < num_frames:
        raise ValueError(f"{path} has {len(frames)} frames at stride {frame_stride}, need {num_frames}")
    return np.stack(frames)  # (f, h, w, c)


def iter_video_files(files: Iterable[Path], num_frames: int, frame_stride: int = 1, batch_size: int = 8):
    """Batches of uint8 videos `b f h w c` read from files (kept uint8 until resized; sizes may
    differ between files: each batch holds one size, so a size change starts a new batch)."""
    batch: list[np.ndarray] = []
    for path in files:
        clip = read_video(path, num_frames, frame_stride)
        if batch and clip.shape != batch[0].shape or len(batch) == batch_size:
            yield torch.from_numpy(np.stack(batch))
            batch = []
        batch.append(clip)
    if batch:
        yield torch.from_numpy(np.stack(batch))  # (b, f, h, w, c)
