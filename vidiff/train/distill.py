"""Progressive distillation (Salimans & Ho 2022): halve a model's DDIM steps round by round, each
round an ordinary, resumable training run whose student starts as its teacher and learns two of its
teacher's DDIM steps in one (`vidiff.diffusion.loss.DistillationLoss`)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from vidiff.checkpoint import (
    CheckpointError,
    has_checkpoints,
    load_config,
    load_json,
    read_checkpoint,
    resolve_checkpoint,
)
from vidiff.config import Config, ConfigError, DistillConfig
from vidiff.io.files import atomic_write
from vidiff.train.loop import train

log = logging.getLogger("vidiff.train")


def round_steps(from_steps: int, to_steps: int) -> list:
    """The student's steps of each round: from_steps/2, from_steps/4, …, to_steps."""
    if (
        to_steps < 1
        or from_steps <= to_steps
        or from_steps % to_steps
        or (from_steps // to_steps) & (from_steps // to_steps - 1)
    ):
        raise ConfigError(
            f"distillation halves the steps each round: from {from_steps} to {to_steps} steps needs "
            f"from_steps = to_steps × 2^k (e.g. 256 → 8)"
        )
    steps, out = from_steps, []
    while steps > to_steps:
        steps //= 2
        out.append(steps)
    return out


def round_config(
    base: Config, teacher: str, student_steps: int, guidance: float, steps_per_round: int, overrides: Sequence[str]
) -> Config:
    """A round's run: the teacher's configuration, sampling with the student's DDIM steps."""
    sample = replace(
        base.sample, sampler="ddim", steps=student_steps, guidance=0.0 if guidance else base.sample.guidance
    )  # a distilled guided output needs no guidance of its own
    cfg = replace(
        base,
        sample=sample,
        train=replace(base.train, steps=steps_per_round, max_minutes=0.0),
        distill=DistillConfig(teacher=str(teacher), teacher_steps=2 * student_steps, guidance=guidance),
    )
    if base.diffusion.prediction != "v_prediction":
        log.warning(
            "the teacher predicts %s; progressive distillation is made for v-prediction students (their "
            "x̂ stays stable at high noise, where one step must do the most)",
            base.diffusion.prediction,
        )
    return cfg.override(list(overrides))


RECORD = "distill.json"  # in each round's folder: the round it trains, its teacher named by content


def _weights_sha256(ck: Path) -> str:
    """The content hash of the weights a distillation reads from the checkpoint `ck` (setup.initial_weights)."""
    weights = ck / ("ema.safetensors" if (ck / "ema.safetensors").is_file() else "model.safetensors")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _round_state(folder: Path, record: dict, steps_per_round: int) -> str:
    """ "new", "partial" or "done": how far `folder` has trained the round `record` describes. A folder
    whose checkpoints belong to another round (another teacher, other steps or guidance) or to a run that
    is no distillation round is refused. Keys missing from `record` are not compared."""
    if not has_checkpoints(folder):
        return "new"
    try:
        mine = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        mine = None
    if not isinstance(mine, dict):
        raise ConfigError(
            f"run folder {str(folder)!r} holds a run that is not a `vidiff distill` round (no {RECORD}); "
            f"choose another --out"
        )
    differ = [k for k, v in record.items() if mine.get(k) != v]
    if differ:
        what = (
            "another teacher (its weights differ)"
            if differ == ["teacher_sha256"]
            else (f"another round ({', '.join(f'{k}={mine.get(k)!r}, here {record[k]!r}' for k in differ)})")
        )
        raise ConfigError(
            f"run folder {str(folder)!r} holds a distillation round of {what}; choose another --out "
            f"to distil this teacher with these steps and guidance"
        )
    try:
        step = load_json(resolve_checkpoint(folder) / "state.json")["step"]
    except CheckpointError:
        return "partial"
    return "done" if step >= steps_per_round else "partial"


def distill(
    teacher,
    out_dir,
    *,
    to_steps: int = 8,
    from_steps: int = 256,
    steps_per_round: int = 1000,
    guidance: float = 0.0,
    overrides: Sequence[str] = (),
    progress: bool = True,
    tensorboard: bool = True,
) -> dict:
    """Distil `teacher` (a run or checkpoint folder) from `from_steps` to `to_steps` DDIM steps.
    Rounds before the last train into `out_dir/rounds/steps_N`; the last into `out_dir`, an ordinary
    run folder whose config samples with `to_steps` DDIM steps. Finished rounds are kept, an
    interrupted one resumes: calling it again continues where it stopped. Each round's folder records
    its teacher (the sha256 of its weights), steps and guidance; a folder that holds another run is refused."""
    out_dir = Path(out_dir).resolve()  # recorded in each round's config: a resume elsewhere still finds it
    checkpoint = resolve_checkpoint(teacher)  # a local folder, or the Hub snapshot of hf://org/name
    base = load_config(checkpoint)
    local = Path(teacher).exists()
    source: Optional[str] = str(Path(teacher).resolve() if local else checkpoint)
    if not local:  # a downloaded config's data source is the uploader's (and a pipe: source would run a command)
        base = replace(base, data=replace(base.data, source=""))
    rounds = [
        (
            steps,
            out_dir if steps == to_steps else out_dir / "rounds" / f"steps_{steps:04d}",
            {"teacher_steps": 2 * steps, "steps": steps, "guidance": float(guidance)},
        )
        for steps in round_steps(from_steps, to_steps)
    ]
    first_new = None  # a foreign folder is refused before any round trains
    for _, folder, record in rounds:
        if _round_state(folder, record, steps_per_round) == "new":
            first_new = first_new or folder
        elif first_new is not None:  # its teacher, the round before, is still to be trained: another one
            raise ConfigError(
                f"run folder {str(folder)!r} holds a distillation round whose teacher is not in "
                f"{str(first_new)!r} (an empty round before it); choose another --out"
            )
    result: dict = {}
    for steps, folder, record in rounds:
        record = {"teacher_sha256": read_checkpoint(source, _weights_sha256), **record}
        state = _round_state(folder, record, steps_per_round)
        if state == "done":
            log.info("round to %d steps already done in %s", steps, folder)
        else:
            log.info("distilling %d → %d DDIM steps into %s", 2 * steps, steps, folder)
            if state == "new":
                atomic_write(folder / RECORD, json.dumps(record, indent=2) + "\n")
            cfg = round_config(base, source, steps, guidance, steps_per_round, overrides)
            result = train(cfg, folder, resume=state == "partial", progress=progress, tensorboard=tensorboard)
        source = str(folder)
    return {**result, "run_dir": str(out_dir), "steps": to_steps}
