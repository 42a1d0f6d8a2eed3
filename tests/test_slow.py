"""Longer checks, run by `make test-slow` (CI runs them on every submission)."""
import pytest
import torch

from vidiff.data import MovingShapes, describe_video
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train

pytestmark = pytest.mark.slow


def test_cpu_demo_learns_moving_shapes(tmp_path):
    """The demo's model after 400 steps (a fifth of `make demo`): its samples show a shape that moves
    and keeps its colour, as describe_video reads the real clips."""
    cfg = get_preset("cpu-demo").override(["train.steps=400", "train.max_minutes=0", "train.num_samples=0",
                                           "train.save_every=0"])
    train(cfg, tmp_path / "run", progress=False, tensorboard=False)
    model = VideoDiffusion.from_pretrained(tmp_path / "run")
    videos = model.sample(16, sampler="ddim", steps=50, seed=0)
    real = MovingShapes(num_videos=16, frames=8, size=16, seed=99)
    palette = list(real.colors)

    def rates(clips):
        found = moving = same = 0
        for v in clips:
            d = describe_video(v, palette)
            a, b = describe_video(v[:, :4], palette), describe_video(v[:, 4:], palette)
            found += d["color"] != "none"
            moving += d["direction"] != "none"
            same += a["color"] != "none" and a["color"] == b["color"]
        return found / len(clips), moving / len(clips), same / len(clips)

    assert rates(torch.stack([real[i]["video"] for i in range(16)])) == (1.0, 1.0, 1.0)
    found, moving, same = rates(videos)
    assert found >= 0.75 and moving >= 0.75 and same >= 0.4, (found, moving, same)
