"""Frame geometry shared by every reader of videos and images: the size that covers a target, centre
crop, flip, and frames as the model's tensor in [−1, 1]."""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange


def parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """An int or (h, w) -> (h, w), checked."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be a positive int or (h, w), got {size!r}")
    return int(h), int(w)


def cover_shape(src_h: int, src_w: int, h: int, w: int) -> tuple[int, int]:
    """Size to resize (src_h, src_w) to, keeping the aspect ratio, so that it just covers (h, w).

    For a square target this resizes the short side to the target size.
    """
    scale = max(h / src_h, w / src_w)
    return max(h, round(src_h * scale)), max(w, round(src_w * scale))


def center_crop(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centre crop (f, H, W, c) frames to (f, h, w, c)."""
    top, left = (frames.shape[1] - h) // 2, (frames.shape[2] - w) // 2
    return frames[:, top : top + h, left : left + w]


def to_model_video(frames: np.ndarray, flip: bool = False) -> torch.Tensor:
    """uint8 (f h w c) frames -> float32 (c f h w) in [-1, 1], optionally flipped left-right."""
    x = torch.from_numpy(np.require(frames, requirements=("C", "W")))  # copies read-only arrays (from PIL)
    x = rearrange(x, "f h w c -> c f h w").float() / 127.5 - 1
    return x.flip(-1) if flip else x
