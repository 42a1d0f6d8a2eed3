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
    cfg = get_preset("cpu-demo").override(
        ["train.steps=400", "train.max_minutes=0", "train.num_samples=0", "train.save_every=0"]
    )
    train(cfg, tmp_path / "run", progress=False)
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


def test_paper_findings_bench_runs_and_resumes(tmp_path):
    """experiments/paper_findings.py --quick (one experiment, one seed set): every condition measured,
    findings.json and the plot written; a second call finds everything cached and trains nothing."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "experiments.paper_findings",
        "--quick",
        "--quiet",
        "--only",
        "conditioning",
        "--seeds",
        "0",
        "--out",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root)
    found = json.loads((tmp_path / "findings.json").read_text())["conditioning"]
    assert set(found) == {"replacement", "reconstruction w_r=1", "reconstruction w_r=3", "reconstruction w_r=9"}
    assert all(len(runs) == 1 and runs[0]["fvd"] > 0 and runs[0]["seam"] > 0 for runs in found.values())
    image = Image.open(tmp_path / "conditioning.png")
    assert image.size == (1200, 420) and len(image.getcolors(1 << 20)) > 2  # two panels with something drawn
    stamp = (tmp_path / "joint-0" / "finished.json").stat().st_mtime_ns
    again = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root)
    assert (tmp_path / "joint-0" / "finished.json").stat().st_mtime_ns == stamp
    assert "seed set 0" not in again.stdout  # nothing measured twice
