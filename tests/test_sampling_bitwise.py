"""Samples of a tiny random model are bit-identical to those of the code the fixture was made with.

The fixture `tests/fixtures/sampling_baseline.safetensors` holds, for each case below, the video that
`draw()` returns: a cpu-tiny network (3×4×4 videos of 3 frames) initialised from torch seed 0 and
never trained, sampled with seed 7. It was written by this file run as a script under the code before
samplers took a λ grid (the `grid` choice then was an option of the DPM-Solver++ samplers):

    cd <checkout of that commit> && PYTHONPATH=$PWD python <this file> --write

A random initialisation depends on the order the network creates its parameters: a change to the
network's construction changes these samples without any sampler changing, and the fixture is then
rewritten from the commit before that change.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FIXTURE = Path(__file__).parent / "fixtures" / "sampling_baseline.safetensors"
# name → (sampler, steps, grid or None, the task: "sample" or "predict")
CASES = {
    "ddim-3": ("ddim", 3, None, "sample"),
    "ancestral-4": ("ancestral", 4, None, "sample"),
    "pc-3": ("pc", 3, None, "sample"),
    "dpmpp-2m-5": ("dpmpp-2m", 5, None, "sample"),
    "dpmpp-2m-lambda-5": ("dpmpp-2m", 5, "lambda", "sample"),
    "dpmpp-2m-sde-4": ("dpmpp-2m-sde", 4, None, "sample"),
    "predict-ddim-3": ("ddim", 3, None, "predict"),
    "predict-pc-3": ("pc", 3, None, "predict"),
}


def tiny_model():
    from vidiff.pipeline import VideoDiffusion
    from vidiff.presets import get_preset

    cfg = get_preset("cpu-tiny").override(
        ["data.size=4", "data.frames=3", "sample.sampler=pc", "sample.reconstruction_weight=3.0"]
    )
    torch.manual_seed(0)
    return VideoDiffusion(cfg).eval()


def draw(model, sampler: str, steps: int, grid, task: str) -> torch.Tensor:
    from vidiff.diffusion.sampling import SAMPLERS

    request = dict(sampler=sampler, steps=steps, seed=7)
    if grid is not None:  # an option of the DPM-Solver++ samplers before the grid was every sampler's
        request.update(dict(options={"grid": grid}) if "grid" in SAMPLERS[sampler].options else dict(grid=grid))
    if task == "predict":
        from vidiff.tasks import predict

        context = torch.linspace(-1, 1, 3 * 4 * 4).reshape(1, 3, 1, 4, 4)
        return predict(model, context, **request)
    return model.sample(1, **request)


def test_samples_equal_the_baseline():
    expected = load_file(FIXTURE)
    model = tiny_model()
    for name, case in CASES.items():
        assert torch.equal(draw(model, *case), expected[name]), f"{name}: not the baseline's sample"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    m = tiny_model()
    save_file({name: draw(m, *case).contiguous() for name, case in CASES.items()}, str(FIXTURE))
    print(f"wrote {FIXTURE}")
