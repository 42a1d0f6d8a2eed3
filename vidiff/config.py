"""Run configuration: frozen, typed dataclasses, named presets, `section.key=value` overrides, JSON.

The resolved configuration is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass, field, fields
from functools import partial

from vidiff.conditioning import KINDS, ConditioningConfig, build_conditioning
from vidiff.diffusion.schedule import logsnr_cosine
from vidiff.errors import ConfigError, RemovedOptionError
from vidiff.nn.ema import SIGMA_REL_MAX
from vidiff.nn.unet import UNetConfig

REMOVED_AFTER = "0.1.0"  # the last vidiff with the model options that upgrade() drops
REMOVED = (  # (model key, the value removed, whether a trained model's weights need it)
    ("conditioned_arrow", True, True),  # its gains are weights the network no longer has
    ("rel_pos_init", "neighbours", False),  # where the bias started: the trained bias is in the weights
)
LOGGERS = ("tensorboard", "wandb", "both", "none")  # train.logger (vidiff.train.tracking)

# Filled in from the data when training starts (and recorded with the run): never set by hand.
DERIVED = {
    "model.num_classes": "the number of classes in the data (conditioning.kind=class)",
    "model.text_dim": "the text encoder's width (conditioning.kind=text)",
    "conditioning.classes": "the class names in the data (conditioning.kind=class)",
}


@dataclass(frozen=True)
class DiffusionConfig:
    prediction: str = "epsilon"  # "epsilon" | "v_prediction" | "sample"
    loss_weighting: str = "epsilon"  # "epsilon" | "v" | "x" | "min_snr" (Hang et al. 2023, with min_snr_gamma)
    min_snr_gamma: float = 5.0  # γ of loss_weighting=min_snr: the x-space weight is min(SNR, γ)
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    logsnr_shift: float = 0.0  # shifted cosine schedule (beyond the paper; see vidiff.diffusion.schedule.logsnr_cosine)

    def schedule(self) -> dict:
        """The noise schedule as keywords of the loss and of the samplers."""
        return dict(
            logsnr_fn=partial(logsnr_cosine, shift=self.logsnr_shift),
            logsnr_min=self.logsnr_min,
            logsnr_max=self.logsnr_max,
        )


@dataclass(frozen=True)
class DataConfig:
    source: str = "builtin:moving-shapes"  # or a folder of videos
    frames: int = 8
    size: int = 32
    frame_stride: int = 1
    fps: float = 0.0  # clips sampled by presentation time at this rate; 0: each file's nominal rate
    flip: bool = False
    image_frames: int = 0  # joint image-video training: independent images appended to each video
    image_source: str = ""  # folder of images; "" takes frames of other videos
    skip_bad_files: bool = False
    num_workers: str = "auto"  # loader processes: a count, or "auto" (vidiff.train.loader.num_workers)
    num_videos: int = 100_000  # built-in dataset size


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # global batch, split across processes
    steps: int = 1000
    max_minutes: float = 0.0  # stop early after this long (0: no limit)
    lr: float = 3e-4
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # after the warm-up: one of LR_SCHEDULES (vidiff.train.lr_schedule)
    lr_decay_steps: int = 0  # cosine: steps of the decay (0: to train.steps); inverse_sqrt: its t_ref (0: warm-up)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema: str = "exponential"  # one of EMAS; "power": EDM2's post-hoc EMA (vidiff.train.power_ema, `vidiff ema`)
    ema_sigma_rels: tuple[float, ...] = (0.05, 0.10)  # train.ema=power: the σ_rel of each tracked profile
    ema_snapshot_every: int = 0  # train.ema=power: snapshot every N steps (0: save_every) and at each checkpoint
    cond_drop_prob: float = 0.1  # classifier-free guidance: probability of the null condition
    mixed_precision: str = "auto"  # "auto" (bf16 on a GPU, none on the CPU) | "no" | "bf16" | "fp16"
    compile: bool = False
    grad_accum: int = 1  # micro-batches per update: each process computes batch_size / (processes × grad_accum)
    parallel: str = "auto"  # "ddp" | "fsdp" (FSDP2: parameters, gradients and optimiser state sharded) | "auto"
    seed: int = 0
    log_every: int = 10
    save_every: int = 500
    sample_every: int = 0  # 0: only at the end
    num_samples: int = 4
    fvd_every: int = 0  # 0: never; else FVD on a small sample every N steps
    fvd_num: int = 16
    logger: str = "tensorboard"  # where scalars, config and samples are tracked: one of LOGGERS


PARALLEL = ("auto", "ddp", "fsdp")
LR_SCHEDULES = ("constant", "inverse_sqrt", "cosine")
EMAS = ("exponential", "power")


@dataclass(frozen=True)
class SampleConfig:
    """Defaults of sampling requests (vidiff.request.SampleRequest). `options` are samplers'
    own options (vidiff.diffusion.sampling's registry); a sampler takes those of them it has."""

    sampler: str = "ancestral"  # a name in vidiff.diffusion.sampling.SAMPLERS
    steps: int = 256
    grid: str = "t"  # the λ grid every sampler walks: uniform in "t" (the paper's) or in "lambda"
    options: dict = field(default_factory=lambda: {"gamma": 0.1})
    guidance: float = 0.0  # classifier-free guidance weight w
    reconstruction_weight: float = 9.0  # w_r of reconstruction guidance (paper: 50 BAIR, 9 Kinetics)
    clip: bool = True


# Sampler options that were fields of SampleConfig (vidiff 0.1): config.upgrade moves them into options.
SAMPLE_OPTION_FIELDS = ("gamma", "corrector_steps", "delta", "corrector_min_logsnr", "corrector_max_logsnr")


@dataclass(frozen=True)
class DistillConfig:
    """Progressive distillation (Salimans & Ho 2022): a run whose student learns two DDIM steps of its
    teacher in one; the student samples with `sample.steps` = teacher_steps / 2 DDIM steps."""

    teacher: str = ""  # the teacher's checkpoint; "" for an ordinary run
    teacher_steps: int = 0
    guidance: float = 0.0  # the classifier-free guidance weight w whose guided output the student gives


@dataclass(frozen=True)
class Config:
    model: UNetConfig = field(default_factory=UNetConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, *, trained: bool = False) -> "Config":
        """The configuration `d` describes, of this vidiff or an earlier one (see upgrade); `trained`:
        it is a checkpoint's, whose weights are loaded with it."""
        if not isinstance(d, dict):
            raise ConfigError(
                "a configuration must be a JSON object of sections (model, data, train, ...), each "
                "an object of settings, like a run's config.json"
            )
        d = upgrade(d, trained=trained)
        sections = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(sections))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; sections are {sorted(sections)}")
        kwargs = {}
        for name in sections:
            sub_cls = _section_types()[name]
            sub = d.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"config section {name!r} must be an object of settings, got {sub!r}")
            known = {x.name for x in fields(sub_cls)}
            bad = sorted(set(sub) - known)
            if bad:
                raise ConfigError(f"unknown key(s) {[f'{name}.{k}' for k in bad]}; {name} has {sorted(known)}")
            kwargs[name] = sub_cls(**{k: _coerce(sub_cls, k, v, f"{name}.{k}") for k, v in sub.items()})
        return validate(cls(**kwargs))

    def override(self, assignments: list[str]) -> "Config":
        """Apply `section.key=value` strings (values parsed by the field's type)."""
        d = self.to_dict()
        for a in assignments:
            if "=" not in a or "." not in a.split("=", 1)[0]:
                raise ConfigError(f"override {a!r} must look like section.key=value (e.g. model.base_channels=32)")
            key, value = a.split("=", 1)
            section, name = key.split(".", 1)
            if section not in d:
                raise ConfigError(f"unknown config section {section!r} in {a!r}; sections are {sorted(d)}")
            if section == "sample" and (name.startswith("options.") or name in SAMPLE_OPTION_FIELDS):
                d[section]["options"] = {**d[section]["options"], **_parse_option(name.split(".")[-1], value, key)}
                continue
            if name not in d[section]:
                raise ConfigError(f"unknown key {key!r}; {section} has {sorted(d[section])}")
            if key in DERIVED:
                raise ConfigError(
                    f"{key} cannot be set: it is {DERIVED[key]}, read from the data when training "
                    f"starts and recorded in the run's config.json"
                )
            d[section][name] = _parse(_section_types()[section], name, value, key)
        return Config.from_dict(d)


def _section_types() -> dict:
    return {
        "model": UNetConfig,
        "conditioning": ConditioningConfig,
        "diffusion": DiffusionConfig,
        "data": DataConfig,
        "train": TrainConfig,
        "sample": SampleConfig,
        "distill": DistillConfig,
    }


def upgrade(d: dict, trained: bool = False) -> dict:
    """A config dict of an earlier vidiff in today's layout: the kind of conditioning and the text
    encoder moved from `train` to `conditioning`, the class names from the top level into it, the
    sampler options from fields of `sample` into `sample.options`, and the model options measured not to
    help are gone (`_removed_options`)."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    if isinstance(d.get("model"), dict):
        _removed_options(d["model"], trained)
    moved = {"conditioning": "kind", "text_encoder": "text_encoder", "text_max_length": "text_max_length"}
    train, cond = d.get("train", {}), d.get("conditioning", {})
    for old, new in moved.items():
        if old in train:
            cond.setdefault(new, train.pop(old))
    data = d.get("data", {})
    if isinstance(data.get("num_workers"), int) and not isinstance(data["num_workers"], bool):
        data["num_workers"] = str(data["num_workers"])  # a count before "auto" existed
    if "classes" in d:
        classes = d.pop("classes")
        cond.setdefault("classes", list(classes or ()))
    if cond:
        d["conditioning"] = cond
    sample = d.get("sample")
    if isinstance(sample, dict) and any(k in sample for k in SAMPLE_OPTION_FIELDS):
        options = {k: sample.pop(k) for k in SAMPLE_OPTION_FIELDS if k in sample}
        sample["options"] = {**options, **(sample.get("options") or {})}
    return d


def _removed_options(model: dict, trained: bool) -> None:
    """Drops the model options of REMOVED from a config dict. Set to a value that changes nothing,
    a key is dropped silently. Set to the removed value it is refused, unless it only chose where
    training started and this is a trained checkpoint's config: that loads, with a warning."""
    known = {f.name for f in fields(UNetConfig)}
    for key, value, in_weights in REMOVED:
        if model.get(key) == value:
            setting = f"model.{key}={value if isinstance(value, str) else json.dumps(value)}"
            why = (
                f"{setting} was removed after vidiff {REMOVED_AFTER} (measured not to help: "
                f"docs/findings/arrow-of-time.md)"
            )
            if trained and in_weights:
                raise RemovedOptionError(
                    f"{why}, and this checkpoint's weights use it: load it with vidiff "
                    f"{REMOVED_AFTER} (pip install vidiff=={REMOVED_AFTER})"
                )
            if not trained:
                raise RemovedOptionError(
                    f"{why}: remove model.{key} from the configuration (the default applies), "
                    f"or use vidiff {REMOVED_AFTER}"
                )
            warnings.warn(
                f"{why}; it only chose the starting weights, and this checkpoint's trained weights load as they are",
                stacklevel=4,
            )
            model.pop(key)
        elif key not in known:
            model.pop(key, None)


def _field_type(cls, name):
    return typing.get_type_hints(cls)[name]


def _coerce(cls, name, value, key):
    t = _field_type(cls, name)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if (
        t == tuple[float, ...]
        and isinstance(value, (list, tuple))
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    if t is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, (int, str)) for v in value):
        return tuple(value)
    if t is dict and isinstance(value, dict):
        return {k: _coerce_option(k, v, f"{key}.{k}") for k, v in value.items()}
    if t is float and (is_int or isinstance(value, float)):
        return float(value)
    if (t is int and is_int) or (t is bool and isinstance(value, bool)) or (t is str and isinstance(value, str)):
        return value
    raise ConfigError(f"{key} must be of type {getattr(t, '__name__', t)}, got {value!r}")


def sampler_option_defaults() -> dict:
    """Every option of every registered sampler: name → its default (whose type the option takes)."""
    from vidiff.diffusion.sampling import SAMPLERS

    return {name: default for spec in SAMPLERS.values() for name, default in spec.options.items()}


def _coerce_option(name, value, key):
    """A value of `sample.options`, of the type of the option's default (a whole number is a float too)."""
    defaults = sampler_option_defaults()
    if name not in defaults:
        raise ConfigError(_unknown_option(key, name, defaults))
    t = type(defaults[name])
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, t) or (t is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be of type {t.__name__}, got {value!r}")
    return value


def _unknown_option(key: str, name: str, defaults: dict) -> str:
    return f"{key}: no registered sampler takes an option {name!r}; the options are {', '.join(sorted(defaults))}"


def parse_bool(text: str) -> bool:
    """true/false, 1/0, yes/no (any case); ValueError otherwise."""
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def _parse(cls, name, text, key):
    t = _field_type(cls, name)
    try:
        if t is bool:
            return parse_bool(text)
        if t is tuple or t == tuple[float, ...]:
            kind = int if t is tuple else float
            return tuple(kind(v) for v in text.strip("()[] ").split(",") if v.strip())
        return t(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected a value of type {getattr(t, '__name__', t)}") from None


def _parse_option(name: str, text: str, key: str) -> dict:
    """`sample.options.NAME=VALUE` as {NAME: value}, the value parsed by the type of the option's default."""
    defaults = sampler_option_defaults()
    if name not in defaults:
        raise ConfigError(_unknown_option(key, name, defaults))
    default = defaults[name]
    try:
        return {name: parse_bool(text) if isinstance(default, bool) else type(default)(text)}
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected a value of type {type(default).__name__}") from None


def validate(cfg: Config) -> Config:
    problems = []
    m, d, data, tr, s = cfg.model, cfg.diffusion, cfg.data, cfg.train, cfg.sample
    from vidiff.diffusion.loss import WEIGHTINGS
    from vidiff.diffusion.process import PREDICTIONS

    if d.prediction not in PREDICTIONS:
        problems.append(f"diffusion.prediction must be one of {PREDICTIONS}, got {d.prediction!r}")
    if d.loss_weighting not in WEIGHTINGS:
        problems.append(f"diffusion.loss_weighting must be one of {WEIGHTINGS}, got {d.loss_weighting!r}")
    if not 0 < d.min_snr_gamma < math.inf:
        problems.append(f"diffusion.min_snr_gamma must be a positive number, got {d.min_snr_gamma}")
    if not d.logsnr_min < d.logsnr_max:
        problems.append("diffusion.logsnr_min must be below diffusion.logsnr_max")
    if not d.logsnr_min < d.logsnr_shift < d.logsnr_max:
        problems.append("diffusion.logsnr_shift must lie between diffusion.logsnr_min and diffusion.logsnr_max")
    if data.size < 1:
        problems.append(f"data.size must be >= 1, got {data.size}")
    if data.size % m.downsample_factor:
        problems.append(
            f"data.size={data.size} must be divisible by {m.downsample_factor} "
            f"(2^(levels−1) for model.channel_mults={m.channel_mults})"
        )
    if data.fps < 0:
        problems.append(f"data.fps must be positive (or 0 for each file's own rate), got {data.fps}")
    if data.num_workers != "auto" and not data.num_workers.isdigit():
        problems.append(f"data.num_workers must be auto or a count of processes, got {data.num_workers!r}")
    if data.frames < 1 or data.frame_stride < 1 or data.image_frames < 0:
        problems.append("data.frames and data.frame_stride must be >= 1 and data.image_frames >= 0")
    if cfg.conditioning.kind in KINDS:
        problems += build_conditioning(cfg.conditioning).problems(m) + _condition_problems(cfg)
    if tr.log_every < 1 or tr.save_every < 0 or tr.sample_every < 0 or tr.fvd_every < 0:
        problems.append("train.log_every must be >= 1 and train.save_every, sample_every, fvd_every >= 0")
    problems += _train_problems(tr)
    if tr.fvd_every and tr.fvd_num < 2:
        problems.append(f"train.fvd_num must be at least 2 for FVD (got {tr.fvd_num})")
    if tr.batch_size < 1 or tr.steps < 0 or tr.grad_accum < 1:
        problems.append("train.batch_size and train.grad_accum must be >= 1 and train.steps >= 0")
    if tr.batch_size % tr.grad_accum:
        problems.append(f"train.batch_size={tr.batch_size} must be divisible by train.grad_accum={tr.grad_accum}")
    if tr.parallel not in PARALLEL:
        problems.append(f"train.parallel must be one of {', '.join(PARALLEL)}, got {tr.parallel!r}")
    if cfg.conditioning.kind not in KINDS:
        problems.append(f"conditioning.kind must be one of {', '.join(KINDS)}, got {cfg.conditioning.kind!r}")
    if cfg.conditioning.text_cache_captions < 1:
        problems.append(f"conditioning.text_cache_captions must be >= 1, got {cfg.conditioning.text_cache_captions}")
    if not 0 <= tr.cond_drop_prob < 1:
        problems.append("train.cond_drop_prob must be in [0, 1)")
    if tr.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        problems.append(f"train.mixed_precision must be auto, no, bf16 or fp16, got {tr.mixed_precision!r}")
    if tr.logger not in LOGGERS:
        problems.append(f"train.logger must be one of {', '.join(LOGGERS)}, got {tr.logger!r}")
    if not 0 <= tr.ema_decay < 1:
        problems.append("train.ema_decay must be in [0, 1)")
    problems += _sample_problems(s)
    if cfg.distill.teacher and cfg.distill.teacher_steps != 2 * s.steps:
        problems.append(f"distill.teacher_steps={cfg.distill.teacher_steps} must be twice sample.steps={s.steps}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return cfg


def _sample_problems(s: SampleConfig) -> list:
    from vidiff.diffusion.sampling import GRIDS, SAMPLERS

    problems = []
    if s.sampler not in SAMPLERS:
        problems.append(f"sample.sampler must be one of {', '.join(sorted(SAMPLERS))}, got {s.sampler!r}")
    if s.steps < 1:
        problems.append(f"sample.steps must be >= 1, got {s.steps}")
    if s.grid not in GRIDS:
        problems.append(f"sample.grid must be one of {', '.join(GRIDS)}, got {s.grid!r}")
    defaults = sampler_option_defaults()
    return problems + [_unknown_option(f"sample.options.{k}", k, defaults) for k in s.options if k not in defaults]


def _train_problems(tr: TrainConfig) -> list:
    problems = []
    if not 0 < tr.lr < math.inf:
        problems.append(f"train.lr must be a positive number, got {tr.lr}")
    if not 0 <= tr.seed < 2**63:
        problems.append(f"train.seed must be a non-negative integer below 2^63, got {tr.seed}")
    for key in ("num_samples", "warmup_steps", "fvd_num"):
        if getattr(tr, key) < 0:
            problems.append(f"train.{key} must be >= 0, got {getattr(tr, key)}")
    for key in ("max_minutes", "weight_decay", "grad_clip"):
        if not 0 <= getattr(tr, key) < math.inf:
            problems.append(f"train.{key} must be >= 0 and finite, got {getattr(tr, key)}")
    for key in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(tr, key) < 1:
            problems.append(f"train.{key} must be in [0, 1), got {getattr(tr, key)}")
    return problems + _lever_problems(tr)


def _lever_problems(tr: TrainConfig) -> list:
    """The learning-rate schedule and the EMA."""
    problems = []
    if tr.lr_schedule not in LR_SCHEDULES:
        problems.append(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {tr.lr_schedule!r}")
    if tr.lr_decay_steps < 0:
        problems.append(f"train.lr_decay_steps must be >= 0 (0: the schedule's default), got {tr.lr_decay_steps}")
    if tr.ema not in EMAS:
        problems.append(f"train.ema must be one of {', '.join(EMAS)}, got {tr.ema!r}")
    if tr.ema_snapshot_every < 0:
        problems.append(f"train.ema_snapshot_every must be >= 0, got {tr.ema_snapshot_every}")
    if tr.ema == "power":
        rels = tr.ema_sigma_rels
        if len(rels) < 1 or any(not 0 < r < SIGMA_REL_MAX for r in rels) or len(set(rels)) < len(rels):
            problems.append(
                f"train.ema_sigma_rels must be distinct numbers in (0, 0.2887) (σ_rel of a power EMA; EDM2 "
                f"tracks 0.05 and 0.10), got {list(rels)}"
            )
        if not (tr.ema_snapshot_every or tr.save_every):
            problems.append("train.ema=power needs snapshots: set train.ema_snapshot_every (or train.save_every) >= 1")
    return problems


def _condition_problems(cfg: Config) -> list:
    """What the network checks about its condition, checked before the data fills the condition in."""
    m, kind = cfg.model, cfg.conditioning.kind
    if m.frame_condition_product and kind == "none":
        return [
            "model.frame_condition_product multiplies time by the clip's class or caption: it needs "
            "conditioning.kind=class or text"
        ]
    if kind == "text" and not m.text_dim:  # the width the data will give: the text encoder's
        from vidiff.nn.text import text_encoder_dim

        try:
            width = text_encoder_dim(cfg.conditioning.text_encoder or None)
        except (OSError, ValueError):  # a missing or broken encoder is named where it is loaded
            return []
        if m.text_pool_heads > 0 and width % m.text_pool_heads:
            return [f"model.text_pool_heads={m.text_pool_heads} must divide the text encoder's width {width}"]
    return []
