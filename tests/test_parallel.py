"""Scale-out: gradient accumulation equals the whole batch at once; FSDP2 trains like DDP, saves the
same checkpoint format and resumes exactly (2 CPU processes over gloo, through torchrun)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import torchrun
from safetensors.torch import load_file

from vidiff.checkpoint import resolve_checkpoint
from vidiff.config import ConfigError
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train

TINY = get_preset("cpu-tiny").override(
    ["train.steps=3", "train.save_every=0", "train.num_samples=0", "train.batch_size=4", "sample.steps=2"]
)


def weights(run) -> dict:
    return load_file(resolve_checkpoint(run) / "model.safetensors")


def losses(run) -> list:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


def test_gradient_accumulation_matches_the_whole_batch(tmp_path):
    """Batch 4 in one step and 2 × 2 micro-batches: the same draws, the same update. Tolerance: the
    sums in another order, amplified by Adam's normalisation over 3 steps, far below one step's size."""
    train(TINY, tmp_path / "whole", progress=False)
    train(TINY.override(["train.grad_accum=2"]), tmp_path / "accum", progress=False)
    whole, accum = weights(tmp_path / "whole"), weights(tmp_path / "accum")
    for k in whole:
        assert torch.allclose(whole[k], accum[k], atol=2e-5, rtol=1e-4), f"{k}: {(whole[k] - accum[k]).abs().max()}"
    assert losses(tmp_path / "whole") == pytest.approx(losses(tmp_path / "accum"), rel=1e-5)
    moved = max(
        (whole[k] - v).abs().max().item()
        for k, v in VideoDiffusion(TINY).net.state_dict().items()
        if k in whole and v.is_floating_point()
    )
    assert moved > 1e-3  # the comparison is not of untrained weights


def test_grad_accum_must_divide_the_batch():
    with pytest.raises(ConfigError, match="divisible by train.grad_accum=3"):
        TINY.override(["train.grad_accum=3"])
    with pytest.raises(ConfigError, match="train.parallel must be one of"):
        TINY.override(["train.parallel=zero3"])


def test_fsdp_needs_torchrun(tmp_path):
    with pytest.raises(ConfigError, match="launch with torchrun"):
        train(TINY.override(["train.parallel=fsdp"]), tmp_path / "run", progress=False)


SCRIPT = """
import json, logging, sys, torch
import torch.distributed as dist
from vidiff.presets import get_preset
from vidiff.train import train
out = sys.argv[1]
logging.basicConfig(level=logging.INFO)
base = get_preset("cpu-tiny").override(["train.steps=4", "train.save_every=0", "train.num_samples=1",
                                        "train.batch_size=4", "sample.steps=2", "train.grad_accum=2"])
train(base.override(["train.parallel=ddp"]), out + "/ddp", progress=False, tensorboard=False)
train(base.override(["train.parallel=fsdp"]), out + "/fsdp", progress=False, tensorboard=False)
half = base.override(["train.parallel=fsdp", "train.steps=2"])
train(half, out + "/fsdp-resumed", progress=False, tensorboard=False)
train(base.override(["train.parallel=fsdp"]), out + "/fsdp-resumed", resume=True, progress=False, tensorboard=False)
dist.destroy_process_group()
"""


def test_fsdp_matches_ddp_and_resumes_exactly(tmp_path):
    """2 processes, 2 micro-batches each: FSDP2 (sharded parameters, gradients, Adam state) against
    DDP after 4 steps (same loss and weights up to float sums in another order), its checkpoint
    loads as an ordinary model, and 2 + 2 resumed steps give bit for bit the weights of 4."""
    script = tmp_path / "fsdp.py"
    script.write_text(textwrap.dedent(SCRIPT))
    run = torchrun(str(script), str(tmp_path), port=29541, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    ddp, fsdp, resumed = (weights(tmp_path / name) for name in ("ddp", "fsdp", "fsdp-resumed"))
    for k in ddp:
        assert torch.allclose(ddp[k], fsdp[k], atol=2e-5, rtol=1e-4), f"{k}: {(ddp[k] - fsdp[k]).abs().max()}"
        assert torch.equal(fsdp[k], resumed[k]), f"resumed FSDP run differs at {k}"
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "fsdp"), rel=1e-4)
    ck = resolve_checkpoint(tmp_path / "fsdp")
    assert set(load_file(ck / "optimizer.safetensors")) == set(
        load_file(resolve_checkpoint(tmp_path / "ddp") / "optimizer.safetensors")
    )
    model = VideoDiffusion.from_pretrained(tmp_path / "fsdp")
    assert model.sample(1, steps=2, seed=0).isfinite().all()
    assert "batch 4 = 1 per process × 2 accumulation steps × 2 processes (fsdp)" in run.stderr  # the log says how


ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = [
    "-m",
    "bench.gpu_check",
    "--presets",
    "cpu-tiny",
    "--skip-launch",
    "--sample-batch",
    "2",
    "--pc-steps",
    "3",
    "--peer-frames",
    "2",
    "--peer-size",
    "16",
    "--peer-batch",
    "1",
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_check_refuses_without_a_gpu(tmp_path):
    run = subprocess.run(
        [sys.executable, *GPU_CHECK, "--out", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode != 0 and "no CUDA GPU is visible" in run.stderr


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    """`make gpu-check`'s code in fp32 on the CPU (its timings are not the point): every recompute
    setting trains, the 20-step sample is finite, the fused norm agrees, the report is written."""
    run = subprocess.run(
        [sys.executable, *GPU_CHECK, "--device", "cpu", "--out", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    tiny = report["presets"]["cpu-tiny"]
    assert set(tiny["train"]) == {"none", "norms", "norms+attention", "checkpointing"}
    assert all(len(t["points"]) == 2 for t in tiny["train"].values()) and tiny["sample"]["finite"]
    assert report["fused_norm"]["ok"] and "| cpu-tiny | 0.2M | norms |" in run.stdout
    speed = tiny["throughput"]  # clips/s and TFLOP/s from the counted FLOPs; videos/s of both samplers
    assert speed["train"]["batch"] == 2 and speed["train"]["flops_per_clip"] > 0 and speed["train"]["tflops"] > 0
    assert {k: (v["batch"], v["finite"]) for k, v in speed.items() if k != "train"} == {
        "dpmpp-2m-20": (2, True),
        "pc-3": (2, True),
    }
    assert "| cpu-tiny | 2 |" in run.stdout
    peer = report["peer"]  # lucidrains' training step beside ours: run where installed, else the install command
    if "skipped" in peer:
        assert "pip install --no-deps --target /tmp/refpkgs video-diffusion-pytorch==0.7.0" in peer["skipped"]
    else:
        assert peer["peer"]["version"] == "0.7.0" and peer["speedup"] > 0
    assert "Peer, the same training step on CPU, one run: " in run.stdout


def test_gpu_check_peer_is_skipped_with_the_command_that_installs_it(monkeypatch, tmp_path):
    import importlib.util

    from bench import peer

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert peer.find_peer(None).startswith("skipped: video-diffusion-pytorch 0.7.0 is not installed; run `pip install")
    assert "--peer-wheels" in peer.find_peer(None) and "pip download --no-deps -d WHEELS" in peer.find_peer(None)
    empty = tmp_path / "wheels"
    empty.mkdir()  # no wheels in it: pip cannot install offline
    why = peer.find_peer(str(empty))
    assert why.startswith(f"skipped: installing the peer from --peer-wheels {empty} failed (")
    assert "pip download" in why


def test_fp16_with_fsdp_is_refused():
    from vidiff.train import parallel

    cfg = TINY.override(["train.parallel=fsdp", "train.mixed_precision=fp16"])
    with pytest.raises(ConfigError, match="use bf16"):
        parallel.choose(cfg, 1000, torch.device("cpu"))


# ---- collectives: on which device each carries its tensors ---------------------------------------------
def test_a_gpu_process_group_carries_cpu_and_cuda_tensors(monkeypatch):
    """On GPUs the group has gloo for CPU tensors beside NCCL: an NCCL-only group refuses every CPU
    tensor ("No backend type associated with device type cpu")."""
    import torch.distributed as dist

    from vidiff import spread

    asked = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kw: asked.append(backend))
    spread.init(torch.device("cuda", 0))
    spread.init(torch.device("cpu"))
    spread.finish()
    carries = [dict(pair.split(":") for pair in b.split(",")) if ":" in b else {"cpu": b, "cuda": b} for b in asked]
    assert carries == [{"cpu": "gloo", "cuda": "nccl"}, {"cpu": "gloo", "cuda": "gloo"}]


class Handed(Exception):
    """Raised by a stand-in collective once it has seen the tensors it was handed."""


# Every function of vidiff that calls a collective, each checked by the test below; the torchrun test
# fails on a collective called from anywhere else.
COLLECTIVE_CALLERS = {
    "vidiff.train.distributed.mean_and_flag_from_rank0",
    "vidiff.train.distributed.flag_from_rank0",
    "vidiff.train.distributed.any_process",
    "vidiff.train.distributed.check_replicas_in_sync",
    "vidiff.spread.map_ordered",
}


def test_per_step_collectives_hand_over_tensors_on_the_process_device(monkeypatch):
    """The process computes on a device that is not the CPU ("meta" stands for its GPU): every tensor
    a per-step collective gets must be there, since NCCL carries no host tensors and a copy from the
    host is a sync. A helper that makes its tensor on the CPU fails here."""
    import torch.distributed as dist

    from vidiff import spread
    from vidiff.train import distributed

    gpu = torch.device("meta")
    monkeypatch.setattr(spread, "collective_device", lambda: gpu)
    monkeypatch.setattr(spread, "world", lambda: 2)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    seen = []

    def handed(name):
        def collective(*args, **kwargs):
            tensors = [t for a in args for t in (a if isinstance(a, list) else [a]) if isinstance(t, torch.Tensor)]
            seen.append((name, {t.device for t in tensors}))
            raise Handed(name)

        return collective

    for name in ("broadcast", "all_reduce", "all_gather"):
        monkeypatch.setattr(dist, name, handed(name))
    net = torch.nn.Linear(2, 2)
    calls = [
        lambda: distributed.flag_from_rank0(True),
        lambda: distributed.any_process(False),
        lambda: distributed.mean_and_flag_from_rank0(torch.ones((), device=gpu), True),
        lambda: distributed.check_replicas_in_sync(net),
    ]
    for call in calls:
        with pytest.raises(Handed):
            call()
    assert [name for name, _ in seen] == ["broadcast", "all_reduce", "all_reduce", "all_gather"]
    assert all(devices == {gpu} for _, devices in seen), seen


RECORD = """
import functools, inspect, json, os, sys
import torch, torch.distributed as dist
from vidiff import spread

calls = []


def _caller():
    for frame in inspect.stack()[2:]:
        module = frame.frame.f_globals.get("__name__", "")
        if module.startswith("vidiff"):
            return f"{module}.{frame.function}"
    return "elsewhere"


def _record(name, fn):
    @functools.wraps(fn)
    def collective(*args, **kwargs):
        flat = [t for a in (*args, *kwargs.values()) for t in (a if isinstance(a, (list, tuple)) else [a])]
        calls.append({"fn": name, "caller": _caller(), "devices": sorted({str(t.device) for t in flat
                                                                         if isinstance(t, torch.Tensor)}),
                      "expected": str(spread.collective_device())})
        return fn(*args, **kwargs)
    return collective


for name in ("broadcast", "all_reduce", "reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor",
             "gather", "scatter", "all_to_all", "all_gather_object", "gather_object", "broadcast_object_list",
             "scatter_object_list", "barrier"):
    setattr(dist, name, _record(name, getattr(dist, name)))
"""

TRAIN_RECORDED = (
    RECORD
    + """
from vidiff.presets import get_preset
from vidiff.train import train
out = sys.argv[1]
cfg = get_preset("cpu-tiny").override(["train.steps=3", "train.save_every=2", "train.num_samples=1",
                                       "train.batch_size=4", "sample.steps=2"])
train(cfg, out + "/run", progress=False, tensorboard=False)
spread.map_ordered(range(3), lambda i: i)
from vidiff.train import distributed
mean, flag = distributed.mean_and_flag_from_rank0(torch.tensor(float(spread.rank())), spread.rank() == 1)
json.dump([mean.item(), flag.item()], open(out + f"/mean_flag{spread.rank()}.json", "w"))
json.dump([c for c in calls if c["caller"] != "elsewhere"], open(out + f"/calls{spread.rank()}.json", "w"))
rank = spread.rank()
spread.finish()
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
json.dump(threads, open(out + f"/threads{rank}.json", "w"))
"""
)


def test_every_collective_of_a_training_run_is_on_its_device(tmp_path):
    """2 processes over gloo train a few steps; every collective vidiff calls is recorded. Each tensor
    collective's tensors are on `spread.collective_device()` (a GPU run's device for the group), and each
    comes from a function whose devices the test above checks with a device that is not the CPU."""
    script = tmp_path / "record.py"
    script.write_text(TRAIN_RECORDED)
    run = torchrun(str(script), str(tmp_path), port=29543)
    assert run.returncode == 0, run.stderr[-4000:]
    for rank in (0, 1):
        calls = json.loads((tmp_path / f"calls{rank}.json").read_text())
        assert {c["caller"] for c in calls} <= COLLECTIVE_CALLERS, "a collective outside the checked helpers"
        assert {c["fn"] for c in calls} >= {"broadcast", "all_reduce", "all_gather", "all_gather_object"}
        tensor_calls = [c for c in calls if not c["fn"].endswith("_object")]
        assert all(c["devices"] == [c["expected"]] for c in tensor_calls), tensor_calls
        # rank 0's per-step decision (out of time) travels with the step's loss: no collective of its own
        callers = [c["caller"].rsplit(".", 1)[1] for c in calls]
        assert callers.count("flag_from_rank0") == 2  # the lock, the trackers
        assert callers.count("mean_and_flag_from_rank0") == 3 + 1  # 3 steps, and the call above
        assert json.loads((tmp_path / f"mean_flag{rank}.json").read_text()) == [0.5, 0.0]  # rank 1's flag ignored
        # the group is gone with its threads: none is left to free a tensor while the interpreter exits
        assert not [t for t in json.loads((tmp_path / f"threads{rank}.json").read_text()) if "gloo" in t]


def test_compile_uses_cuda_graphs_for_one_process_on_a_gpu():
    from vidiff.train.setup import compile_mode

    assert compile_mode(torch.device("cuda", 0), alone=True) == "reduce-overhead"  # static shapes: one launch
    assert compile_mode(torch.device("cuda", 0), alone=False) == "default"  # DDP / FSDP hooks
    assert compile_mode(torch.device("cpu"), alone=True) == "default"
