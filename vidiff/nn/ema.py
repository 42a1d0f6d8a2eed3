"""Post-hoc EMA (Karras et al. 2024, EDM2 §3 and Appendix C): track power-function EMA profiles
during training, keep snapshots of them, and after training reconstruct the EMA of any length by
least squares.

A power-function EMA with exponent γ averages the weights θ_τ seen up to step t with weights ∝ τ^γ.
Updated once a step, θ̂_t = β_t θ̂_{t−1} + (1 − β_t) θ_t with β_t = (1 − 1/t)^{γ+1} (t counted from 1),
it weights θ_τ by (τ^{γ+1} − (τ − 1)^{γ+1})/t^{γ+1}: exactly the profile (γ+1) τ^γ / t^{γ+1} on [0, t]
with θ held constant over each step. Its length is σ_rel, the profile's standard deviation relative
to t: σ_rel² = (γ+1) / ((γ+2)² (γ+3)) (EDM2 eq. 3).

A run with train.ema=power writes `ema_snapshots/step_NNNNNNN.safetensors` (every tracked profile at
that step, keys `{profile}.{weight}`); `vidiff ema RUN --sigma-rel X` writes the reconstruction as
`ema/sigma_rel_X_step_NNNNNNN.safetensors`, which `VideoDiffusion.from_pretrained(RUN, ema=X)` loads.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from vidiff.errors import CheckpointError, ConfigError
from vidiff.io.files import load_tensors, save_tensors

SNAPSHOTS = "ema_snapshots"  # in the run folder
RECONSTRUCTED = "ema"  # in the run folder: the reconstructions of `vidiff ema`
CHECKPOINT_FILE = "ema_power.safetensors"  # in each checkpoint: the profiles, to resume them exactly
SIGMA_REL_MAX = 12**-0.5  # σ_rel of the power EMA with exponent γ = 0 (a plain average): longer is not one


# ---- the profiles ------------------------------------------------------------------------------
def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel = √((γ+1) / ((γ+2)² (γ+3))) (EDM2 eq. 3)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The γ of σ_rel: the largest real root of γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0, which is eq. 3
    multiplied out."""
    t = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - t, 12.0 - t])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def power_beta(gamma: float, step: int) -> float:
    """β of the update after 0-based `step`: (1 − 1/t)^{γ+1} with t = step + 1 (0 at the first step: the
    average starts at θ_1, not at the initial weights)."""
    return (1.0 - 1.0 / (step + 1)) ** (gamma + 1)


def profile_inner(t_a, gamma_a, t_b, gamma_b):
    """∫ p_a(τ) p_b(τ) dτ of the profiles p(τ) = (γ+1) τ^γ / t^{γ+1} on [0, t] (EDM2 Appendix C.2):
    (γ_a+1)(γ_b+1) / ((γ_a+γ_b+1) max(t_a, t_b)) · (min/max)^{γ of the longer one}. Broadcasts."""
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    ratio_exp = np.where(t_a < t_b, gamma_b, -gamma_a)  # (t_a/t_b)^γ_b, or (t_b/t_a)^γ_a
    num = (gamma_a + 1) * (gamma_b + 1) * (t_a / t_b) ** ratio_exp
    return num / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b))


def solve_coefficients(steps: Sequence[int], gammas: Sequence[float], step: int, gamma: float) -> np.ndarray:
    """The coefficients c of the snapshots (snapshot i: the profile of exponent gammas[i] at steps[i])
    whose sum Σ c_i p_i is closest in L² to the profile (gamma, step): the normal equations A c = b,
    A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p⟩ (EDM2 Appendix C.3), scaled to sum to 1 so that a constant
    parameter stays itself."""
    t, g = np.asarray(steps, dtype=np.float64), np.asarray(gammas, dtype=np.float64)
    a = profile_inner(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner(t, g, float(step), float(gamma))
    c = np.linalg.lstsq(a, b, rcond=None)[0]
    return c / c.sum()


class PowerEMA:
    """The tracked profiles: one copy of the network per σ_rel, each updated by one fused lerp a step."""

    def __init__(self, net: torch.nn.Module, sigma_rels: Sequence[float], first: Optional[torch.nn.Module] = None):
        """`first`: a copy of `net` to hold the first profile (the trainer's EMA module), else one is made."""
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        made = [copy.deepcopy(net).requires_grad_(False) for _ in self.sigma_rels[1 if first is not None else 0 :]]
        self.modules = ([first] if first is not None else []) + made
        self._params = [list(m.parameters()) for m in self.modules]

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        """Every profile after the update of 0-based `step`; buffers are copied."""
        params = [p.detach() for p in net.parameters()]
        for gamma, ema_params in zip(self.gammas, self._params):
            torch._foreach_lerp_(ema_params, params, 1.0 - power_beta(gamma, step))
        for m in self.modules:
            for b_ema, b in zip(m.buffers(), net.buffers()):
                b_ema.copy_(b)

    def state(self, full_state_dict=lambda m: m.state_dict()) -> dict:
        """All profiles as one flat dict of tensors, `{profile}.{weight}`."""
        return {f"{i}.{k}": v for i, m in enumerate(self.modules) for k, v in full_state_dict(m).items()}

    def metadata(self, step: int) -> dict:
        return {"format": "vidiff-power-ema", "step": str(step), "sigma_rels": json.dumps(self.sigma_rels)}

    def load(self, path: Path) -> None:
        """The profiles of a checkpoint's ema_power.safetensors (they must be of this run's σ_rels)."""
        tensors, meta = read_profiles(path)
        if tuple(meta["sigma_rels"]) != self.sigma_rels:
            raise ConfigError(
                f"{str(path)!r} tracks σ_rel {list(meta['sigma_rels'])}, the run asks for "
                f"{list(self.sigma_rels)}: train.ema_sigma_rels cannot change on --resume"
            )
        for i, m in enumerate(self.modules):
            m.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)})


def read_profiles(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a snapshot or of a checkpoint's profiles (see :func:`read_metadata`)."""
    meta = read_metadata(path)
    return load_tensors(path), meta


def read_metadata(path: Path) -> dict:
    """The `step` and `sigma_rels` of a snapshot or of a checkpoint's profiles, without its tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"cannot read {str(path)!r}: {e}; the file is damaged: remove it (the post-hoc "
            f"EMA is reconstructed from the other snapshots)"
        ) from e
    if meta.get("format") != "vidiff-power-ema":
        raise CheckpointError(
            f"{str(path)!r} is not a vidiff power-EMA snapshot (no format metadata); the file is "
            f"damaged or was not written by `vidiff train` with train.ema=power"
        )
    return {"step": int(meta["step"]), "sigma_rels": json.loads(meta["sigma_rels"])}


def snapshot_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step_{step:07d}.safetensors"


# ---- reconstruction ----------------------------------------------------------------------------
def reconstructed_path(run_dir: Path, sigma_rel: float, step: int) -> Path:
    return Path(run_dir) / RECONSTRUCTED / f"sigma_rel_{sigma_rel:.3f}_step_{step:07d}.safetensors"


def snapshot_steps(run_dir: Path) -> list:
    """The steps of a run's snapshots, in order."""
    found = (re.fullmatch(r"step_(\d+)\.safetensors", p.name) for p in (Path(run_dir) / SNAPSHOTS).glob("*"))
    return sorted(int(m[1]) for m in found if m)


def reconstruct(run_dir: Path, sigma_rel: float, step: Optional[int] = None) -> tuple[dict, dict]:
    """(weights, metadata) of the power EMA of length `sigma_rel` at `step` (default: the last snapshot),
    a least-squares combination of every profile of every snapshot up to `step`, summed in float64."""
    if not 0 < sigma_rel < SIGMA_REL_MAX:
        raise ConfigError(f"--sigma-rel {sigma_rel}: σ_rel of a power EMA must be in (0, {SIGMA_REL_MAX:.4f})")
    steps = snapshot_steps(run_dir)
    if not steps:
        raise CheckpointError(
            f"{str(Path(run_dir) / SNAPSHOTS)!r} holds no snapshots: train the run with "
            f"--set train.ema=power (it writes them every train.ema_snapshot_every steps)"
        )
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointError(
            f"run {str(run_dir)!r} has no EMA snapshot at step {step}; its snapshots are at steps "
            f"{steps[0]} … {steps[-1]} ({len(steps)}): pass one of them as --step"
        )
    used = [s for s in steps if s <= step]
    rels = [read_metadata(snapshot_path(run_dir, s))["sigma_rels"] for s in used]
    coefficients = solve_coefficients(
        [s for s, r in zip(used, rels) for _ in r],
        [sigma_rel_to_gamma(x) for r in rels for x in r],
        step,
        sigma_rel_to_gamma(sigma_rel),
    )
    weights, dtypes, first = {}, {}, 0  # one snapshot in memory at a time
    for s, r in zip(used, rels):
        tensors, _ = read_profiles(snapshot_path(run_dir, s))
        for key, v in tensors.items():
            profile, name = key.split(".", 1)
            weights[name] = weights.get(name, 0) + float(coefficients[first + int(profile)]) * v.double()
            dtypes[name] = v.dtype
        first += len(r)
    meta = {"format": "vidiff", "posthoc_ema_sigma_rel": str(sigma_rel), "step": str(step), "snapshots": str(len(used))}
    return {k: v.to(dtypes[k]) for k, v in weights.items()}, meta


def write_reconstruction(run_dir: Path, sigma_rel: float, step: Optional[int] = None, out=None) -> Path:
    """`reconstruct` written as a weights file (default in the run's ema/ folder, named for σ_rel and step)."""
    weights, meta = reconstruct(run_dir, sigma_rel, step)
    path = Path(out) if out else reconstructed_path(run_dir, sigma_rel, int(meta["step"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_tensors(path, weights, meta)


def weights_file(ck: Path, ema) -> Path:
    """The weights file that `from_pretrained(…, ema=…)` loads from checkpoint folder `ck`: `ema` is a
    file, or a σ_rel whose reconstruction at the checkpoint's step `vidiff ema` wrote in the run folder."""
    if isinstance(ema, (int, float)) and not isinstance(ema, bool):
        if ck.parent.name != "checkpoints":
            raise CheckpointError(
                f"ema={ema}: a post-hoc EMA is read from a run folder (its ema/ folder), and "
                f"{str(ck)!r} is not in one; pass the run folder, or ema=a weights file"
            )
        step = int(ck.name.split("_")[-1])
        path = reconstructed_path(ck.parent.parent, float(ema), step)
        if not path.is_file():
            raise CheckpointError(
                f"no post-hoc EMA of σ_rel {ema} at step {step}: run `vidiff ema "
                f"{ck.parent.parent} --sigma-rel {ema} --step {step}` first (it writes {path})"
            )
        return path
    path = Path(ema)
    if not path.is_file():
        raise CheckpointError(
            f"ema={str(ema)!r}: no such weights file; give a σ_rel (a number) or a file written by `vidiff ema`"
        )
    return path
