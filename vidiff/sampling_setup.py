"""The sampling set-up, in one place: a model's configuration plus a request (sampler, steps, the
sampler's options, clipping, log-SNR shift, guidance weights) → a ready sampler call.

`VideoDiffusion.sample`, the conditional tasks, the command line and the benchmarks all go through
:func:`resolve_sampling`; an option the chosen sampler does not take is an error that names it.
Precedence, lowest first: the sampler function's own defaults, the `sample` section of the config
(its fields named like one of the sampler's options), the request.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Optional

import torch

from .config import DiffusionConfig, SampleConfig
from .sampling import SamplerError, SamplerSpec, sampler_spec


@dataclass(frozen=True)
class SamplerCall:
    """A sampler ready to run: `call(denoise, z, noise, cond=…, callback=…) -> x̂`."""
    spec: SamplerSpec
    steps: int
    options: dict  # the sampler's own options, resolved
    clip: Optional[float]
    schedule: dict  # logsnr_fn, logsnr_min, logsnr_max
    guidance: float  # classifier-free guidance weight w (applied by the caller, which knows ∅)
    reconstruction_weight: float  # w_r, for the conditional tasks

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def evaluations(self) -> int:
        """Network evaluations of one sample."""
        return self.spec.evaluations(self.steps, {**self.schedule, **self.options})

    def __call__(self, denoise: Callable, z: torch.Tensor, noise=None, *, cond: Optional[dict] = None,
                 callback=None) -> torch.Tensor:
        return self.spec.fn(denoise, z, self.steps, noise, cond=cond, callback=callback, clip=self.clip,
                            **self.schedule, **self.options)


def resolve_sampling(sample: Optional[SampleConfig] = None, diffusion: Optional[DiffusionConfig] = None, *,
                     sampler: Optional[str] = None, steps: Optional[int] = None, options: Optional[dict] = None,
                     clip: Optional[bool] = None, logsnr_shift: Optional[float] = None,
                     guidance: Optional[float] = None,
                     reconstruction_weight: Optional[float] = None) -> SamplerCall:
    """Resolve a request against a model's `sample` and `diffusion` config (their defaults when None)."""
    sample = sample or SampleConfig()
    diffusion = diffusion or DiffusionConfig()
    spec = sampler_spec(sampler or sample.sampler)
    options = dict(options or {})
    spec.check_options(options)
    configured = {f.name: getattr(sample, f.name) for f in fields(sample) if f.name in spec.options}
    resolved = {**spec.options, **configured, **options}
    steps = sample.steps if steps is None else int(steps)
    if steps < 1:
        raise SamplerError(f"the number of sampling steps must be at least 1, got {steps}")
    if logsnr_shift is not None:
        diffusion = replace(diffusion, logsnr_shift=float(logsnr_shift))
    return SamplerCall(spec, steps, resolved, 1.0 if (sample.clip if clip is None else clip) else None,
                       diffusion.schedule(), sample.guidance if guidance is None else float(guidance),
                       sample.reconstruction_weight if reconstruction_weight is None else float(reconstruction_weight))
