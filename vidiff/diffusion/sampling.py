"""Samplers (paper §2 and §3.1): stateless functions over any denoiser `denoise(z, logsnr, **cond) -> x̂`
that walk a log-SNR grid the caller builds, and the one registry of them.

Every sampler is called as `fn(denoise, z, lambdas, noise=None, *, cond=None, callback=None, **its own
options)`, as k-diffusion's samplers take sigmas. `lambdas` is a float64 grid λ_0 < λ_1 < … < λ_N from
pure noise (t = 1) to data (t = 0), built once by the caller with :func:`logsnr_grid` (N steps, uniform
in t or in λ); a sampler steps λ_0 → λ_1 → … → λ_{N−1} and returns x̂ there. `cond` is the network's
conditioning (a dict of tensors passed to every denoiser call), kept apart from the sampler's options
so that a mistyped option is an error and never a network keyword. Randomness comes from `noise`, a
:class:`Noise` (per-sample seeds, so that a sample does not depend on the batch it was drawn in) or a
plain `torch.Generator`. Clipping x̂ is a denoiser wrapper (:func:`vidiff.diffusion.guidance.clipped`).

Adding a sampler is one function and one :func:`register_sampler` call: the pipeline, the conditional
tasks, the command line (`--sampler` and one flag per option) and the benchmarks read the registry.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from vidiff.diffusion.process import ddim_step, eps_from_x, posterior, q_transition
from vidiff.diffusion.schedule import LOGSNR_MAX, LOGSNR_MIN, alpha_sigma, logsnr_cosine, time_grid
from vidiff.errors import SamplerError

DenoiseFn = Callable[..., torch.Tensor]
# The keywords every sampler takes; what a sampler takes beyond them are its options.
COMMON_KEYWORDS = ("noise", "cond", "callback")
GRIDS = ("t", "lambda")
SIGNATURE = "fn(denoise, z, lambdas, noise=None, *, cond=None, callback=None, **options)"


class Noise:
    """Standard normal noise drawn per sample from its own seed: row i of every draw depends only on
    seeds[i] and on how many draws came before."""

    def __init__(self, seeds: Sequence[int], device: Union[str, torch.device] = "cpu"):
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        if like.shape[0] != len(self.generators):
            raise ValueError(f"batch of {like.shape[0]} but {len(self.generators)} seeds")
        return torch.stack(
            [torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype) for g in self.generators]
        )


def noise_fn(noise) -> Callable[[torch.Tensor], torch.Tensor]:
    """`like -> ε` from a :class:`Noise`, a `torch.Generator` or None (torch's global RNG)."""
    if noise is None or isinstance(noise, torch.Generator):
        return lambda like: torch.randn(like.shape, generator=noise, device=like.device, dtype=like.dtype)
    return noise


def initial_noise(shape: Sequence[int], noise=None, device="cpu") -> torch.Tensor:
    """z_1 ~ N(0, I) drawn from the same noise source the sampler uses."""
    return noise_fn(noise)(torch.empty(tuple(shape), device=device))


def logsnr_grid(
    steps: int, grid: str = "t", logsnr_fn=logsnr_cosine, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX
) -> torch.Tensor:
    """λ_0 = λ_min < … < λ_steps = λ_max (float64): the schedule at t uniform in [1, 0] (`grid="t"`, the
    paper's) or uniform in λ between the same ends (`grid="lambda"`, which spends fewer steps where
    the cosine schedule changes fast: measured in docs/sampling.md)."""
    lam = logsnr_fn(time_grid(steps), logsnr_min, logsnr_max)
    if grid == "t":
        return lam
    if grid == "lambda":
        return torch.linspace(float(lam[0]), float(lam[-1]), steps + 1, dtype=torch.float64)
    raise SamplerError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")


def _steps(lambdas: torch.Tensor) -> int:
    """N, the number of steps of a grid of N + 1 levels."""
    if lambdas.ndim != 1 or len(lambdas) < 2:
        raise ValueError(
            f"a λ grid of N steps has N + 1 ≥ 2 levels, got shape {tuple(lambdas.shape)} "
            f"(vidiff.diffusion.sampling.logsnr_grid builds one)"
        )
    return len(lambdas) - 1


def _denoise(denoise: DenoiseFn, z: torch.Tensor, logsnr, cond: Optional[dict]):
    return denoise(z, torch.full((z.shape[0],), float(logsnr), device=z.device, dtype=torch.float32), **(cond or {}))


def ancestral_step(denoise: DenoiseFn, z: torch.Tensor, logsnr_t, logsnr_s, *, gamma: float, noise, cond):
    """One step z_t → z_s of the ancestral sampler:
    z_s = μ̃_{s|t}(z_t, x̂_θ(z_t)) + sqrt((σ̃²_{s|t})^{1−γ} (σ²_{t|s})^γ) ε. Returns (z_s, x̂)."""
    x = _denoise(denoise, z, logsnr_t, cond)
    mean, var_post = posterior(z, x, logsnr_t, logsnr_s)
    _, var_fwd = q_transition(z, logsnr_s, logsnr_t)
    std = (var_post ** (1.0 - gamma) * var_fwd**gamma).sqrt()
    return mean + std * noise(z), x


def langevin_step(denoise: DenoiseFn, z: torch.Tensor, logsnr, *, delta: float, noise, cond):
    """Langevin correction at noise level λ_s: z_s ← z_s − ½ δ σ_s ε̂_θ(z_s) + sqrt(δ) σ_s ε′,
    i.e. a Langevin step of size δσ_s² on log p(z_s) since ε̂ ≈ −σ_s ∇ log p(z_s)."""
    x = _denoise(denoise, z, logsnr, cond)
    lam = torch.tensor(float(logsnr))
    eps = eps_from_x(z, x, lam)
    sigma = float(alpha_sigma(lam)[1])
    return z - 0.5 * delta * sigma * eps + (delta**0.5) * sigma * noise(z)


def _last(denoise: DenoiseFn, z: torch.Tensor, lam: torch.Tensor, cond, callback) -> torch.Tensor:
    """Every sampler's end: x̂ at λ_{N−1}, not a step to λ_N = λ_max (extrapolating over that long last
    step is unstable, and known pixels stay exact)."""
    steps = _steps(lam)
    x = _denoise(denoise, z, lam[steps - 1], cond)
    if callback is not None:
        callback(steps - 1, steps, x)
    return x


def sample_pc(
    denoise: DenoiseFn,
    z: torch.Tensor,
    lambdas: torch.Tensor,
    noise=None,
    *,
    cond: Optional[dict] = None,
    callback=None,
    gamma: float = 0.0,
    corrector_steps: int = 1,
    delta: float = 0.1,
    corrector_min_logsnr: float = LOGSNR_MIN,
    corrector_max_logsnr: float = LOGSNR_MAX,
) -> torch.Tensor:
    """Predictor-corrector sampler (§2): each ancestral step is followed by `corrector_steps` Langevin
    corrections with step δ (paper: δ = 0.1), at the noise levels corrector_min_logsnr ≤ λ ≤
    corrector_max_logsnr (default: all; Karras et al. 2022 likewise restrict their sampler's added
    noise to a range of levels). The last step returns x̂(z_{λ_{N−1}}) without noise."""
    draw, lam = noise_fn(noise), lambdas
    steps = _steps(lam)
    for i in range(steps - 1):
        z, x = ancestral_step(denoise, z, lam[i], lam[i + 1], gamma=gamma, noise=draw, cond=cond)
        for _ in range(corrector_steps if corrector_min_logsnr <= lam[i + 1] <= corrector_max_logsnr else 0):
            z = langevin_step(denoise, z, lam[i + 1], delta=delta, noise=draw, cond=cond)
        if callback is not None:
            callback(i, steps, x)
    return _last(denoise, z, lam, cond, callback)


def sample_ancestral(
    denoise: DenoiseFn,
    z: torch.Tensor,
    lambdas: torch.Tensor,
    noise=None,
    *,
    cond: Optional[dict] = None,
    callback=None,
    gamma: float = 0.1,
) -> torch.Tensor:
    """The paper's ancestral sampler (§2, eq. for z_s with the γ interpolation of the variance between
    σ̃²_{s|t} (γ = 0) and σ²_{t|s} (γ = 1)), from z_1 = `z` over the grid `lambdas`."""
    return sample_pc(denoise, z, lambdas, noise, cond=cond, callback=callback, gamma=gamma, corrector_steps=0)


def sample_ddim(
    denoise: DenoiseFn,
    z: torch.Tensor,
    lambdas: torch.Tensor,
    noise=None,
    *,
    cond: Optional[dict] = None,
    callback=None,
) -> torch.Tensor:
    """Deterministic DDIM sampler (Song et al. 2021; the probability-flow ODE with Euler steps in λ):
    z_s = α_s x̂ + σ_s ε̂, ε̂ = (z_t − α_t x̂)/σ_t. `noise` is accepted for a uniform call signature and unused."""
    lam, steps = lambdas, _steps(lambdas)
    for i in range(steps - 1):
        x = _denoise(denoise, z, lam[i], cond)
        z = ddim_step(z, x, lam[i], lam[i + 1])
        if callback is not None:
            callback(i, steps, x)
    return _last(denoise, z, lam, cond, callback)


def _dpmpp_2m(denoise, z, lam, noise, cond, callback, eta: float):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) and its SDE variant (eta = 1), in the VP form: with
    h = (λ_s − λ_t)/2 the step in log(α/σ),
      z_s = (σ_s/σ_t) e^{−ηh} z_t + α_s (1 − e^{−(1+η)h}) D + σ_s sqrt(1 − e^{−2ηh}) ε,
    D = x̂_t + (x̂_t − x̂_prev)/(2r) with r = h_prev/h (second order; the first step has no previous x̂
    and uses D = x̂_t). The last evaluation returns x̂ itself instead of a step to λ_max, as every sampler
    here does: extrapolating over that long last step is unstable, and known pixels stay exact."""
    draw = noise_fn(noise)
    steps = _steps(lam)
    x_prev = h_prev = None
    for i in range(steps - 1):
        x = _denoise(denoise, z, lam[i], cond)
        h = float(lam[i + 1] - lam[i]) / 2
        d = x
        if x_prev is not None:
            d = x + (x - x_prev) * (h / (2 * h_prev))  # (1 + 1/(2r)) x̂_t − x̂_prev/(2r)
        a_s, s_s = alpha_sigma(lam[i + 1])
        s_t = alpha_sigma(lam[i])[1]
        z = float(s_s / s_t * math.exp(-eta * h)) * z + float(a_s * -math.expm1(-(1 + eta) * h)) * d
        if eta:
            z = z + float(s_s * math.sqrt(-math.expm1(-2 * eta * h))) * draw(z)
        x_prev, h_prev = x, h
        if callback is not None:
            callback(i, steps, x)
    return _last(denoise, z, lam, cond, callback)


def sample_dpmpp_2m(
    denoise: DenoiseFn,
    z: torch.Tensor,
    lambdas: torch.Tensor,
    noise=None,
    *,
    cond: Optional[dict] = None,
    callback=None,
) -> torch.Tensor:
    """DPM-Solver++(2M): the exponential integrator of the probability-flow ODE in λ with the data
    prediction x̂, second order from the previous step's x̂ (one network evaluation per step).
    Deterministic; `noise` is accepted for a uniform call signature and unused."""
    return _dpmpp_2m(denoise, z, lambdas, None, cond, callback, eta=0.0)


def sample_dpmpp_2m_sde(
    denoise: DenoiseFn,
    z: torch.Tensor,
    lambdas: torch.Tensor,
    noise=None,
    *,
    cond: Optional[dict] = None,
    callback=None,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the same second-order data-prediction step with the stochastic term of
    the reverse SDE (η = 1): fresh noise of variance σ_s²(1 − e^{−2h}) each step."""
    return _dpmpp_2m(denoise, z, lambdas, noise, cond, callback, eta=1.0)


# ---- the registry ------------------------------------------------------------------------------
def _one_per_step(lambdas: torch.Tensor, options: dict) -> int:
    return len(lambdas) - 1


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, the options it takes (name → default, read from the
    function's keyword-only parameters), what the command line says of it, and how many network
    evaluations one sample costs on a grid (classifier-free guidance doubles the batch, not this count)."""

    name: str
    fn: Callable
    options: dict
    description: str
    evaluations: Callable[[torch.Tensor, dict], int] = _one_per_step

    def check_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) or "no options"
            hint = "; the grid is every sampler's: grid='lambda' (--grid lambda)" if "grid" in unknown else ""
            raise SamplerError(
                f"sampler {self.name!r} takes no option {', '.join(map(repr, unknown))}; it takes {takes}{hint}"
            )


SAMPLERS: dict[str, SamplerSpec] = {}
# The keywords of a sampler written for a fixed t-grid: fn(denoise, z, steps, noise, *, cond, callback, …).
_STEPS_KEYWORDS = ("clip", "logsnr_fn", "logsnr_min", "logsnr_max")


def register_sampler(
    name: str, fn: Callable, description: str, *, evaluations: Callable[[torch.Tensor, dict], int] = _one_per_step
) -> SamplerSpec:
    """Add `fn` to the registry under `name`: `fn(denoise, z, lambdas, noise=None, *, cond=None,
    callback=None, **options)`, its options being its keyword-only parameters beyond `cond` and
    `callback`, each with a default. `evaluations(lambdas, options)`: network evaluations per sample.

    A function with the signature of vidiff 0.1, `fn(denoise, z, steps, noise=None, *, cond, callback,
    clip, logsnr_fn, logsnr_min, logsnr_max, **options)`, is adapted (:func:`_on_steps`) with a
    DeprecationWarning that says what to change."""
    params = inspect.signature(fn).parameters
    legacy = "steps" in params and "lambdas" not in params and all(k in params for k in _STEPS_KEYWORDS)
    if legacy:
        fn, evaluations = _on_steps(name, fn, evaluations)
    missing = [k for k in ("denoise", "z", "lambdas") + COMMON_KEYWORDS if k not in params and not legacy]
    if missing:
        raise SamplerError(f"sampler {name!r}: the function must be {SIGNATURE}; it lacks {', '.join(missing)}")
    not_options = COMMON_KEYWORDS + (_STEPS_KEYWORDS if legacy else ())
    options = {}
    for p in params.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in not_options:
            if p.default is inspect.Parameter.empty:
                raise SamplerError(f"sampler {name!r}: option {p.name!r} needs a default value")
            options[p.name] = p.default
    spec = SamplerSpec(name, fn, options, description, evaluations)
    SAMPLERS[name] = spec
    return spec


def _on_steps(name: str, fn: Callable, evaluations: Callable) -> tuple[Callable, Callable]:
    """A sampler written for `steps` and a schedule, run on the caller's grid: it gets steps = N and a
    `logsnr_fn` that reads the grid at t = 1 − i/N (linear between grid points), and clip=None (the
    caller's denoiser clips)."""
    warnings.warn(
        f"sampler {name!r} takes (denoise, z, steps, …, clip, logsnr_fn, logsnr_min, logsnr_max), "
        f"which is adapted for now: write it as {SIGNATURE}, walking the levels λ = lambdas[:-1] "
        f"(N = len(lambdas) − 1 steps) and dropping clip and the schedule keywords "
        f"(docs/sampling.md, 'Adding a sampler')",
        DeprecationWarning,
        stacklevel=3,
    )

    def adapted(denoise, z, lambdas, noise=None, *, cond=None, callback=None, **options):
        return fn(
            denoise,
            z,
            _steps(lambdas),
            noise,
            cond=cond,
            callback=callback,
            clip=None,
            logsnr_fn=_read_grid(lambdas),
            logsnr_min=float(lambdas[0]),
            logsnr_max=float(lambdas[-1]),
            **options,
        )

    adapted.__name__, adapted.__doc__ = getattr(fn, "__name__", name), fn.__doc__
    steps_evaluations = (
        evaluations
        if evaluations is _one_per_step
        else (lambda lambdas, options: evaluations(_steps(lambdas), options))
    )
    return adapted, steps_evaluations


def _read_grid(lambdas: torch.Tensor) -> Callable:
    """`logsnr_fn(t, logsnr_min, logsnr_max)` that returns the grid's own λ_i at t = 1 − i/N."""
    n = _steps(lambdas)

    def logsnr_fn(t, logsnr_min=None, logsnr_max=None, **_):
        pos = (1 - torch.as_tensor(t, dtype=torch.float64)) * n
        pos = torch.where((pos - pos.round()).abs() < 1e-9, pos.round(), pos).clamp(0, n)
        i = pos.floor().long().clamp(max=n - 1)
        frac = pos - i
        between = lambdas[i] + frac * (lambdas[i + 1] - lambdas[i])
        return torch.where(frac == 0, lambdas[i], torch.where(frac == 1, lambdas[(i + 1).clamp(max=n)], between))

    return logsnr_fn


def sampler_spec(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def get_sampler(name: str) -> Callable:
    """The function of a registered sampler, callable as `fn(denoise, z, lambdas, noise=None, **options)`."""
    return sampler_spec(name).fn


def _pc_evaluations(lambdas: torch.Tensor, options: dict) -> int:
    """Network evaluations of `sample_pc`: one per step, plus the corrections at the levels reached
    (λ_1 … λ_{N−1}) that lie in [corrector_min_logsnr, corrector_max_logsnr]."""
    steps = _steps(lambdas)
    lam = lambdas[1:steps]
    corrected = int(((lam >= options["corrector_min_logsnr"]) & (lam <= options["corrector_max_logsnr"])).sum())
    return steps + corrected * options["corrector_steps"]


register_sampler("ancestral", sample_ancestral, "the paper's ancestral sampler with the γ variance interpolation")
register_sampler(
    "pc",
    sample_pc,
    "predictor-corrector: ancestral steps, each followed by Langevin corrections (paper: δ = 0.1)",
    evaluations=_pc_evaluations,
)
register_sampler("ddim", sample_ddim, "deterministic DDIM (probability-flow ODE, Euler steps in λ)")
register_sampler(
    "dpmpp-2m",
    sample_dpmpp_2m,
    "DPM-Solver++(2M): second-order exponential integrator in λ, deterministic, 10–25 steps",
)
register_sampler(
    "dpmpp-2m-sde", sample_dpmpp_2m_sde, "DPM-Solver++(2M) SDE: the same with the reverse SDE's noise, 20–25 steps"
)
