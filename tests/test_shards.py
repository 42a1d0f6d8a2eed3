"""Prepared shards (vidiff prepare, vidiff.data.shards) and the loader's workers, split and resume."""

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import torchrun
from test_data import make_bad, write_video

from vidiff.cli import main
from vidiff.data import DataError, ShardDataset, VideoFolder, build_dataset
from vidiff.data.prepare import parse_bytes, prepare_shards
from vidiff.data.shards import expand_braces, trust_command
from vidiff.train.loader import EpochBatchSampler, build_loader, num_workers

FRAMES, SIZE = 4, 16


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three labelled videos (class sub-folders) of 20, 13 and 9 frames: 5 + 3 + 2 clips of 4 frames."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "cats" / "a.mp4", n=20, h=36, w=52)
    write_video(root / "cats" / "b.mp4", n=13, h=24, w=24, gop=4)
    write_video(root / "dogs" / "c.mp4", n=9, h=40, w=30)
    return root


@pytest.fixture(scope="module")
def shards(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "prepared"
    summary = prepare_shards(videos, out, FRAMES, SIZE, shard_bytes=4 * 3100, progress=False)  # ~4 clips a shard
    return out, summary


def test_prepare_writes_every_clip_once_in_several_shards(shards):
    out, summary = shards
    assert summary["clips"] == 10 and summary["videos"] == 3 and summary["skipped"] == []
    index = json.loads((out / "index.json").read_text())
    assert summary["shards"] == len(index["shards"]) == len(list(out.glob("shards-*.tar"))) >= 3
    assert summary["bytes"] == sum(p.stat().st_size for p in out.glob("*.tar"))
    assert index["classes"] == ["cats", "dogs"] and index["frames"] == FRAMES and index["size"] == [SIZE, SIZE]
    assert not list(out.glob(".*partial"))


def test_shards_are_readable_by_webdataset(shards):
    wds = pytest.importorskip("webdataset")
    out, _ = shards
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(10)]
    assert all(s["npy"].shape == (3, FRAMES, SIZE, SIZE) and s["npy"].dtype == np.uint8 for s in samples)
    assert [s["cls"] for s in samples] == [0] * 8 + [1] * 2
    assert [(s["json"]["file"], s["json"]["start"]) for s in samples[:6]] == [
        ("cats/a.mp4", 0),
        ("cats/a.mp4", 4),
        ("cats/a.mp4", 8),
        ("cats/a.mp4", 12),
        ("cats/a.mp4", 16),
        ("cats/b.mp4", 0),
    ]


def test_shard_clips_are_the_folder_clips(videos, shards):
    """A prepared clip is what training on the folder reads for that file and start, bit for bit."""
    out, _ = shards
    folder = VideoFolder(videos, FRAMES, SIZE)
    ds = build_dataset(str(out), frames=FRAMES, size=SIZE)
    assert isinstance(ds, ShardDataset) and len(ds) == 10 and ds.num_classes == 2
    for i, (file, start) in enumerate([("cats/a.mp4", 12), ("cats/b.mp4", 8), ("dogs/c.mp4", 4)]):
        index = [3, 7, 9][i]
        want = folder.get_clip(folder.files.index(file), start)
        got = ds[index]
        assert torch.equal(got["video"], want["video"]) and got["label"] == want["label"]


def test_shards_by_pattern_index_and_pipe(shards, tmp_path):
    out, summary = shards
    base = build_dataset(str(out), frames=FRAMES, size=SIZE)
    last = summary["shards"] - 1
    pattern = build_dataset(f"{out}/shards-{{000000..{last:06d}}}.tar", frames=FRAMES, size=SIZE)
    by_index = build_dataset(str(out / "index.json"), frames=FRAMES, size=SIZE)
    two = build_dataset(f"{out}/shards-{{000000..000001}}.tar", frames=FRAMES, size=SIZE)
    assert len(pattern) == len(by_index) == 10 and len(two) < 10
    for i in range(10):
        want = base[i]["video"]
        assert torch.equal(pattern[i]["video"], want) and torch.equal(by_index[i]["video"], want)
    pytest.importorskip("webdataset")
    command = f"pipe:cat {out}/shards-{{000000..{last:06d}}}.tar"
    with pytest.raises(DataError, match="runs a shell command.*--data"):  # not named by the person running it
        build_dataset(command, frames=FRAMES, size=SIZE, cache_dir=str(tmp_path / "cache"))
    trust_command(command)
    piped = build_dataset(command, frames=FRAMES, size=SIZE, cache_dir=str(tmp_path / "cache"))
    assert all(torch.equal(piped[i]["video"], base[i]["video"]) for i in range(10))
    assert len(list((tmp_path / "cache").iterdir())) == summary["shards"]


def test_shards_wrong_shape_or_missing_index(shards, tmp_path):
    out, _ = shards
    with pytest.raises(DataError, match="4 frames of 16×16.*data.frames=4"):
        build_dataset(str(out), frames=8, size=SIZE)
    (tmp_path / "x.tar").write_bytes(b"")
    with pytest.raises(DataError, match="no readable shard index.*vidiff prepare"):
        build_dataset(str(tmp_path / "x.tar"), frames=FRAMES, size=SIZE)


def keys(ds, batch, seed, start, steps, rank=0, world=1):
    return list(itertools.islice(EpochBatchSampler(ds, batch, seed, start, rank, world), steps))


def test_two_ranks_see_every_clip_once_an_epoch(shards):
    ds = build_dataset(str(shards[0]), frames=FRAMES, size=SIZE)
    for epoch in range(3):
        seen = [i for r in range(2) for i in ds.epoch_order(0, epoch, r, 2)]
        assert sorted(seen) == list(range(10))
    # through the sampler, a global batch of 4 (2 a rank): 5 clips a rank an epoch, epochs back to back
    per_rank = [[i for b in keys(ds, 4, 0, 0, 5, r, 2) for i, _ in b] for r in range(2)]
    assert sorted(per_rank[0][:5] + per_rank[1][:5]) == list(range(10))
    assert sorted(per_rank[0][5:] + per_rank[1][5:]) == list(range(10))
    assert per_rank[0][:5] != per_rank[0][5:]  # shuffled again each epoch
    assert keys(ds, 4, 1, 0, 3, 0, 2) != keys(ds, 4, 0, 0, 3, 0, 2)


def test_loader_workers_do_not_change_the_batches(shards):
    """Two ranks × two workers: each rank's batches equal the items of its keys, one by one."""
    ds = build_dataset(str(shards[0]), frames=FRAMES, size=SIZE, flip=True)
    for rank in range(2):
        loader = build_loader(ds, 4, 0, 0, rank, 2, workers=2)
        for batch, key in zip(itertools.islice(loader, 6), keys(ds, 4, 0, 0, 6, rank, 2)):
            want = torch.stack([ds.item(i, torch.Generator().manual_seed(s))["video"] for i, s in key])
            assert torch.equal(batch["video"], want)


@pytest.mark.parametrize("source", ["shards", "folder"])
def test_batch_at_a_step_is_the_same_with_workers_and_after_resume(shards, videos, source):
    ds = build_dataset(str(shards[0]) if source == "shards" else str(videos), frames=FRAMES, size=SIZE, flip=True)
    runs = {w: list(itertools.islice(build_loader(ds, 4, 3, 0, 0, 1, workers=w), 4)) for w in (0, 2)}
    resumed = {w: next(iter(build_loader(ds, 4, 3, 3, 0, 1, workers=w))) for w in (0, 2)}  # from step 3
    for w in (0, 2):
        for a, b in zip(runs[0], runs[w]):
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
        assert torch.equal(resumed[w]["video"], runs[0][3]["video"])


def test_prepare_bad_video_one_error_or_skipped(videos, tmp_path):
    src = tmp_path / "src"
    write_video(src / "good.mp4", n=8)
    bad = make_bad("corrupt", src)
    with pytest.raises(DataError, match=f"{bad.name}.*corrupt"):
        prepare_shards(src, tmp_path / "out", FRAMES, SIZE, progress=False)
    assert not (tmp_path / "out" / "index.json").exists()
    summary = prepare_shards(src, tmp_path / "out2", FRAMES, SIZE, skip_errors=True, progress=False)
    assert summary["skipped"] == [bad.name] and summary["clips"] == 2


def test_prepare_cli(videos, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["prepare", str(videos), str(out), "--frames", "4", "--size", "16", "--workers", "0"]) == 0
    said = capsys.readouterr().out
    assert "wrote 10 clips of 4×16×16 from 3 videos into 1 shard" in said and f"--data {out}" in said
    assert main(["prepare", str(videos), str(out), "--frames", "4", "--size", "16"]) == 2
    assert "already holds prepared shards" in capsys.readouterr().err
    assert (
        main(["prepare", str(videos), str(tmp_path / "o"), "--frames", "4", "--size", "16", "--shard-size", "big"]) == 2
    )


def test_parse_bytes_and_braces():
    assert parse_bytes("1GB") == 10**9 and parse_bytes("64MiB") == 64 * 2**20 and parse_bytes("500k") == 500_000
    assert expand_braces("s-{08..10}.tar") == ["s-08.tar", "s-09.tar", "s-10.tar"]
    assert expand_braces("{a,b}/{0..1}") == ["a/0", "a/1", "b/0", "b/1"]


def test_auto_workers(shards, videos):
    from vidiff.data import MovingShapes

    prepared = build_dataset(str(shards[0]), frames=FRAMES, size=SIZE)
    assert num_workers("auto", prepared)[0] == 0  # cheap items, CPU training
    assert num_workers("auto", prepared, device="cuda")[0] == num_workers("auto", VideoFolder(videos, 4, 16))[0]
    assert num_workers("3", MovingShapes(num_videos=4, frames=4, size=16))[0] == 3
    n, why = num_workers("auto", VideoFolder(videos, FRAMES, SIZE))
    assert 0 <= n <= 8 and "core" in why


@pytest.mark.slow
def test_training_on_shards_resumes_exactly(shards, tmp_path):
    from test_train import TINY, losses

    from vidiff.train import train

    cfg = TINY.override([f"data.source={shards[0]}", "data.num_workers=0"])
    train(cfg, tmp_path / "full", progress=False)
    train(cfg.override(["train.steps=3"]), tmp_path / "split", progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "full") == losses(tmp_path / "split")
    assert len(set(losses(tmp_path / "full"))) == 6


DDP_EPOCH = """
import hashlib, json, sys
import torch.distributed as dist
from vidiff import spread
from vidiff.data import build_dataset
from vidiff.train.loader import build_loader
spread.init(spread.local_device())
ds = build_dataset(sys.argv[1], frames=4, size=16)
loader = build_loader(ds, 4, 0, 0, spread.rank(), spread.world(), workers=2)  # global batch 4: 2 clips a process
seen = [hashlib.sha256(v.numpy().tobytes()).hexdigest() for b, _ in zip(loader, range(5)) for v in b["video"]]
everyone = [None, None]
dist.all_gather_object(everyone, seen)
if spread.rank() == 0:
    json.dump(everyone, open(sys.argv[2], "w"))
spread.finish()
"""


def test_two_processes_with_workers_see_every_clip_once_an_epoch(shards, tmp_path):
    """A real 2-process run (torchrun, gloo), 2 loader workers each: every epoch's 10 clips, each once."""

    script = tmp_path / "epoch.py"
    script.write_text(DDP_EPOCH)
    run = torchrun(str(script), str(shards[0]), str(tmp_path / "seen.json"), port=29571)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    ds = build_dataset(str(shards[0]), frames=FRAMES, size=SIZE)
    import hashlib

    every = sorted(
        hashlib.sha256(ds.item(i, torch.Generator().manual_seed(0))["video"].numpy().tobytes()).hexdigest()
        for i in range(len(ds))
    )
    assert len(seen[0]) == len(seen[1]) == 10  # 5 steps of 2 clips a process: two epochs of 10 clips
    assert sorted(seen[0][:5] + seen[1][:5]) == every and sorted(seen[0][5:] + seen[1][5:]) == every


def test_periodic_fvd_on_short_shards_is_refused_at_start(shards, tmp_path):
    from vidiff.config import ConfigError
    from vidiff.presets import get_preset
    from vidiff.train import train

    cfg = get_preset("cpu-tiny").override([f"data.source={shards[0]}", "train.fvd_every=2", "train.num_samples=0"])
    with pytest.raises(ConfigError, match="at least 9 frames"):
        train(cfg, tmp_path / "run", progress=False)


def test_prepare_failing_midway_leaves_no_partial_shard(tmp_path, monkeypatch):
    """A video that probes but fails to decode stops the run after other videos' clips were written:
    no index, and the shard that was being written is removed, not left half-written."""
    import vidiff.data.listing as listing

    src = tmp_path / "src"
    for name in ("a.mp4", "b.mp4"):
        write_video(src / name, n=8)
    decode = listing.video_clips

    def failing(info, frames, size, slots=None):
        if Path(info.path).name == "b.mp4":
            raise DataError(f"{info.path}: cannot be decoded")
        return decode(info, frames, size, slots)

    monkeypatch.setattr(listing, "video_clips", failing)
    with pytest.raises(DataError, match="b.mp4: cannot be decoded"):
        prepare_shards(src, tmp_path / "out", FRAMES, SIZE, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_shard_files_stay_open_only_up_to_the_limit(shards):
    """Reading many shards keeps at most max_open_shards files open (least recently read closed first),
    and the clips read the same; close() closes the rest."""
    out, _ = shards
    every = ShardDataset(str(out), FRAMES, SIZE)
    want = [every[i]["video"] for i in range(len(every))]
    ds = ShardDataset(str(out), FRAMES, SIZE)
    ds.max_open_shards = 2
    order = [0, 9, 4, 0, 5, 9, 1, 8]  # first, last and a middle shard, back and forth
    for i in order:
        assert torch.equal(ds[i]["video"], want[i])
        assert len(ds._fds) <= 2
    assert list(ds._fds) == [ds.locate(1)[0], ds.locate(8)[0]]  # the two shards read last
    fds = list(ds._fds.values())
    ds.close()
    assert not ds._fds
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    every.close()


@pytest.mark.parametrize("damage", ["npy header", "tar header", "json"])
def test_damaged_sample_in_a_shard_one_error_or_skipped(shards, tmp_path, damage, caplog):
    out = tmp_path / "prepared"
    shutil.copytree(shards[0], out)
    index = json.loads((out / "index.json").read_text())
    first = index["shards"][0]
    start = first["offsets"][1]  # the second sample of the first shard: key.npy first, then key.json
    data = bytearray((out / first["name"]).read_bytes())
    key = data[start : start + 9].decode()
    npy_size = int(data[start + 124 : start + 136].strip(b" \0"), 8)
    json_at = start + 512 + -(-npy_size // 512) * 512 + 512
    where = {"npy header": start + 512 + 1, "tar header": start + 130, "json": json_at}[damage]
    data[where : where + 3] = b"\xff{\x00"
    (out / first["name"]).write_bytes(bytes(data))
    ds = build_dataset(str(out), frames=FRAMES, size=SIZE)
    assert torch.equal(ds[0]["video"], build_dataset(str(shards[0]), frames=FRAMES, size=SIZE)[0]["video"])
    with pytest.raises(DataError, match=rf"{first['name']}: sample '{key}' .* is damaged .*--skip-bad-files"):
        ds[1]
    skipping = build_dataset(str(out), frames=FRAMES, size=SIZE, skip_bad_files=True)
    with caplog.at_level("WARNING", logger="vidiff.data"):
        got = skipping[1]["video"]
    assert torch.equal(got, ds[2]["video"]) and skipping.skipped_bad == 1
    assert "skipping a damaged clip (1 so far" in caplog.text


def test_index_naming_a_path_or_a_command_is_refused(shards, tmp_path):
    out = tmp_path / "prepared"
    shutil.copytree(shards[0], out)
    index = json.loads((out / "index.json").read_text())
    for name in ("../../etc/passwd.tar", "pipe:touch pwned; echo x.tar", "\\1.tar"):
        index["shards"][0]["name"] = name
        (out / "index.json").write_text(json.dumps(index))
        with pytest.raises(DataError, match="not a plain file name"):
            build_dataset(str(out), frames=FRAMES, size=SIZE)
