"""Publishing a model on the Hugging Face Hub: the folder `vidiff push` uploads, and the upload.

The folder holds exactly what a user of the model needs and what the Hub shows:

    model.safetensors   the EMA weights (the raw ones when a checkpoint has no EMA)
    config.json         the run's resolved configuration, local paths cut to their last part
    README.md           the model card (vidiff.hub.card)
    grid.gif            the run's newest sample grid, when it has one
    eval.json           the run's evaluation report (`vidiff eval --out RUN/eval.json`), when it has one,
                        local paths cut to their last part

Nothing published names a folder of the machine that trained the model: the data source, the image
source, a distilled model's teacher and a local text encoder folder appear by their last part
("/home/me/data/ucf101" → "ucf101"), and so do the absolute paths in the evaluation report.

It goes up as one commit of `huggingface_hub` (vidiff.hub.download.upload_folder).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from vidiff.checkpoint import load_config, load_json, load_weights, read_checkpoint
from vidiff.config import Config
from vidiff.errors import PublishError, VidiffError
from vidiff.hub.card import EVAL_METRICS, RunFacts, model_card
from vidiff.hub.download import PREFIX, parse_reference, upload_folder
from vidiff.io.files import atomic_write, read_metrics

PUBLISHED = ("README.md", "config.json", "model.safetensors", "grid.gif", "eval.json")


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
    from vidiff.nn.unet import UNet3D

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
