"""A run folder has one writer and any number of readers; every failure of the folder is one clear
error: a second trainer, --out that is a file or read-only, a full disk, weights of two runs mixed."""

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY

from vidiff.checkpoint import CheckpointError
from vidiff.cli import main
from vidiff.io.files import RunLockedError, run_lock
from vidiff.pipeline import VideoDiffusion
from vidiff.train import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_second_trainer_is_refused_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    with run_lock(run):
        t = time.time()
        cmd = [sys.executable, "-m", "vidiff.cli", "train", "--preset", "cpu-tiny", "--out", str(run)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"run folder {str(run)!r} is in use: process {os.getpid()} on" in result.stderr
        assert time.time() - t < 60 and not (run / "checkpoints").exists()
        with pytest.raises(RunLockedError):  # in the same process too
            train(TINY, run, progress=False)
    train(TINY, run, progress=False)  # released: the folder is usable again


def test_the_os_releases_the_lock_of_a_killed_process(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import time
        from vidiff.io.files import run_lock
        with run_lock({str(run)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
        with run_lock(run):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(run):  # no stale lock to clean up
        pass


def _children(pid: int) -> list:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state
                found.append(int(stat.parent.name))
    return found


def test_loader_workers_of_a_killed_trainer_do_not_keep_the_lock(tmp_path):
    """kill -9 of a trainer with loader workers: its folder is free at once, though the orphaned workers
    live on a few seconds more (until they notice their parent is gone)."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "vidiff.cli",
        "train",
        "--preset",
        "cpu-tiny",
        "--out",
        str(run),
        "--steps",
        "100000",
        "--set",
        "data.num_workers=2",
        "--set",
        "train.num_samples=0",
        "--quiet",
    ]
    trainer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    workers = []
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").is_file() and trainer.poll() is None and time.time() < deadline:
            time.sleep(0.1)  # the first step is logged: the workers are running
        workers = _children(trainer.pid)
        assert len(workers) == 2, workers
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        assert all(os.path.exists(f"/proc/{w}") for w in workers)  # orphaned, still alive
        with run_lock(run):
            pass
    finally:
        for pid in [trainer.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        trainer.wait()


def test_out_that_is_a_file_or_read_only(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--preset", "cpu-tiny", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err
    real_open = os.open

    def read_only(path, flags, *args):  # a read-only file system, as root sees one too
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["train", "--preset", "cpu-tiny", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the run folder" in err and "Read-only file system" in err


def test_a_full_disk_leaves_no_tmp_and_says_what_it_needs(copy_of_tiny_run, tmp_path, monkeypatch, capsys):
    """safetensors reports a full disk as its own error, not an OSError: the save still names the file,
    the space it needs and the disk, removes its .tmp and leaves the previous checkpoint as it was."""
    import safetensors.torch
    from safetensors import SafetensorError

    run = copy_of_tiny_run
    before = {p.name: p.read_bytes() for p in (run / "checkpoints" / "step_0000002").iterdir()}
    real = safetensors.torch.save_file

    def full(tensors, filename, metadata=None):  # the low-level writer, as it fails on a full disk
        if ".ema.safetensors." in str(filename):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["train", "--out", str(run), "--resume", "--steps", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"no space left on the device while writing \S*step_0000004.tmp/ema.safetensors of checkpoint "
        r".* it needs about [\d.]+ MiB and [\d.]+ MiB are free on the disk of",
        err,
    ), err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002"]
    assert {p.name: p.read_bytes() for p in (run / "checkpoints" / "step_0000002").iterdir()} == before
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert train(TINY.override(["train.steps=4"]), run, resume=True, progress=False)["step"] == 4


def test_weights_of_another_architecture_are_named(copy_of_tiny_run, tmp_path):
    a, b = copy_of_tiny_run, tmp_path / "b"
    train(TINY.override(["model.base_channels=8"]), b, progress=False)
    ck = a / "checkpoints" / "step_0000002"
    shutil.copy(b / "checkpoints" / "step_0000002" / "ema.safetensors", ck / "ema.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"ema.safetensors' holds weights of another architecture .* "
        r"mixes files of two runs",
    ) as e:
        VideoDiffusion.from_pretrained(a)
    assert len(str(e.value)) < 600
    with pytest.raises(CheckpointError, match="another architecture"):
        train(TINY.override(["train.steps=3"]), a, resume=True, progress=False)


def test_readers_never_fail_while_training_writes(copy_of_tiny_run, tmp_path):
    """A reader loops over the run while a writer checkpoints as fast as it can, keeping one."""
    run = copy_of_tiny_run
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from safetensors.torch import load_file
        from vidiff.checkpoint import save_checkpoint
        ck = Path({str(run)!r}) / "checkpoints" / "step_0000002"
        w, config = load_file(ck / "model.safetensors"), json.loads((ck / "config.json").read_text())
        for step in range(3, 100000):
            save_checkpoint({str(run)!r}, step, model=w, ema=w, optimizer=None, config=config,
                            state={{"step": step}}, keep=1)
            print(step, flush=True)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert writer.stdout.readline()
        for _ in range(40):
            assert VideoDiffusion.from_pretrained(run).config.model.base_channels == 16
        steps = int((run / "checkpoints" / "latest").read_text().strip()[len("step_") :])
        assert steps > 10, "the writer should have replaced the checkpoint many times"
    finally:
        writer.kill()
        writer.wait()


def test_no_samples_asked_is_a_successful_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "cpu-tiny",
                "--steps",
                "2",
                "--set",
                "train.num_samples=0",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert "trained 2 steps" in capsys.readouterr().out
    assert not (run / "samples").exists()


def test_text_conditioning_on_data_without_captions_is_refused(tmp_path, capsys):
    from vidiff.io.video import write_mp4

    for i in range(2):
        write_mp4(tmp_path / "videos" / f"v{i}.mp4", torch.rand(3, 6, 16, 16) * 2 - 1)
    assert (
        main(
            [
                "train",
                "--preset",
                "cpu-tiny",
                "--data",
                str(tmp_path / "videos"),
                "--conditioning",
                "text",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    assert "conditioning.kind=text but the data has no captions" in capsys.readouterr().err
