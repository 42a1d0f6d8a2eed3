"""The model card of a published model: YAML metadata the Hub reads (license, library, tags, preset,
parameters, training data and steps, a model-index with the evaluation's results), then the samples,
the exact `vidiff sample` command, the model, its training, its evaluation and how it was computed,
the license and the paper's citation. Everything it says comes from a `RunFacts`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from vidiff.config import DERIVED, Config
from vidiff.hub.download import PREFIX, hub_library
from vidiff.metrics.evaluate import METRICS

CITATION = """@article{ho2022video,
  title   = {Video Diffusion Models},
  author  = {Ho, Jonathan and Salimans, Tim and Gritsenko, Alexey and Chan, William and Norouzi, Mohammad
             and Fleet, David J.},
  journal = {arXiv preprint arXiv:2204.03458},
  year    = {2022}
}"""
PREDICTION_NAMES = {"epsilon": "ε-prediction", "v_prediction": "v-prediction", "sample": "x-prediction"}
EVAL_METRICS = tuple(METRICS)  # the keys of a `vidiff eval` report, in the card's order: every registered metric
MOVING_SHAPES = (
    "vidiff's built-in synthetic clips: one solid shape (circle, square or triangle) of one palette "
    "colour moving left, right, up or down over a dark background, generated on the fly (no files)"
)


@dataclass
class RunFacts:
    """What the card says about a model: read from its checkpoint and, for a run, its run folder."""

    repo_id: str
    config: Config  # as published: public_config (the card repeats its names as they are)
    parameters: int
    step: Optional[int] = None  # training steps (a checkpoint's state.json)
    grid: Optional[Path] = None
    evaluation: Optional[dict] = None  # a `vidiff eval` report
    periodic_fvd: Optional[dict] = None  # the newest FVD row of metrics.jsonl
    license: str = "apache-2.0"
    ema: bool = True


def preset_of(config: Config) -> Optional[str]:
    """The preset whose architecture and diffusion `config` has (the values read from the data aside)."""
    from vidiff.presets import PRESETS

    def arch(c: Config) -> tuple:
        model = {k: v for k, v in asdict(c.model).items() if f"model.{k}" not in DERIVED}
        return model, c.diffusion, c.conditioning.kind

    return next((name for name, p in PRESETS.items() if arch(p) == arch(config)), None)


def describe_data(config: Config) -> str:
    d = config.data
    builtin = d.source.startswith("builtin:moving-shapes")
    what = (
        MOVING_SHAPES + (f", as `{d.source}`" if "?" in d.source else "")
        if builtin
        else f"a folder of videos (`{d.source}/`)"
    )
    shape = f"{d.frames} frames of {d.size}×{d.size}"
    extra = [
        f"every {d.frame_stride}th frame" if d.frame_stride > 1 else "",
        f"read at {d.fps:g} fps" if d.fps else "",
        "random horizontal flips" if d.flip else "",
        f"{d.image_frames} independent images per clip (joint image-video training)" if d.image_frames else "",
    ]
    return f"{what}; clips of {shape}" + "".join(f", {e}" for e in extra if e)


def task_of(config: Config) -> str:
    return {"text": "text-to-video", "class": "class-conditional-video-generation"}.get(
        config.conditioning.kind, "unconditional-video-generation"
    )


def sample_command(facts: RunFacts) -> str:
    """The `vidiff sample` command that samples the published model with its own defaults."""
    s, cond = facts.config.sample, facts.config.conditioning
    parts = [
        f"vidiff sample --checkpoint {PREFIX}{facts.repo_id} --num-videos 4",
        f"--sampler {s.sampler}",
        f"--steps {s.steps}",
    ]
    if cond.kind == "text":
        parts.append('--prompt "a red circle moving left"')
    elif cond.kind == "class" and cond.classes:
        parts.append(f'--class "{cond.classes[0]}"')
    if s.guidance and cond.kind in ("text", "class"):
        parts.append(f"--guidance {s.guidance:g}")
    return " ".join(parts + ["--seed 0 --out samples"])


def model_card(facts: RunFacts) -> str:
    """README.md of the upload: YAML metadata (huggingface_hub's model card format) and markdown."""
    hf = hub_library()
    c = facts.config
    data = hf.ModelCardData(
        license=facts.license,
        library_name="vidiff",
        pipeline_tag="text-to-video" if c.conditioning.kind == "text" else None,
        tags=["vidiff", "video-diffusion", "video-generation", task_of(c)],
        eval_results=_eval_results(hf, facts) or None,
        model_name=facts.repo_id,
        preset=preset_of(c) or "custom",
        parameters=facts.parameters,
        training_steps=facts.step,
        training_data=c.data.source,
        frames=c.data.frames,
        resolution=c.data.size,
        conditioning=c.conditioning.kind,
    )
    body = "\n\n".join(
        part
        for part in (
            _intro(facts),
            _usage(facts),
            _model(facts),
            _training(facts),
            _evaluation(facts),
            _license_and_citation(facts),
        )
        if part
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"


def _eval_results(hf, facts: RunFacts) -> list:
    report, c = facts.evaluation, facts.config
    if report is None:
        return []
    protocol = report.get("protocol", {})
    builtin = c.data.source.startswith("builtin:moving-shapes")
    name = "Moving shapes (vidiff built-in)" if builtin else c.data.source
    return [
        hf.EvalResult(
            task_type=task_of(c),
            dataset_type=c.data.source,
            dataset_name=name,
            metric_type=m,
            metric_value=float(report[m]),
            metric_name=m.upper(),
            metric_config=protocol.get("fvd_name") if METRICS[m].features == "i3d" else None,
        )
        for m in EVAL_METRICS
        if isinstance(report.get(m), (int, float))
    ]


def _intro(facts: RunFacts) -> str:
    c = facts.config
    kind = {"text": "text-conditional", "class": "class-conditional"}.get(c.conditioning.kind, "unconditional")
    lines = [
        f"# {facts.repo_id}",
        "",
        f"An {kind} video diffusion model (Ho et al., *Video Diffusion Models*, 2022) trained with vidiff: "
        f"a factorized space-time UNet that generates {c.data.frames} frames of {c.data.size}×{c.data.size}.",
    ]
    if facts.grid is not None:
        lines += ["", "![samples of the model (seed 0)](grid.gif)"]
    return "\n".join(lines)


def _usage(facts: RunFacts) -> str:
    text = ""
    if facts.config.conditioning.kind == "text":
        encoder = facts.config.conditioning.text_encoder
        text = (
            "\n\nPrompts are encoded by "
            + (
                f"a local text encoder folder, `{encoder}`, on the machine that "
                f"trained it: give `--text-encoder` a copy of it"
                if encoder
                else "the MiniLM-L6 encoder packaged with `vidiff[text]`"
            )
            + "."
        )
    return (
        f'## Use it\n\n```bash\npip install "vidiff[hub]"\n{sample_command(facts)}\n```\n\n'
        f"writes `samples/sample_*.mp4`, `sample_*.gif` and `grid.gif`. In Python:\n\n"
        f"```python\nfrom vidiff import VideoDiffusion\n\n"
        f'model = VideoDiffusion.from_pretrained("{facts.repo_id}")\n'
        f"videos = model.sample(4, seed=0)  # (4, 3, frames, height, width) in [-1, 1]\n```{text}"
    )


def _model(facts: RunFacts) -> str:
    c, m = facts.config, facts.config.model
    rows = [
        ("preset", preset_of(c) or "custom (see config.json)"),
        ("parameters", f"{facts.parameters:,}"),
        (
            "UNet",
            f"{m.base_channels} channels × {tuple(m.channel_mults)}, {m.num_res_blocks} res blocks per level, "
            f"attention at levels {tuple(m.attention_levels)}",
        ),
        (
            "diffusion",
            f"{PREDICTION_NAMES.get(c.diffusion.prediction, c.diffusion.prediction)}, cosine "
            f"log-SNR schedule in "
            f"[{c.diffusion.logsnr_min:g}, {c.diffusion.logsnr_max:g}] shifted by "
            f"{c.diffusion.logsnr_shift:g}",
        ),
        (
            "conditioning",
            c.conditioning.kind + (f" ({len(c.conditioning.classes)} classes)" if c.conditioning.classes else ""),
        ),
        (
            "default sampler",
            f"{c.sample.sampler}, {c.sample.steps} steps"
            + (f", guidance w={c.sample.guidance:g}" if c.sample.guidance else ""),
        ),
        ("weights", "EMA" if facts.ema else "raw (the checkpoint has no EMA)"),
    ]
    return "## Model\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _training(facts: RunFacts) -> str:
    tr = facts.config.train
    steps = f"{facts.step:,} steps" if facts.step is not None else "steps not recorded (a save_pretrained folder)"
    dropout = f", condition dropout {tr.cond_drop_prob:g}" if facts.config.conditioning.kind != "none" else ""
    return (
        f"## Training\n\n- data: {describe_data(facts.config)}\n- {steps} at batch size {tr.batch_size}, "
        f"AdamW lr {tr.lr:g} ({tr.warmup_steps} warm-up steps), EMA decay {tr.ema_decay:g}, gradient clip "
        f"{tr.grad_clip:g}{dropout}\n- the full configuration: `config.json`"
    )


def _evaluation(facts: RunFacts) -> str:
    parts = []
    report = facts.evaluation
    if report is not None:
        p = report.get("protocol", {})
        rows = "\n".join(
            f"| {m.upper()} | {report[m]:.4g}" + (f" ± {report[m + '_std']:.3g}" if m + "_std" in report else "") + " |"
            for m in EVAL_METRICS
            if isinstance(report.get(m), (int, float))
        )
        how = [
            f"{p['fvd_name']}: {p.get('num_fake')} generated clips against {p.get('num_real')} real clips"
            if "fvd_name" in p
            else "",
            f"{p.get('frames')} frames per clip, frame stride {p.get('frame_stride')}",
            f"I3D weights: {json.dumps(p['i3d_weights'])}" if "i3d_weights" in p else "",
            f"resize: {p['resize']}" if "resize" in p else "",
            f"repeats: {p['repeats']}" if p.get("repeats", 1) > 1 else "",
            f"vidiff {p['vidiff_version']}" if "vidiff_version" in p else "",
        ]
        parts.append(
            "| metric | value |\n|---|---|\n" + rows + "\n\nHow it was computed (`vidiff eval`; the full "
            "report is `eval.json`):\n\n" + "\n".join(f"- {h}" for h in how if h)
        )
    fvd = facts.periodic_fvd
    if fvd is not None:
        parts.append(
            f"During training (step {fvd['step']:,}): FVD {fvd['fvd']:.4g} of {fvd.get('fvd_num', '?')} EMA "
            f"samples against as many real clips, at least 9 frames each: a small sample that shows the "
            f"trend, not a score to compare with published ones."
        )
    return "## Evaluation\n\n" + "\n\n".join(parts) if parts else ""


def _license_and_citation(facts: RunFacts) -> str:
    return (
        f"## License\n\nThe weights are released under the {facts.license} license.\n\n## Citation\n\n"
        f"```bibtex\n{CITATION}\n```"
    )
