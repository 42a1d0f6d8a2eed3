"""The sampling set-up, in one place: a model's configuration plus a :class:`SampleRequest` → a ready
sampler call.

`VideoDiffusion.sample`, the conditional tasks, the command line and the studio all take one
`SampleRequest` and go through :func:`resolve_sampling`; an option the chosen sampler does not take is
an error that names it. Precedence, lowest first: the sampler function's own defaults, the `sample`
section of the config (`sample.options`: those the chosen sampler takes), the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Optional, Sequence, Union

import torch

from vidiff.config import DiffusionConfig, SampleConfig
from vidiff.diffusion.guidance import compose
from vidiff.diffusion.sampling import GRIDS, SamplerError, SamplerSpec, logsnr_grid, sampler_spec

Labels = Union[int, str, Sequence, None]


def _flag(name: str) -> dict:
    """The field's command-line flag, shared by the CLI (which defines it) and the studio (which writes it)."""
    return {"flag": name}


@dataclass(frozen=True)
class SampleRequest:
    """What to sample and how: the one request of `VideoDiffusion.sample`, the tasks (predict, extend,
    interpolate, upsample), `vidiff sample|predict|…` and the studio. None: the model's `sample` config."""

    sampler: Optional[str] = field(default=None, metadata=_flag("--sampler"))  # a name in the registry
    steps: Optional[int] = field(default=None, metadata=_flag("--steps"))
    grid: Optional[str] = field(default=None, metadata=_flag("--grid"))  # "t" | "lambda" (sampling.GRIDS)
    options: dict = field(default_factory=dict)  # the sampler's own options, e.g. {"gamma": 0.3}
    clip: Optional[bool] = None  # clip x̂ to [−1, 1]
    guidance: Optional[float] = field(default=None, metadata=_flag("--guidance"))  # classifier-free w
    reconstruction_weight: Optional[float] = field(default=None, metadata=_flag("--reconstruction-weight"))  # w_r
    method: str = field(default="reconstruction", metadata=_flag("--method"))  # the tasks' conditioning method
    prompt: Union[str, Sequence[str], None] = field(default=None, metadata=_flag("--prompt"))
    class_label: Labels = field(default=None, metadata=_flag("--class"))
    seed: int = field(default=0, metadata=_flag("--seed"))  # sample i uses seed + i

    def __post_init__(self):
        object.__setattr__(self, "options", dict(self.options or {}))

    @classmethod
    def of(cls, request: Optional["SampleRequest"] = None, **changes) -> "SampleRequest":
        """`request` (default: all defaults) with some fields changed, e.g. `SampleRequest.of(steps=50)`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"unknown sampling request field(s) {', '.join(unknown)}; a SampleRequest has "
                f"{', '.join(sorted(names))}"
            )
        return replace(request or cls(), **changes)


@dataclass(frozen=True)
class SamplerCall:
    """A sampler ready to run on a grid it builds once: `call(denoise, z, noise, cond=…, callback=…) -> x̂`,
    `denoise` being already composed (:meth:`denoiser`)."""

    spec: SamplerSpec
    steps: int
    grid: str
    options: dict  # the sampler's own options, resolved
    clip: Optional[float]
    schedule: dict  # logsnr_fn, logsnr_min, logsnr_max
    guidance: float  # classifier-free guidance weight w
    reconstruction_weight: float  # w_r, for the conditional tasks

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def lambdas(self) -> torch.Tensor:
        """The λ grid the sampler walks (float64, steps + 1 levels)."""
        return logsnr_grid(self.steps, self.grid, **self.schedule)

    @property
    def evaluations(self) -> int:
        """Network evaluations of one sample."""
        return self.spec.evaluations(self.lambdas, self.options)

    def denoiser(
        self, denoise: Callable, *, null: Optional[Callable] = None, condition: Optional[Callable] = None
    ) -> Callable:
        """`denoise` wrapped for this call: classifier-free guidance (when `null` is given, i.e. the model
        is conditional), `condition` (reconstruction guidance or replacement), clipping."""
        return compose(
            denoise, guidance=self.guidance if null is not None else 0.0, null=null, condition=condition, clip=self.clip
        )

    def __call__(
        self, denoise: Callable, z: torch.Tensor, noise=None, *, cond: Optional[dict] = None, callback=None
    ) -> torch.Tensor:
        """x̂ from z_1 = `z`; `denoise` as :meth:`denoiser` returns it (clipped when the request clips)."""
        return self.spec.fn(denoise, z, self.lambdas, noise, cond=cond, callback=callback, **self.options)


def resolve_sampling(
    sample: Optional[SampleConfig] = None,
    diffusion: Optional[DiffusionConfig] = None,
    request: Optional[SampleRequest] = None,
    *,
    logsnr_shift: Optional[float] = None,
    **changes,
) -> SamplerCall:
    """Resolve a request (`request` and/or its fields as keywords) against a model's `sample` and
    `diffusion` config (their defaults when None)."""
    request = SampleRequest.of(request, **changes)
    sample = sample or SampleConfig()
    diffusion = diffusion or DiffusionConfig()
    spec = sampler_spec(request.sampler or sample.sampler)
    spec.check_options(request.options)
    configured = {k: v for k, v in sample.options.items() if k in spec.options}
    options = {**spec.options, **configured, **request.options}
    steps = sample.steps if request.steps is None else int(request.steps)
    if steps < 1:
        raise SamplerError(f"the number of sampling steps must be at least 1, got {steps}")
    if logsnr_shift is not None:
        diffusion = replace(diffusion, logsnr_shift=float(logsnr_shift))
    grid = request.grid or sample.grid
    if grid not in GRIDS:
        raise SamplerError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
    clip = sample.clip if request.clip is None else request.clip
    return SamplerCall(
        spec,
        steps,
        grid,
        options,
        1.0 if clip else None,
        diffusion.schedule(),
        _weight(request.guidance, sample.guidance),
        _weight(request.reconstruction_weight, sample.reconstruction_weight),
    )


def _weight(asked: Optional[float], configured: float) -> float:
    return configured if asked is None else float(asked)
