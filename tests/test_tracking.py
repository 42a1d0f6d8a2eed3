"""Experiment tracking: train.logger sends scalars, the configuration, sample videos and FVD to
TensorBoard and to Weights & Biases (offline: real run files, no network); a resumed run continues
the same W&B run."""

import hashlib
import json
import sys
import time

import conftest
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vidiff.config import ConfigError
from vidiff.train import train
from vidiff.train.tracking import WANDB_RUN_FILE

TINY = conftest.TINY.override(["train.log_every=1"])  # every step logged
pytestmark = pytest.mark.usefixtures("tensorboard_on")  # these tests read what TensorBoard wrote


def test_logger_values_are_checked():
    assert TINY.train.logger == "tensorboard"
    for kind in ("wandb", "both", "none"):
        assert TINY.override([f"train.logger={kind}"]).train.logger == kind
    with pytest.raises(ConfigError, match="train.logger must be one of tensorboard, wandb, both, none, got 'mlflow'"):
        TINY.override(["train.logger=mlflow"])


@pytest.fixture
def fresh_wandb():
    """wandb keeps its settings (mode, directories) in a process-wide singleton: a fresh one per test."""
    wandb = pytest.importorskip("wandb")
    wandb.teardown()
    yield wandb
    wandb.teardown()


def test_wandb_without_a_login_says_what_to_do(tmp_path, monkeypatch, fresh_wandb):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name, value in [
        ("HOME", str(tmp_path)),
        ("WANDB_MODE", "online"),
        ("WANDB_CONFIG_DIR", str(tmp_path / "c")),
        ("WANDB_CACHE_DIR", str(tmp_path / "cache")),
        ("NETRC", str(tmp_path / "netrc")),
    ]:
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="could not start a run: .*API key.*WANDB_MODE=offline"):
        train(TINY.override(["train.logger=wandb", "train.num_samples=0"]), tmp_path / "run", progress=False)


def test_wandb_missing_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    with pytest.raises(ConfigError, match=r'needs the wandb package: pip install "vidiff\[wandb\]"'):
        train(TINY.override(["train.logger=wandb"]), tmp_path / "run", progress=False)


def test_tensorboard_logs_scalars_config_and_samples(tmp_path):
    run = tmp_path / "run"
    train(TINY, run, progress=False)
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "tensors": 0}).Reload()
    assert {"train/loss", "train/lr", "train/grad_norm"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert acc.Tags()["images"] and "config/text_summary" in acc.Tags()["tensors"]
    none = tmp_path / "none"
    train(TINY.override(["train.logger=none"]), none, progress=False)
    assert not (none / "tb").exists() and (none / "metrics.jsonl").is_file()


def wandb_records(path):
    """The records of a W&B run file (.wandb: a 7-byte header, then a LevelDB log of protobuf records
    in 32 KiB blocks, each piece with a 7-byte header: crc32, length, kind 1-4 full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, piece, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if block - pos % block < 7 or kind == 0:  # a block's tail too short for a header, or zeros: padding
            pos += block - pos % block
            continue
        piece += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(piece)
            records.append(record)
            piece = b""
    return records


def finished_records(path, timeout: float = 60.0) -> list:
    """The records of a finished W&B run file. wandb's service may still be writing it when `finish()`
    has returned (offline mode): wait for its exit record."""
    deadline = time.time() + timeout
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def history(records) -> list:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def test_wandb_offline_run_resumes_into_the_same_run(tmp_path, monkeypatch, fresh_wandb):
    for name, value in [
        ("WANDB_MODE", "offline"),
        ("WANDB_SILENT", "true"),
        ("WANDB_DIR", str(tmp_path)),
        ("WANDB_CACHE_DIR", str(tmp_path / "cache")),
        ("WANDB_CONFIG_DIR", str(tmp_path / "config")),
        ("WANDB_DATA_DIR", str(tmp_path / "data")),
        ("WANDB_PROJECT", "vidiff-tests"),
    ]:
        monkeypatch.setenv(name, value)
    run = tmp_path / "run"
    cfg = TINY.override(["train.logger=both", "train.fvd_every=2", "train.fvd_num=2"])
    monkeypatch.setattr("vidiff.train.loop.PeriodicFVD.__call__", lambda self, model: 123.5)  # no I3D download
    train(cfg, run, progress=False)
    run_id = json.loads((run / WANDB_RUN_FILE).read_text())["id"]
    train(cfg.override(["train.steps=4", "train.lr=5e-4"]), run, resume=True, progress=False)
    assert json.loads((run / WANDB_RUN_FILE).read_text())["id"] == run_id
    first, second = sorted((run / "wandb").glob("offline-run-*"))
    assert first.name.endswith(run_id) and second.name.endswith(run_id)
    assert (run / "tb").is_dir()  # "both": TensorBoard too

    records = [finished_records(d / f"run-{run_id}.wandb") for d in (first, second)]
    kinds = [[r.WhichOneof("record_type") for r in recs] for recs in records]
    for recs in records:
        assert [r.WhichOneof("record_type") for r in recs].count("run") == 1, kinds
        (start,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        assert start.run_id == run_id and start.project == "vidiff-tests" and start.display_name == "run"
    rows = history(records[0]) + history(records[1])
    loss_steps = [row["step"] for row in rows if "train/loss" in row]
    assert loss_steps == [1, 2, 3, 4]
    assert all({"train/lr", "train/grad_norm"} <= set(row) for row in rows if "train/loss" in row)
    assert [row["eval/fvd"] for row in rows if "eval/fvd" in row] == [123.5, 123.5]
    videos = [row for row in rows if "samples/_type" in row]
    assert [(v["step"], v["samples/_type"]) for v in videos] == [(2, "video-file"), (4, "video-file")]
    for v in videos:  # the sample grid written at that step, as a file of the run
        gif = run / "samples" / f"step_{v['step']:07d}.gif"
        assert v["samples/sha256"] == hashlib.sha256(gif.read_bytes()).hexdigest()
        assert any((d / "files" / v["samples/path"]).is_file() for d in (first, second))
    configs = [
        {item.key: json.loads(item.value_json) for item in start.run.config.update}
        for recs in records
        for start in recs
        if start.WhichOneof("record_type") == "run"
    ]
    assert configs[0]["model"] == json.loads(cfg.to_json())["model"]
    assert configs[0]["data"]["source"] == "builtin:moving-shapes"
    assert (configs[0]["train"]["lr"], configs[1]["train"]["lr"]) == (1e-3, 5e-4)  # the resumed run's settings
    assert (configs[0]["train"]["steps"], configs[1]["train"]["steps"]) == (2, 4)
