"""Fréchet Video Distance (Unterthiner et al. 2018) and KVD on Kinetics-400 I3D logits.

As the field computes it: clips resized to 224×224 bilinearly, RGB in [−1, 1], the 400 I3D logits
per clip, Fréchet distance between Gaussians fitted to the real and generated sets.

Resize: `torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)`
on each frame (half-pixel centres, no antialiasing when shrinking). The original TF1 FVD code used
`tf.image.resize_bilinear` (align_corners=False, half_pixel_centers=False), which samples at
slightly shifted positions; at 64×64 → 224×224 the two differ by small amounts, so compare FVDs
only across the same preprocessing.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from vidiff import spread
from vidiff.errors import MetricsError
from vidiff.metrics.frechet import frechet_distance_from_feats
from vidiff.metrics.i3d import I3D_MIN_FRAMES, I3D_SIZE, check_i3d_input, i3d_weights_path, load_i3d
from vidiff.metrics.scores import kernel_distance
from vidiff.metrics.videos import as_float_videos, iter_batches


def preprocess_for_i3d(videos) -> torch.Tensor:
    """Whole I3D preprocessing -> float32 `b c f 224 224` in [−1, 1].

    Accepts uint8 frames `b f h w c` (as decoded, 0..255) or float videos `b c f h w` in [−1, 1]
    (torch or numpy). Frames are resized with torch bilinear, align_corners=False, antialias=False.
    """
    x = as_float_videos(videos)  # (b, c, f, h, w) in [−1, 1]
    if x.shape[2] < I3D_MIN_FRAMES:
        raise MetricsError(f"I3D needs at least {I3D_MIN_FRAMES} frames per clip, got {x.shape[2]}")
    if tuple(x.shape[3:]) != (I3D_SIZE, I3D_SIZE):
        b = x.shape[0]
        frames = rearrange(x, "b c f h w -> (b f) c h w")
        frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False, antialias=False)
        x = rearrange(frames, "(b f) c h w -> b c f h w", b=b)
    return x.contiguous()


@functools.lru_cache(maxsize=2)
def _cached_i3d(path: str, device: str) -> torch.nn.Module:
    return load_i3d(path, device=device)


def get_i3d(i3d_weights: str | os.PathLike | None = None, device=None) -> torch.nn.Module:
    """The Kinetics-400 I3D (eval, BatchNorm folded), loaded once per weight file and device."""
    return _cached_i3d(str(i3d_weights_path(i3d_weights)), str(device or spread.local_device()))


def i3d_logits(videos: torch.Tensor, i3d_weights: str | os.PathLike | None = None, model=None) -> torch.Tensor:
    """The 400 Kinetics logits of float videos `b c f 224 224` in [−1, 1] -> `(b, 400)` float32."""
    check_i3d_input(videos)
    model = get_i3d(i3d_weights) if model is None else model
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(videos.to(device).float().contiguous(memory_format=torch.channels_last_3d)).float().cpu()


def extract_i3d_features(
    source,
    batch_size: int = 8,
    num: int | None = None,
    i3d_weights: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "I3D",
    device=None,
) -> np.ndarray:
    """I3D logits `(n, 400)` (float64) of every clip of `source`: a video tensor (uint8 `b f h w c`
    or float `b c f h w` in [−1, 1]) or an iterable of such batches, any resolution. On `device`
    (default: this process's GPU where there is one, else the CPU)."""
    from tqdm.auto import tqdm

    model = get_i3d(i3d_weights, device)
    device = next(model.parameters()).device
    with tqdm(total=num, desc=desc, unit="clip", disable=not (progress and spread.is_main())) as bar:

        def logits(chunk: torch.Tensor) -> np.ndarray:
            out = i3d_logits(preprocess_for_i3d(chunk.to(device)), model=model).double().numpy()
            bar.update(len(chunk) * spread.world())
            return out

        clips = (chunk for batch in iter_batches(source, num) for chunk in torch.as_tensor(batch).split(batch_size))
        feats = spread.map_ordered(clips, logits)  # over torchrun's processes, if any
    if not feats:
        raise MetricsError("no videos to compute I3D features on")
    return np.concatenate(feats)  # (n, 400)


def fvd(real_feats, fake_feats) -> float:
    """FVD: Fréchet distance between Gaussians fitted to I3D logits `(n, 400)` and `(m, 400)`."""
    return frechet_distance_from_feats(real_feats, fake_feats)


def kvd(real_feats, fake_feats, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KVD: polynomial-kernel MMD² on I3D logits, (mean, std) over random subsets."""
    return kernel_distance(real_feats, fake_feats, num_subsets, subset_size, seed)
