"""Every verb under torchrun: the work is spread over the processes by batches of per-sample seeds
(and clips), gathered in order, and the files equal one process's, bit for bit on the CPU (gloo, 2
processes, one thread each). Every command of the README and the docs parses under torchrun's own parser."""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import torchrun
from safetensors.torch import load_file
from torch.distributed.run import get_args_parser

from vidiff.cli import build_parser
from vidiff.presets import get_preset
from vidiff.train import train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads per process in both runs
ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("torchrun") / "run"
    cfg = get_preset("cpu-tiny").override(["train.steps=6", "train.save_every=0", "train.num_samples=0"])
    train(cfg, out, progress=False)
    return out


def one_and_two(tmp_path, args: list, port: int):
    """The command in one plain process and under torchrun with 2 processes; their output folders."""
    one, two = tmp_path / "one", tmp_path / "two"
    plain = subprocess.run(
        [sys.executable, "-m", "vidiff.cli", *args, "--out", str(one)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    spread = torchrun("-m", "vidiff.cli", *args, "--out", str(two), port=port, env=ENV)
    assert spread.returncode == 0, spread.stderr[-3000:]
    return one, two, spread


def test_sample_and_predict_under_torchrun_equal_one_process(run_dir, tmp_path):
    common = [
        "--checkpoint",
        str(run_dir),
        "--num-videos",
        "3",
        "--batch-size",
        "1",
        "--sampler",
        "ddim",
        "--steps",
        "3",
    ]
    one, two, spread = one_and_two(tmp_path / "sample", ["sample", *common, "--frames", "6"], 29561)
    a, b = load_file(one / "samples.safetensors")["videos"], load_file(two / "samples.safetensors")["videos"]
    assert a.shape == (3, 3, 6, 16, 16) and torch.equal(a, b)
    assert len(list(two.glob("sample_*.mp4"))) == 3 and spread.stdout.count("wrote 3 videos") == 1  # one writer
    assert not torch.equal(a[0], a[1])  # different seeds, not one video copied
    one, two, _ = one_and_two(
        tmp_path / "predict", ["predict", *common, "--video", str(one / "sample_000.mp4"), "--context", "2"], 29562
    )
    a, b = load_file(one / "samples.safetensors")["videos"], load_file(two / "samples.safetensors")["videos"]
    assert a.shape[0] == 3 and torch.equal(a, b)


def test_eval_under_torchrun_equals_one_process(run_dir, tmp_path):
    fake = tmp_path / "fake"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidiff.cli",
            "sample",
            "--checkpoint",
            str(run_dir),
            "--num-videos",
            "4",
            "--frames",
            "10",
            "--steps",
            "2",
            "--sampler",
            "ddim",
            "--out",
            str(fake),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    args = [
        "eval",
        "--real",
        "builtin:moving-shapes",
        "--fake",
        str(fake),
        "--num-videos",
        "4",
        "--num-frames",
        "10",
        "--batch-size",
        "1",
        "--no-cache",
        "--no-progress",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "vidiff.cli", *args, "--out", str(tmp_path / "one.json")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("-m", "vidiff.cli", *args, "--out", str(tmp_path / "two.json"), port=29563, env=ENV)
    assert two.returncode == 0, two.stderr[-3000:]
    r1, r2 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    fvd_key = next(k for k in r1 if k.startswith("fvd"))
    assert r1[fvd_key] == r2[fvd_key] and r1[fvd_key] > 0


def _subcommands() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_flag_has_a_spelling_torchrun_passes_through():
    """torchrun's parser takes an abbreviation of its own options anywhere in the line (`--num` is
    ambiguous with its --numa-binding): each flag's first spelling must not be one."""
    torchrun = [o for a in get_args_parser()._actions for o in a.option_strings if o.startswith("--")]
    for name, sub in _subcommands().items():
        for action in sub._actions:
            long = [o for o in action.option_strings if o.startswith("--")]
            if long and long[0] != "--help":
                clashes = [o for o in torchrun if o.startswith(long[0]) and o != long[0]]
                assert len(clashes) <= 1 or long[0] in torchrun, f"vidiff {name} {long[0]} clashes with {clashes}"


def test_documented_commands_work_verbatim_under_torchrun():
    """Each `vidiff …` command of the README and the docs, put behind `torchrun --nproc-per-node 2 -m
    vidiff.cli`, reaches vidiff unchanged and parses."""
    blocks = [b for doc in DOCUMENTS for b in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)]
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("vidiff ")]
    commands += [shlex.split(line)[5:] for line in lines if re.match(r"torchrun .* -m vidiff\.cli ", line)]
    assert len(commands) > 10
    torchrun, vidiff = get_args_parser(), build_parser()
    for argv in commands:
        parsed = torchrun.parse_args(["--nproc-per-node", "2", "-m", "vidiff.cli", *argv])
        assert parsed.training_script_args == argv
        vidiff.parse_args(argv)


SPREAD = """
import json, sys, torch.distributed as dist
from vidiff import spread
spread.init(spread.local_device())
r = spread.rank()
done = spread.map_ordered(iter(range(5)), lambda i: [i, r])  # a lazy iterable, items i mod 2 on rank i mod 2
main = spread.map_ordered(range(3), lambda i: [i, r], main_only=True)  # gathered on rank 0 alone
json.dump(main, open(sys.argv[1] + f".rank{r}", "w"))
if r == 0:
    with spread.alone():  # rank 0 by itself: nothing waits for rank 1
        mine = spread.map_ordered(range(3), lambda i: i * i)
    json.dump({"done": done, "alone": mine}, open(sys.argv[1], "w"))
dist.barrier()
spread.finish()
"""


def test_map_ordered_spreads_items_and_rank0_can_work_alone(tmp_path):
    script = tmp_path / "spread.py"
    script.write_text(SPREAD)
    run = torchrun(str(script), str(tmp_path / "out.json"), port=29564, env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["done"] == [[i, i % 2] for i in range(5)] and out["alone"] == [0, 1, 4]
    main = [json.loads((tmp_path / f"out.json.rank{r}").read_text()) for r in (0, 1)]
    assert main == [[[0, 0], [1, 1], [2, 0]], []]
