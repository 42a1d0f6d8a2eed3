"""What a run writes besides checkpoints: the loss curve (metrics.jsonl; TensorBoard and W&B are
trackers, vidiff.train.tracking), sample grids of the EMA model, and a periodic FVD. All of it
happens on rank 0 only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from vidiff.config import Config
from vidiff.pipeline import VideoDiffusion
from vidiff.train.tracking import Tracker


class MetricsLog:
    """metrics.jsonl, one JSON object per line. On resume the rows after the checkpoint's step are
    dropped, so the curve has one value per step."""

    def __init__(self, out_dir: Path, start_step: int = 0):
        self.path = out_dir / "metrics.jsonl"
        if start_step and self.path.is_file():
            self._truncate(start_step)

    def _truncate(self, step: int) -> None:
        from vidiff.io.files import atomic_write, read_metrics

        keep = [row for row in read_metrics(self.path) if row["step"] <= step]  # torn lines dropped
        atomic_write(self.path, "".join(json.dumps(row) + "\n" for row in keep))

    def log(self, step: int, **values) -> None:
        """One row of metrics.jsonl."""
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


def save_sample_grid(
    model: VideoDiffusion,
    path: Path,
    num: int,
    request: dict,
    tracker: Optional[Tracker] = None,
    step: int = 0,
    progress: bool = False,
) -> Optional[torch.Tensor]:
    """`num` samples (seed 0) of `model` as one grid GIF (and to the tracker); returns the videos."""
    from vidiff.io.video import make_grid, write_gif

    if num < 1:
        return None
    videos = model.sample(num, seed=0, progress=progress, **request)
    write_gif(path, make_grid(videos, nrow=min(num, 4)))
    if tracker is not None:
        tracker.video(step, videos, path)
    return videos


class PeriodicFVD:
    """FVD of `train.fvd_num` EMA samples against as many real clips (≥ 9 frames: the model runs on
    any frame count), each sample conditioned like its real clip. Small samples: a trend, not a score."""

    def __init__(self, cfg: Config):
        from vidiff.config import ConfigError
        from vidiff.data.shards import is_shard_spec

        self.cfg = cfg
        self.real = None
        self.request: dict = {}
        if cfg.train.fvd_every and cfg.data.frames < 9 and is_shard_spec(cfg.data.source):
            raise ConfigError(
                f"train.fvd_every needs real clips of at least 9 frames (I3D), and the prepared shards "
                f"{cfg.data.source} hold clips of {cfg.data.frames}; prepare shards of 9 or more frames "
                f"(vidiff prepare --frames 9), or set train.fvd_every=0 and run vidiff eval on samples"
            )

    def _prepare(self, model: VideoDiffusion) -> None:
        from vidiff.data import dataset_from_config
        from vidiff.metrics.fvd import extract_i3d_features

        cfg = self.cfg
        # read as training reads it, unflipped, with more frames where I3D needs them
        real_ds = dataset_from_config(cfg.data, seed=cfg.train.seed + 1, frames=max(9, cfg.data.frames), flip=False)
        items = [real_ds[i] for i in range(min(cfg.train.fvd_num, len(real_ds)))]
        self.real = extract_i3d_features(torch.stack([it["video"] for it in items]), progress=False)
        self.request = model.conditioning.like(items)

    def __call__(self, model: VideoDiffusion) -> float:
        from vidiff.metrics.fvd import extract_i3d_features, fvd

        if self.real is None:
            self._prepare(model)
        fake = model.sample(
            len(self.real), frames=max(9, self.cfg.data.frames), seed=self.cfg.train.seed, **self.request
        )
        return fvd(self.real, extract_i3d_features(fake, progress=False))
