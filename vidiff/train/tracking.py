"""Experiment tracking: where a run's scalars, configuration and sample videos go besides
metrics.jsonl. `train.logger` picks TensorBoard (RUN/tb), Weights & Biases (RUN/wandb; the
optional extra `pip install "vidiff[wandb]"`), both, or none. One `Tracker` interface, used by the
loop on rank 0 only:

    scalars(step, train_loss=…, train_lr=…)   named by keyword: `train_loss` → "train/loss"
    video(step, videos, path)                  a sample grid (b c f h w in [−1, 1]) written as a GIF at path
    close()

W&B runs follow `WANDB_PROJECT` (default "vidiff"), `WANDB_ENTITY` and `WANDB_MODE` (offline writes the
run's files only; upload them later with `wandb sync RUN/wandb/offline-run-*`). The W&B run id is kept
in RUN/wandb_run.json, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path
from typing import Optional

import torch

from vidiff.config import Config, ConfigError
from vidiff.hub.publish import without_credentials
from vidiff.io.files import atomic_write

WANDB_RUN_FILE = "wandb_run.json"


def _key(name: str) -> str:
    return name.replace("_", "/", 1)


class Tracker:
    """Logs nowhere; the base of each tracker."""

    def scalars(self, step: int, **named) -> None:
        pass

    def video(self, step: int, videos: torch.Tensor, path: Path) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    """RUN/tb: scalars, the resolved configuration (as text) and sample grids as frame images. On
    resume the events after the checkpoint's step are purged, so the curve has one value per step."""

    def __init__(self, out_dir: Path, cfg: Config, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        config = json.dumps(without_credentials(cfg.to_dict()), indent=2)  # TensorBoard logs get shared
        self.writer.add_text("config", f"```json\n{config}\n```", start_step)

    def scalars(self, step: int, **named) -> None:
        for key, value in named.items():
            if value is not None:
                self.writer.add_scalar(_key(key), float(value), step)

    def video(self, step: int, videos: torch.Tensor, path: Path) -> None:
        from vidiff.io.video import make_grid

        grid = make_grid(videos, nrow=min(len(videos), 4))  # c f H W
        self.writer.add_images("samples/frames", ((grid.permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1), step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run: the resolved configuration, scalars against the training step (the x-axis "step"),
    sample grids as videos. A resumed run (start_step > 0) continues the W&B run whose id the run
    folder keeps; a fresh run starts a new one and records its id."""

    def __init__(self, out_dir: Path, cfg: Config, start_step: int = 0):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                'train.logger=wandb needs the wandb package: pip install "vidiff[wandb]" (or set '
                "train.logger=tensorboard)"
            ) from None
        self.wandb = wandb
        record = out_dir / WANDB_RUN_FILE
        run_id = json.loads(record.read_text())["id"] if start_step and record.is_file() else None
        if run_id is None:
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            atomic_write(record, json.dumps({"id": run_id}) + "\n")
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "vidiff",
                name=out_dir.name,
                id=run_id,
                resume="allow",
                dir=str(out_dir),
                config=without_credentials(cfg.to_dict()),
                allow_val_change=True,
            )
        except wandb.errors.Error as e:  # not logged in, no network, a bad entity or project
            raise ConfigError(
                f"Weights & Biases could not start a run: {str(e).rstrip('.')}; log in with `wandb "
                f"login` (or set WANDB_API_KEY), set WANDB_MODE=offline to write the run's files only, "
                f"or set train.logger=tensorboard"
            ) from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    @property
    def run_id(self) -> str:
        return self.run.id

    def scalars(self, step: int, **named) -> None:
        values = {_key(k): float(v) for k, v in named.items() if v is not None}
        if values:
            self.run.log({"step": step, **values})

    def video(self, step: int, videos: torch.Tensor, path: Path) -> None:
        self.run.log({"step": step, "samples": self.wandb.Video(str(path), format="gif")})

    def close(self) -> None:
        self.run.finish()


class Trackers(Tracker):
    """Several trackers as one."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def scalars(self, step: int, **named) -> None:
        for t in self.trackers:
            t.scalars(step, **named)

    def video(self, step: int, videos: torch.Tensor, path: Path) -> None:
        for t in self.trackers:
            t.video(step, videos, path)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def open_tracker(
    cfg: Config, out_dir: Path, start_step: int = 0, tensorboard: bool = True, kind: Optional[str] = None
) -> Tracker:
    """The trackers `train.logger` (or `kind`) names; `tensorboard=False` leaves TensorBoard out."""
    kind = kind or cfg.train.logger
    trackers: list = []
    if kind in ("tensorboard", "both") and tensorboard:
        trackers.append(TensorBoardTracker(out_dir, cfg, start_step))
    if kind in ("wandb", "both"):
        trackers.append(WandbTracker(out_dir, cfg, start_step))
    return Trackers(trackers)
