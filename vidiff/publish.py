"""Publishing a model on the Hugging Face Hub: the folder `vidiff push` uploads, and the upload.

The folder holds exactly what a user of the model needs and what the Hub shows:

    model.safetensors   the EMA weights (the raw ones when a checkpoint has no EMA)
    config.json         the run's resolved configuration, local paths cut to their last part
    README.md           the model card: YAML metadata (license, library, tags, preset, parameters,
                        training data and steps, and a model-index with the evaluation's results),
                        then the samples, the exact `vidiff sample` command, the model, its training,
                        its evaluation and how it was computed, the license and the paper's citation
    grid.gif            the run's newest sample grid, when it has one
    eval.json           the run's evaluation report (`vidiff eval --out RUN/eval.json`), when it has one,
                        local paths cut to their last part

Nothing published names a folder of the machine that trained the model: the data source, the image
source, a distilled model's teacher and a local text encoder folder appear by their last part
("/home/me/data/ucf101" → "ucf101"), and so do the absolute paths in the evaluation report.

It goes up as one commit of `huggingface_hub` (vidiff.hub.upload_folder).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from vidiff.checkpoint import load_config, load_json, load_weights, read_checkpoint
from vidiff.config import DERIVED, Config
from vidiff.errors import PublishError, VidiffError
from vidiff.files import atomic_write, read_metrics
from vidiff.hub import PREFIX, hub_library, parse_reference, upload_folder

PUBLISHED = ("README.md", "config.json", "model.safetensors", "grid.gif", "eval.json")
CITATION = """@article{ho2022video,
  title   = {Video Diffusion Models},
  author  = {Ho, Jonathan and Salimans, Tim and Gritsenko, Alexey and Chan, William and Norouzi, Mohammad
             and Fleet, David J.},
  journal = {arXiv preprint arXiv:2204.03458},
  year    = {2022}
}"""
PREDICTION_NAMES = {"epsilon": "ε-prediction", "v_prediction": "v-prediction", "sample": "x-prediction"}
EVAL_METRICS = ("fvd", "kvd", "fid", "kid", "is")  # the keys of a `vidiff eval` report, in the card's order
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


def prepare_upload(source, folder, repo_id: str, *, license: str = "apache-2.0", eval_report=None) -> list:
    """Build in `folder` what is published as `repo_id` from `source` (a run folder, a checkpoint folder
    or a save_pretrained folder); returns the names of the files written. `eval_report`: a `vidiff
    eval` JSON report (default: the run's eval.json, if any)."""
    parse_reference(PREFIX + repo_id)  # the name's form
    folder = _clear(Path(folder))

    def build(ck: Path) -> list:
        weights = ck / "ema.safetensors"
        ema = weights.is_file()
        weights = weights if ema else ck / "model.safetensors"
        atomic_write(folder / "model.safetensors", lambda tmp: shutil.copyfile(weights, tmp))
        config = public_config(load_config(ck))
        atomic_write(folder / "config.json", config.to_json())
        step = load_json(ck / "state.json")["step"] if (ck / "state.json").is_file() else None
        return _run_facts(ck, repo_id, config, step, folder / "model.safetensors", license, eval_report, ema)

    facts = read_checkpoint(source, build)
    written = ["model.safetensors", "config.json"]
    if facts.grid is not None:
        atomic_write(folder / "grid.gif", facts.grid.read_bytes())
        written.append("grid.gif")
    if facts.evaluation is not None:
        atomic_write(folder / "eval.json", json.dumps(facts.evaluation, indent=2))
        written.append("eval.json")
    atomic_write(folder / "README.md", model_card(facts))
    _check_loads(folder, source)
    return ["README.md", *written]


def _check_loads(folder: Path, source) -> None:
    """Load the built upload back (its config, then its weights into the network it describes, as
    VideoDiffusion.from_pretrained does); a folder that does not load is removed and refused."""
    from vidiff.unet import UNet3D

    try:
        load_weights(UNet3D(load_config(folder).model), folder / "model.safetensors")
    except VidiffError as e:
        for name in PUBLISHED:
            (folder / name).unlink(missing_ok=True)
        why = str(e).replace(str(folder) + "/", "").replace(str(folder), "the upload")
        raise PublishError(
            f"{str(source)!r} cannot be published: the upload built from it does not load back "
            f"({why.split('; ')[0]}); its weights and config.json come from different runs (an "
            f"edited config.json, or an ema.safetensors of another run): publish a checkpoint "
            f"written by one run"
        ) from None


def publish(
    source,
    repo_id: str,
    *,
    folder=None,
    private: bool = False,
    token=None,
    license: str = "apache-2.0",
    eval_report=None,
    commit_message: str = "Upload vidiff model",
    upload: bool = True,
) -> str:
    """Prepare the upload of `source` as `repo_id` (in `folder`, default a temporary one) and upload it as
    one commit; returns the commit's URL, or with `upload=False` the folder (which then must be given)."""
    if not upload and folder is None:
        raise PublishError("building the upload without uploading it needs a folder to keep it in")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder) if folder is not None else Path(tmp) / "upload"
        files = prepare_upload(source, where, repo_id, license=license, eval_report=eval_report)
        if not upload:
            return str(where)
        return upload_folder(where, repo_id, private=private, token=token, commit_message=commit_message, files=files)


# a URL in a data spec or a report: scheme://[user:password@]host/path[?query][#fragment]
_URL = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]+")


def _public_url(url: str) -> str:
    """A URL as published: its host and its path's last part. The user:password@, the query string (a
    pre-signed URL's credential and signature) and the fragment are dropped."""
    try:
        parts = urlsplit(url)
        host, path = parts.hostname, parts.path
    except ValueError:  # a malformed host ("http://[::1/x"): the path alone
        host, path = None, re.split(r"[?#]", url.partition("://")[2])[0].partition("/")[2]
    last = path.rstrip("/").rpartition("/")[2]
    return "/".join(p for p in (host, last) if p)


def public_name(spec: str) -> str:
    """A local path, URL or data spec as published: its last part ("/data/ucf101/" → "ucf101",
    "pipe:aws s3 cp s3://b/shards-{0..9}.tar -" → "b/shards-{0..9}.tar", a URL → its host and last
    part, without credentials); built-in data and hf:// references as they are."""
    if not spec or spec.startswith(("builtin:", PREFIX)):
        return spec
    urls = _URL.findall(spec)
    if urls:
        return _public_url(urls[-1])
    parts = [p for p in re.split(r"[/\\\s]+", spec) if p not in ("", "-")]
    return parts[-1] if parts else spec


def public_config(config: Config) -> Config:
    """`config` without the training machine's folders (see the module's docstring), and with no URL
    in any other field carrying credentials."""
    d, c = config.data, config.conditioning
    config = replace(
        config,
        data=replace(d, source=public_name(d.source), image_source=public_name(d.image_source)),
        conditioning=replace(c, text_encoder=public_name(c.text_encoder)),
        distill=replace(config.distill, teacher=public_name(config.distill.teacher)),
    )
    return Config.from_dict(without_credentials(config.to_dict()))


def without_credentials(value):
    """`value` (a string, or dicts and lists of them) with every URL in it cut to its public form."""
    if isinstance(value, dict):
        return {k: without_credentials(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_credentials(v) for v in value)
    if isinstance(value, str):
        return _URL.sub(lambda m: _public_url(m.group()), value)
    return value


def _public_report(value):
    """An evaluation report with its absolute paths (folders compared, weight files) cut to their last
    part, and its URLs to their public form."""
    if isinstance(value, dict):
        return {k: _public_report(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public_report(v) for v in value]
    if isinstance(value, str) and re.match(r"(/|~|[A-Za-z]:\\)", value):
        return public_name(value)
    return without_credentials(value)


def _clear(folder: Path) -> Path:
    """An empty folder to build in; files of an earlier build are replaced, anything else is refused."""
    if folder.exists() and not folder.is_dir():
        raise PublishError(f"{str(folder)!r} is a file; choose a folder to build the upload in")
    other = sorted(p.name for p in folder.iterdir() if p.name not in PUBLISHED) if folder.is_dir() else []
    if other:
        raise PublishError(
            f"{str(folder)!r} holds files that are not part of a vidiff upload ({', '.join(other[:5])}"
            f"); everything in it would be published: choose an empty or new folder"
        )
    for name in PUBLISHED:
        (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run_facts(
    ck: Path, repo_id: str, config: Config, step, weights: Path, license: str, eval_report, ema: bool
) -> RunFacts:
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        parameters = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    run = ck.parent.parent if ck.parent.name == "checkpoints" else None
    facts = RunFacts(repo_id, config, parameters, step, license=license, ema=ema)
    if run is not None:
        grids = sorted((run / "samples").glob("step_*.gif"))
        final = run / "samples" / "final" / "grid.gif"
        facts.grid = final if final.is_file() else grids[-1] if grids else None
        facts.periodic_fvd = _newest_fvd(run / "metrics.jsonl")
        if eval_report is None and (run / "eval.json").is_file():
            eval_report = run / "eval.json"
    if eval_report is not None:
        facts.evaluation = _public_report(_eval_report(Path(eval_report)))
    return facts


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _newest_fvd(path: Path) -> Optional[dict]:
    rows = [row for row in read_metrics(path) if "fvd" in row]
    return rows[-1] if rows else None


def _eval_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PublishError(f"cannot read the evaluation report {str(path)!r}: {e}") from None
    if not isinstance(report, dict) or "protocol" not in report or not any(m in report for m in EVAL_METRICS):
        raise PublishError(
            f"{str(path)!r} is not a `vidiff eval` report (no metrics and protocol in it); write one "
            f"with `vidiff eval --real DIR --fake SAMPLES --out {path}`"
        )
    return report


# ---- the model card ----------------------------------------------------------------------------
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
            metric_config=protocol.get("fvd_name") if m in ("fvd", "kvd") else None,
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
