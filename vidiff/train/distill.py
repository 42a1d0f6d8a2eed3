"""Progressive distillation (Salimans & Ho 2022): halve a model's DDIM steps round by round, each
round an ordinary, resumable training run whose student starts as its teacher and learns two of its
teacher's DDIM steps in one (`vidiff.diffusion.DistillationLoss`)."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from ..checkpoint import CheckpointError, has_checkpoints, load_config, load_json, resolve_checkpoint
from ..config import Config, ConfigError, DistillConfig
from .loop import train

log = logging.getLogger("vidiff.train")


def round_steps(from_steps: int, to_steps: int) -> list:
    """The student's steps of each round: from_steps/2, from_steps/4, …, to_steps."""
    if to_steps < 1 or from_steps <= to_steps or from_steps % to_steps or (from_steps // to_steps) & (
            from_steps // to_steps - 1):
        raise ConfigError(f"distillation halves the steps each round: from {from_steps} to {to_steps} steps needs "
                          f"from_steps = to_steps × 2^k (e.g. 256 → 8)")
    steps, out = from_steps, []
    while steps > to_steps:
        steps //= 2
        out.append(steps)
    return out


def round_config(base: Config, teacher: str, student_steps: int, guidance: float, steps_per_round: int,
                 overrides: Sequence[str]) -> Config:
    """A round's run: the teacher's configuration, sampling with the student's DDIM steps."""
    sample = replace(base.sample, sampler="ddim", steps=student_steps, guidance=0.0 if guidance else
                     base.sample.guidance)  # a distilled guided output needs no guidance of its own
    cfg = replace(base, sample=sample, train=replace(base.train, steps=steps_per_round, max_minutes=0.0),
                  distill=DistillConfig(teacher=str(teacher), teacher_steps=2 * student_steps, guidance=guidance))
    if base.diffusion.prediction != "v_prediction":
        log.warning("the teacher predicts %s; progressive distillation is made for v-prediction students (their "
                    "x̂ stays stable at high noise, where one step must do the most)", base.diffusion.prediction)
    return cfg.override(list(overrides))


def _finished(folder: Path, steps: int) -> bool:
    try:
        return load_json(resolve_checkpoint(folder) / "state.json")["step"] >= steps
    except CheckpointError:
        return False


def distill(teacher, out_dir, *, to_steps: int = 8, from_steps: int = 256, steps_per_round: int = 1000,
            guidance: float = 0.0, overrides: Sequence[str] = (), progress: bool = True,
            tensorboard: bool = True) -> dict:
    """Distil `teacher` (a run or checkpoint folder) from `from_steps` to `to_steps` DDIM steps.
    Rounds before the last train into `out_dir/rounds/steps_N`; the last into `out_dir`, an ordinary
    run folder whose config samples with `to_steps` DDIM steps. Finished rounds are kept, an
    interrupted one resumes: calling it again continues where it stopped."""
    out_dir = Path(out_dir).resolve()  # recorded in each round's config: a resume elsewhere still finds it
    checkpoint = resolve_checkpoint(teacher)  # a local folder, or the Hub snapshot of hf://org/name
    base = load_config(checkpoint)
    local = Path(teacher).exists()
    source: Optional[str] = str(Path(teacher).resolve() if local else checkpoint)
    if not local:  # a downloaded config's data source is the uploader's (and a pipe: source would run a command)
        base = replace(base, data=replace(base.data, source=""))
    result: dict = {}
    for steps in round_steps(from_steps, to_steps):
        folder = out_dir if steps == to_steps else out_dir / "rounds" / f"steps_{steps:04d}"
        cfg = round_config(base, source, steps, guidance, steps_per_round, overrides)
        if _finished(folder, steps_per_round):
            log.info("round to %d steps already done in %s", steps, folder)
        else:
            log.info("distilling %d → %d DDIM steps into %s", 2 * steps, steps, folder)
            result = train(cfg, folder, resume=has_checkpoints(folder), progress=progress, tensorboard=tensorboard)
        source = str(folder)
    return {**result, "run_dir": str(out_dir), "steps": to_steps}
