"""A run folder, a config.json and a Hub snapshot are data, never instructions (SECURITY.md): what a
file vidiff reads names is never run as a command. Through the real command line."""

import json
import shutil

import pytest

from vidiff.cli import main


@pytest.fixture(scope="module")
def copied_run(tiny_run, tmp_path_factory):
    """A run folder as received from someone else: every config.json in it names a pipe: source."""
    root = tmp_path_factory.mktemp("received")
    run = shutil.copytree(tiny_run, root / "run")
    marker = root / "pwned"
    for config in run.rglob("config.json"):
        d = json.loads(config.read_text())
        d["data"]["source"] = f"pipe:touch {marker}; echo shards-000000.tar"
        config.write_text(json.dumps(d))
    return run, marker


@pytest.mark.parametrize("command", ["distill", "resume"])
def test_a_pipe_source_read_from_a_run_folder_never_runs(copied_run, tmp_path, capsys, command):
    run, marker = copied_run
    argv = {
        "distill": [
            "distill",
            "--checkpoint",
            str(run),
            "--out",
            str(tmp_path / "student"),
            "--from-steps",
            "4",
            "--to-steps",
            "2",
            "--steps-per-round",
            "1",
            "--quiet",
        ],
        "resume": ["train", "--resume", "--out", str(run), "--steps", "4", "--quiet"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "runs a shell command" in err and "--data" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_pipe_source_on_the_command_line_runs(copied_run, tmp_path, capsys):
    """The person running vidiff may name a command: it runs (and here fails as a shard index, one line)."""
    run, _ = copied_run
    marker = tmp_path / "ran"
    argv = [
        "train",
        "--preset",
        "cpu-tiny",
        "--out",
        str(tmp_path / "new"),
        "--steps",
        "1",
        "--quiet",
        "--data",
        f"pipe:touch {marker}; echo shards-000000.tar",
    ]
    assert main(argv) == 2
    assert marker.exists() and "no readable shard index" in capsys.readouterr().err
