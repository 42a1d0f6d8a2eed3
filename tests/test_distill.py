"""Progressive distillation: the target is what two teacher DDIM steps do, on exact Gaussian data;
`vidiff distill` halves the steps round by round into an ordinary, resumable run."""

import json

import pytest
import torch

from vidiff.cli import main
from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.loss import DistillationLoss
from vidiff.diffusion.process import ddim_step
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train
from vidiff.train.distill import round_steps


def test_one_student_step_to_the_target_lands_where_two_teacher_steps_do():
    data = GaussianData.video(channels=1, frames=3, height=2, width=2)
    loss = DistillationLoss(data.denoise, student_steps=4)
    g = torch.Generator().manual_seed(0)
    x, eps = data.sample(6, g).double(), torch.randn(6, *data.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9, 1.0], dtype=torch.float64)
    z, lam, target = loss.target(x, {}, t, eps)
    n = torch.ceil(t * 4)
    lam1, lam2 = loss.logsnr((n - 0.5) / 4), loss.logsnr((n - 1) / 4)
    z1 = ddim_step(z, data.denoise(z, lam), lam, lam1)
    z2 = ddim_step(z1, data.denoise(z1, lam1), lam1, lam2)
    torch.testing.assert_close(ddim_step(z, target, lam, lam2), z2, atol=1e-8, rtol=1e-6)
    # a student that is the teacher is not yet its own two-step version: the loss is not zero
    assert (loss(data.denoise, x, {}, t=t, eps=eps) > 0).all()


def test_round_steps():
    assert round_steps(256, 8) == [128, 64, 32, 16, 8]
    with pytest.raises(ValueError, match="to_steps × 2"):
        round_steps(200, 8)


def test_distill_command_halves_steps_and_resumes(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    train(
        get_preset("cpu-tiny").override(["train.steps=2", "train.num_samples=0", "conditioning.kind=class"]),
        teacher,
        progress=False,
    )
    out = tmp_path / "student"
    args = [
        "distill",
        "--checkpoint",
        str(teacher),
        "--out",
        str(out),
        "--from-steps",
        "8",
        "--to-steps",
        "2",
        "--steps-per-round",
        "2",
        "--guidance",
        "2",
        "--set",
        "train.num_samples=0",
        "--quiet",
    ]
    assert main(args) == 0
    assert "distilled to 2 DDIM steps" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["sample"]["sampler"], cfg["sample"]["steps"], cfg["sample"]["guidance"]) == ("ddim", 2, 0.0)
    assert cfg["distill"] == {"teacher": str(out / "rounds" / "steps_0004"), "teacher_steps": 4, "guidance": 2.0}
    first = json.loads((out / "rounds" / "steps_0004" / "config.json").read_text())["distill"]
    assert first["teacher"] == str(teacher) and first["teacher_steps"] == 8
    model = VideoDiffusion.from_pretrained(out)
    assert model.sampling().steps == 2 and model.sample(2, class_label=[0, 1]).shape == (2, 3, 4, 16, 16)
    teacher_weights = VideoDiffusion.from_pretrained(teacher).net.state_dict()
    assert any(not torch.equal(v, teacher_weights[k]) for k, v in model.net.state_dict().items())
    mtime = (out / "checkpoints" / "latest").stat().st_mtime_ns
    assert main(args) == 0  # finished rounds are kept: nothing is trained again
    assert (out / "checkpoints" / "latest").stat().st_mtime_ns == mtime
    assert main(["sample", "--checkpoint", str(out), "--class", "0", "--num", "1", "--out", str(tmp_path / "s")]) == 0


def test_distill_refuses_a_folder_that_holds_another_run(tmp_path, capsys):
    """A round is done only when its folder records this teacher (by the hash of its weights), these
    steps and this guidance; any other run in --out is refused before anything trains."""
    tiny = get_preset("cpu-tiny").override(["train.steps=2", "train.num_samples=0"])
    for name, seed in [("a", 0), ("b", 1), ("plain", 2)]:
        train(tiny.override([f"train.seed={seed}"]), tmp_path / name, progress=False)
    out = tmp_path / "student"

    def distill(teacher, folder=out, *more):
        return main(
            [
                "distill",
                "--checkpoint",
                str(tmp_path / teacher),
                "--out",
                str(folder),
                "--from-steps",
                "4",
                "--to-steps",
                "2",
                "--steps-per-round",
                "2",
                "--set",
                "train.num_samples=0",
                "--quiet",
                *more,
            ]
        )

    assert distill("a") == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in [*out.rglob("*.safetensors"), *(tmp_path / "plain").rglob("*.safetensors")]}
    for args, message in [
        (("b",), "a distillation round of another teacher (its weights differ)"),
        (("a", out, "--guidance", "1"), "guidance=0.0, here 1.0"),
        (("a", tmp_path / "plain"), "is not a `vidiff distill` round"),
        (("a", out, "--from-steps", "8"), "holds a distillation round whose teacher is not in"),
    ]:
        assert distill(*args) == 2, args
        captured = capsys.readouterr()
        assert "distilled to" not in captured.out
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and message in err and "choose another --out" in err, err
    assert all(p.read_bytes() == data for p, data in before.items())
    assert distill("a") == 0 and "distilled to 2 DDIM steps" in capsys.readouterr().out  # its own rounds: done


def test_guided_teacher_with_joint_image_video_masks():
    """The guided teacher doubles the batch: the joint-training temporal mask is per sample, so it
    doubles with it."""
    from vidiff.config import Config
    from vidiff.nn.layers import joint_attention_mask

    cfg = get_preset("cpu-tiny").override(["conditioning.kind=class", "data.image_frames=2"]).to_dict()
    cfg["model"]["num_classes"] = 3
    model = VideoDiffusion(Config.from_dict(cfg)).eval()
    loss = DistillationLoss(model.guided(2.0), student_steps=4)
    x = torch.rand(2, 3, 6, 16, 16) * 2 - 1
    cond = {"class_labels": torch.tensor([0, 2]), "temporal_mask": joint_attention_mask(4, 2, "cpu").expand(2, 6, 6)}
    assert torch.isfinite(loss(model.denoiser, x, cond)).all()
