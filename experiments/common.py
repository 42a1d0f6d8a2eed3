"""What several experiments share: models trained once and reused, unseen real clips of the built-in
data, their cached I3D features, and the frame-to-frame difference that seam errors are made of."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vidiff.config import Config
from vidiff.data import MovingShapes
from vidiff.metrics.fvd import extract_i3d_features
from vidiff.train import train

UNSEEN_SEED = 4242  # built-in clips no model saw in training (training data starts at seed 0)


def train_once(cfg: Config, folder: Path, progress: bool = True) -> Path:
    """Train `cfg` into `folder` unless a finished run is there (`finished.json`: minutes, steps); an
    unfinished one is removed and trained again. Returns `folder`."""
    done = folder / "finished.json"
    if not done.is_file():
        if folder.exists():
            shutil.rmtree(folder)
        t = time.perf_counter()
        summary = train(cfg, folder, progress=progress)
        done.write_text(json.dumps({"minutes": (time.perf_counter() - t) / 60, "steps": summary.get("step")}))
    return folder


def real_clips(num: int, frames: int, size: int, seed: int = UNSEEN_SEED) -> torch.Tensor:
    """(num, c, f, h, w) built-in clips in [−1, 1]."""
    data = MovingShapes(num_videos=num, frames=frames, size=size, seed=seed)
    return torch.stack([data[i]["video"] for i in range(num)])


def real_features(path: Path, num: int, frames: int, size: int, batch: int, keep: slice = slice(None)) -> np.ndarray:
    """I3D features of `num` unseen clips (the frames `keep` of each), computed once and kept at `path`."""
    if not path.is_file():
        np.save(path, extract_i3d_features(real_clips(num, frames, size)[:, :, keep], batch_size=batch, progress=False))
    return np.load(path)


def step_mse(v: torch.Tensor) -> torch.Tensor:
    """(b c f h w) → (b, f−1): mean squared difference of consecutive frames."""
    return ((v[:, :, 1:] - v[:, :, :-1]) ** 2).mean(dim=(1, 3, 4))
