"""Scale-out: gradient accumulation equals the whole batch at once; FSDP2 trains like DDP, saves the
same checkpoint format and resumes exactly (2 CPU processes over gloo, through torchrun)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from vidiff.checkpoint import resolve_checkpoint
from vidiff.config import ConfigError
from vidiff.pipeline import VideoDiffusion
from vidiff.presets import get_preset
from vidiff.train import train

TINY = get_preset("cpu-tiny").override(["train.steps=3", "train.save_every=0", "train.num_samples=0",
                                        "train.batch_size=4", "sample.steps=2"])


def weights(run) -> dict:
    return load_file(resolve_checkpoint(run) / "model.safetensors")


def losses(run) -> list:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


def test_gradient_accumulation_matches_the_whole_batch(tmp_path):
    """Batch 4 in one step and 2 × 2 micro-batches: the same draws, the same update. Tolerance: the
    sums in another order, amplified by Adam's normalisation over 3 steps, far below one step's size."""
    train(TINY, tmp_path / "whole", progress=False, tensorboard=False)
    train(TINY.override(["train.grad_accum=2"]), tmp_path / "accum", progress=False, tensorboard=False)
    whole, accum = weights(tmp_path / "whole"), weights(tmp_path / "accum")
    for k in whole:
        assert torch.allclose(whole[k], accum[k], atol=2e-5, rtol=1e-4), f"{k}: {(whole[k] - accum[k]).abs().max()}"
    assert losses(tmp_path / "whole") == pytest.approx(losses(tmp_path / "accum"), rel=1e-5)
    moved = max((whole[k] - v).abs().max().item() for k, v in VideoDiffusion(TINY).net.state_dict().items()
                if k in whole and v.is_floating_point())
    assert moved > 1e-3  # the comparison is not of untrained weights


def test_grad_accum_must_divide_the_batch():
    with pytest.raises(ConfigError, match="divisible by train.grad_accum=3"):
        TINY.override(["train.grad_accum=3"])
    with pytest.raises(ConfigError, match="train.parallel must be one of"):
        TINY.override(["train.parallel=zero3"])


def test_fsdp_needs_torchrun(tmp_path):
    with pytest.raises(ConfigError, match="launch with torchrun"):
        train(TINY.override(["train.parallel=fsdp"]), tmp_path / "run", progress=False, tensorboard=False)


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
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29541", str(script), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    ddp, fsdp, resumed = (weights(tmp_path / name) for name in ("ddp", "fsdp", "fsdp-resumed"))
    for k in ddp:
        assert torch.allclose(ddp[k], fsdp[k], atol=2e-5, rtol=1e-4), f"{k}: {(ddp[k] - fsdp[k]).abs().max()}"
        assert torch.equal(fsdp[k], resumed[k]), f"resumed FSDP run differs at {k}"
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "fsdp"), rel=1e-4)
    ck = resolve_checkpoint(tmp_path / "fsdp")
    assert set(load_file(ck / "optimizer.safetensors")) == set(load_file(resolve_checkpoint(tmp_path / "ddp") /
                                                                          "optimizer.safetensors"))
    model = VideoDiffusion.from_pretrained(tmp_path / "fsdp")
    assert model.sample(1, steps=2, seed=0).isfinite().all()
    assert "batch 4 = 1 per process × 2 accumulation steps × 2 processes (fsdp)" in run.stderr  # the log says how


GPU_CHECK = ["bench/gpu_check.py", "--presets", "cpu-tiny", "--skip-launch"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_check_refuses_without_a_gpu(tmp_path):
    run = subprocess.run([sys.executable, *GPU_CHECK, "--out", str(tmp_path / "r.json")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "no CUDA GPU is visible" in run.stderr


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    """`make gpu-check`'s code in fp32 on the CPU (its timings are not the point): every recompute
    setting trains, the 20-step sample is finite, the fused norm agrees, the report is written."""
    run = subprocess.run([sys.executable, *GPU_CHECK, "--device", "cpu", "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    tiny = report["presets"]["cpu-tiny"]
    assert set(tiny["train"]) == {"none", "norms", "norms+attention", "checkpointing"}
    assert all(len(t["points"]) == 2 for t in tiny["train"].values()) and tiny["sample"]["finite"]
    assert report["fused_norm"]["ok"] and "| cpu-tiny | 0.2M | norms |" in run.stdout


def test_fp16_with_fsdp_is_refused():
    from vidiff.train import parallel
    cfg = TINY.override(["train.parallel=fsdp", "train.mixed_precision=fp16"])
    with pytest.raises(ConfigError, match="use bf16"):
        parallel.choose(cfg, 1000, torch.device("cpu"))
