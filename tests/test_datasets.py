"""The paper's datasets as they are published (BAIR TFRecords, UCF-101 with its split lists, Kinetics'
CSV and downloaded clips), written here in their exact layouts, prepared into shards by `vidiff prepare
--format`, and checked pixel for pixel against what was written."""

import csv
import io
import json
import struct

import av
import numpy as np
import pytest

from vidiff.cli import main
from vidiff.data import DataError, ShardDataset
from vidiff.data.tfrecord import parse_features, read_records


# ---- writing the published layouts ---------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def sequence_example(context: dict) -> bytes:
    """A tf.train.SequenceExample whose context holds `context` ({name: bytes | list of floats})."""
    entries = b""
    for name, value in context.items():
        if isinstance(value, bytes):
            feature = _len_field(1, _len_field(1, value))  # bytes_list { value }
        else:
            feature = _len_field(2, _len_field(1, struct.pack(f"<{len(value)}f", *value)))  # float_list, packed
        entries += _len_field(1, _len_field(1, name.encode()) + _len_field(2, feature))
    return _len_field(1, entries) + _len_field(2, b"")  # context, empty feature_lists


def write_tfrecords(path, records) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter  # TFRecord framing, masked CRC32C

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        for record in records:
            writer.write(record)


def bair_trajectory(rng) -> tuple[bytes, dict]:
    frames = {cam: rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8) for cam in ("aux1", "main")}
    context = {}
    for t in range(30):
        context[f"{t}/action"] = rng.normal(size=4).tolist()
        context[f"{t}/endeffector_pos"] = rng.normal(size=3).tolist()
        for cam in ("aux1", "main"):
            context[f"{t}/image_{cam}/encoded"] = frames[cam][t].tobytes()
    return sequence_example(context), frames


@pytest.fixture(scope="module")
def bair(tmp_path_factory):
    """softmotion30_44k/{train,test}/traj_A_to_B.tfrecords: 3 + 2 training and 2 test trajectories."""
    root = tmp_path_factory.mktemp("bair")
    rng = np.random.default_rng(0)
    frames = {"train": [], "test": []}
    for split, files in (("train", [(3, 4), (0, 2)]), ("test", [(0, 1)])):  # written out of order
        for a, b in files:
            made = [bair_trajectory(rng) for _ in range(a, b + 1)]
            write_tfrecords(root / "softmotion30_44k" / split / f"traj_{a}_to_{b}.tfrecords", [r for r, _ in made])
            frames[split].append((a, [f for _, f in made]))
    ordered = {split: [f for _, fs in sorted(v, key=lambda x: x[0]) for f in fs] for split, v in frames.items()}
    return root, ordered


def trains_on(shards, frames: int, size: int, run) -> bool:
    """`vidiff train --data SHARDS` runs a step on them."""
    return (
        main(
            [
                "train",
                "--preset",
                "cpu-tiny",
                "--data",
                str(shards),
                "--set",
                f"data.frames={frames}",
                "--set",
                f"data.size={size}",
                "--set",
                "train.batch_size=2",
                "--set",
                "train.num_samples=0",
                "--steps",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )


def clip_of(ds: ShardDataset, i: int) -> tuple:
    members = ds.raw(i)
    return np.load(io.BytesIO(members["npy"])), json.loads(members["json"])


def write_lossless(path, frames: np.ndarray, fps: int = 4) -> None:
    """A video file whose decoded frames are exactly `frames` (f h w c uint8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec, pix = ("ffv1", "bgr0") if path.suffix == ".avi" else ("libx264rgb", "rgb24")
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix
        if codec == "libx264rgb":
            s.options = {"qp": "0"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# ---- BAIR ------------------------------------------------------------------------------------------
def test_tfrecord_reader_checks_both_checksums(bair, tmp_path):
    root, _ = bair
    path = root / "softmotion30_44k" / "test" / "traj_0_to_1.tfrecords"
    records = list(read_records(path))
    assert len(records) == 2 and len(parse_features(records[0])["0/action"]) == 4
    for where, what in (
        (100, "record 0: the record fails its checksum"),
        (len(path.read_bytes()) - 3, "record 1: the record fails its checksum"),
        (2, "record 0: the record's length fails its checksum"),
    ):
        data = bytearray(path.read_bytes())
        data[where] ^= 1
        (tmp_path / "bad.tfrecords").write_bytes(bytes(data))
        with pytest.raises(DataError, match=rf"bad.tfrecords: {what}"):
            list(read_records(tmp_path / "bad.tfrecords"))


@pytest.mark.parametrize("split,camera", [("train", "aux1"), ("test", "aux1"), ("test", "main")])
def test_prepare_bair_gives_every_trajectory_exactly(bair, tmp_path, capsys, split, camera):
    root, frames = bair
    out = tmp_path / "shards"
    argv = [
        "prepare",
        str(root),
        str(out),
        "--format",
        "bair",
        "--split",
        split,
        "--frames",
        "16",
        "--size",
        "64",
        "--workers",
        "0",
        "--camera",
        camera,
    ]
    assert main(argv) == 0
    assert f"wrote {len(frames[split])} clips of 16×64×64 from {len(frames[split])} videos" in capsys.readouterr().out
    ds = ShardDataset(str(out), 16, 64)
    assert len(ds) == len(frames[split])
    for i, want in enumerate(frames[split]):  # trajectories in the order of their numbers
        clip, meta = clip_of(ds, i)
        assert np.array_equal(clip, want[camera][:16].transpose(3, 0, 1, 2)), i
    index = json.loads((out / "index.json").read_text())
    assert index["dataset"] == {
        "format": "bair",
        "dataset": "bair",
        "split": split,
        "camera": camera,
        "fps": 10.0,
        "missing": 0,
    }


def test_bair_from_tfrecords_to_protocol_fvd(bair, tmp_path, capsys):
    """prepare → train → `vidiff eval --protocol bair`, reduced, resumed where it stopped."""
    root, _ = bair
    shards = {}
    for split in ("train", "test"):
        shards[split] = tmp_path / split
        assert (
            main(
                [
                    "prepare",
                    str(root),
                    str(shards[split]),
                    "--format",
                    "bair",
                    "--split",
                    split,
                    "--frames",
                    "16",
                    "--size",
                    "64",
                    "--workers",
                    "0",
                ]
            )
            == 0
        )
    run = tmp_path / "run"
    assert trains_on(shards["train"], 16, 64, run)
    out = tmp_path / "protocol"
    argv = [
        "eval",
        "--protocol",
        "bair",
        "--checkpoint",
        str(run),
        "--data",
        str(shards["test"]),
        "--out",
        str(out),
        "--num-videos",
        "4",
        "--batch-size",
        "2",
        "--sampler",
        "ddim",
        "--steps",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "bair: FVD" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    s = report["settings"]
    assert report["fvd"] > 0 and "Weissenborn" in s["follows"]
    assert (s["context"], s["predicted_frames"], s["frames"], s["size"], s["samples_per_clip"]) == (1, 15, 16, 64, 100)
    assert (s["num_fake"], s["num_real"], s["reduced"], s["protocol_num_fake"]) == (4, 2, True, 25_600)
    w_r = json.loads((run / "config.json").read_text())["sample"]["reconstruction_weight"]
    assert (s["method"], s["reconstruction_weight"], s["sampler"], s["steps"]) == ("reconstruction", w_r, "ddim", 2)
    parts = sorted((out / "parts").rglob("part_*.npz"))
    assert len(parts) == 2
    parts[1].unlink()  # as if killed after the first part
    kept = parts[0].stat().st_mtime_ns
    assert main(argv) == 0
    assert parts[0].stat().st_mtime_ns == kept and parts[1].is_file()
    assert json.loads((out / "report.json").read_text())["fvd"] == pytest.approx(report["fvd"], rel=1e-6)


# ---- UCF-101 ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    """UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/ with classInd and split 1."""
    root = tmp_path_factory.mktemp("ucf")
    rng = np.random.default_rng(1)
    classes = ["ApplyEyeMakeup", "Basketball", "YoYo"]
    written = {}
    for c in classes:
        for g in (1, 8):
            name = f"{c}/v_{c}_g{g:02d}_c01.avi"
            written[name] = rng.integers(0, 256, (9, 24, 24, 3), dtype=np.uint8)
            write_lossless(root / "UCF-101" / name, written[name])
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)))
    train = [n for n in written if "_g08_" in n]
    (lists / "trainlist01.txt").write_text("".join(f"{n} {classes.index(n.split('/')[0]) + 1}\r\n" for n in train))
    (lists / "testlist01.txt").write_text("".join(f"{n}\r\n" for n in written if n not in train))
    return root, classes, written, train


@pytest.mark.parametrize("split", ["train1", "test1"])
def test_prepare_ucf101_split_with_its_labels(ucf, tmp_path, split):
    root, classes, written, train = ucf
    out = tmp_path / "shards"
    assert (
        main(
            [
                "prepare",
                str(root),
                str(out),
                "--format",
                "ucf101",
                "--split",
                split,
                "--frames",
                "4",
                "--size",
                "24",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    ds = ShardDataset(str(out), 4, 24)
    names = train if split == "train1" else [n for n in written if n not in train]
    assert ds.classes == tuple(classes) and len(ds) == 2 * len(names)  # 9 frames: two clips of 4 each
    for i in range(len(ds)):
        clip, meta = clip_of(ds, i)
        assert meta["file"] in names and meta["label"] == classes.index(meta["file"].split("/")[0])
        want = written[meta["file"]][meta["start"] : meta["start"] + 4]
        assert np.array_equal(clip, want.transpose(3, 0, 1, 2))
    assert trains_on(out, 4, 24, tmp_path / "run")


def test_ucf101_missing_video_is_named(ucf, tmp_path, capsys):
    root, *_ = ucf
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    for f in (root / "ucfTrainTestlist").iterdir():
        (lists / f.name).write_text(f.read_text())
    (lists / "trainlist01.txt").write_text("YoYo/v_YoYo_g25_c01.avi 3\n")
    (tmp_path / "UCF-101").symlink_to(root / "UCF-101")
    argv = [
        "prepare",
        str(tmp_path),
        str(tmp_path / "out"),
        "--format",
        "ucf101",
        "--split",
        "train1",
        "--frames",
        "4",
        "--size",
        "24",
        "--workers",
        "0",
    ]
    assert main(argv) == 2
    assert "v_YoYo_g25_c01.avi" in capsys.readouterr().err


# ---- Kinetics --------------------------------------------------------------------------------------
def test_prepare_kinetics_reads_windows_and_lists_missing(tmp_path, capsys):
    rng = np.random.default_rng(2)
    src = tmp_path / "kinetics"
    rows = [
        ("abseiling", "aaaaaaaaaaa", 10, 20, "train"),
        ("air drumming", "bbbbbbbbbbb", 0, 10, "train"),
        ("abseiling", "ccccccccccc", 1, 3, "train"),
        ("air drumming", "gonegonegon", 5, 15, "train"),
        ("abseiling", "ddddddddddd", 0, 10, "val"),
    ]
    written = {}
    written["aaaaaaaaaaa"] = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    write_lossless(src / "abseiling" / "aaaaaaaaaaa_000010_000020.mp4", written["aaaaaaaaaaa"])
    written["bbbbbbbbbbb"] = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    write_lossless(src / "bbbbbbbbbbb_000000_000010.mp4", written["bbbbbbbbbbb"])  # flat
    written["ccccccccccc"] = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)  # whole video: 4 fps, 5 s
    write_lossless(src / "air_drumming" / "ccccccccccc.mp4", written["ccccccccccc"])
    with open(src / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        w.writerows(rows)
    out = tmp_path / "shards"
    assert (
        main(
            [
                "prepare",
                str(src),
                str(out),
                "--format",
                "kinetics",
                "--split",
                "train",
                "--frames",
                "4",
                "--size",
                "16",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "1 videos of the dataset's list are not in" in said
    assert (out / "missing.txt").read_text() == "gonegonegon_000005_000015\n"
    ds = ShardDataset(str(out), 4, 16)
    assert ds.classes == ("abseiling", "air drumming") and len(ds) == 2 + 1 + 2
    got = {}
    for i in range(len(ds)):
        clip, meta = clip_of(ds, i)
        got.setdefault(meta["file"].split("/")[-1][:11], []).append((meta["start"], clip, meta["label"]))
    assert [s for s, _, _ in got["ccccccccccc"]] == [4, 8]  # seconds 1 to 3 at 4 fps: slots 4 to 11
    for vid, clips in got.items():
        for start, clip, label in clips:
            assert np.array_equal(clip, written[vid][start : start + 4].transpose(3, 0, 1, 2))
            assert label == (0 if vid in ("aaaaaaaaaaa", "ccccccccccc") else 1)
    assert trains_on(out, 4, 16, tmp_path / "run")
