"""What the tests share: the tiny configuration (`TINY`), one tiny run trained once for the whole test
session (`tiny_run`), and training in the test process without TensorBoard event files (slow to open
and never read; a test that reads them asks for `tensorboard_on`). The library's own defaults stay."""

import os
import shutil
import subprocess
import sys

import pytest

from vidiff.presets import get_preset

# cpu-tiny for 2 steps: a checkpoint at step 2, one sample in its grid, 2-step sampling
TINY = get_preset("cpu-tiny").override(["train.save_every=2", "train.steps=2", "train.num_samples=1", "sample.steps=2"])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run folder of `TINY`, trained once; read it, never change it (`copy_of_tiny_run` gives a copy)."""
    from vidiff.train import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(TINY, out, progress=False)
    return out


@pytest.fixture
def copy_of_tiny_run(tiny_run, tmp_path):
    """A copy of the tiny run this test may change."""
    return shutil.copytree(tiny_run, tmp_path / "tiny-run")


@pytest.fixture(scope="session", autouse=True)
def _open_tracker_with_tensorboard():
    """Training in the test process opens its trackers without TensorBoard; yields the real opener."""
    from vidiff.train import loop

    original = loop.open_tracker

    def without_tensorboard(cfg, out_dir, start_step=0, tensorboard=True, kind=None):
        return original(cfg, out_dir, start_step, False, kind)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "open_tracker", without_tensorboard)
        yield original


@pytest.fixture
def tensorboard_on(monkeypatch, _open_tracker_with_tensorboard):
    """TensorBoard as the library does it (train.logger and tensorboard= decide)."""
    from vidiff.train import loop

    monkeypatch.setattr(loop, "open_tracker", _open_tracker_with_tensorboard)


def torchrun(*args, port: int, nproc: int = 2, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node NPROC --master-port PORT ARGS…` (a script and its arguments, or "-m",
    a module, …), one thread a process unless `env` says otherwise, its output captured."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(port)]
    return subprocess.run(
        [*cmd, *map(str, args)],
        env=env or {**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
