"""Tests for vidiff.io.files (atomic writes, finding files) and vidiff.io.video.read_video."""

import os
import stat

import pytest
import torch

from vidiff.errors import DataError
from vidiff.io import files
from vidiff.io.files import VIDEO_EXTENSIONS, atomic_write, find_files, find_videos
from vidiff.io.video import read_video, write_filmstrip, write_gif, write_mp4


@pytest.fixture
def umask_022():
    """Run the test under umask 022, the usual one, whatever the test runner's umask is."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def ramp_video(frames: int = 10, size: int = 16) -> torch.Tensor:
    """uint8 (f h w c) whose frame i is a flat grey of value 20 * i, so frames can be told apart."""
    values = torch.arange(frames, dtype=torch.uint8) * 20
    return values.view(frames, 1, 1, 1).expand(frames, size, size, 3).contiguous()


# ---------------------------------------------------------------- atomic_write


def write_text_at(tmp: str) -> None:
    with open(tmp, "w") as f:
        f.write("from a callable\n")


@pytest.mark.parametrize("content", [b"bytes\n", "text ✓\n", write_text_at])
def test_atomic_write_mode_644(tmp_path, umask_022, content):
    path = atomic_write(tmp_path / "sub" / "out.txt", content)
    assert path == tmp_path / "sub" / "out.txt"
    assert mode(path) == 0o644
    assert path.read_text().endswith("\n")
    assert os.listdir(path.parent) == ["out.txt"]  # no temporary file left


def test_atomic_write_replaces_and_cleans_up_on_error(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, "old")

    def fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"  # the reader still sees the whole old file
    assert os.listdir(tmp_path) == ["out.txt"]
    atomic_write(path, b"new")
    assert path.read_text() == "new"


def test_video_writers_mode_644(tmp_path, umask_022):
    video = ramp_video(6)
    write_mp4(tmp_path / "a.mp4", video)
    write_gif(tmp_path / "a.gif", video)
    write_filmstrip(tmp_path / "a.png", torch.rand(2, 3, 4, 8, 8) * 2 - 1)
    for name in ("a.mp4", "a.gif", "a.png"):
        assert mode(tmp_path / name) == 0o644, name
    assert sorted(os.listdir(tmp_path)) == ["a.gif", "a.mp4", "a.png"]


# ---------------------------------------------------------------- find_videos


def test_find_videos_nested_m4v_hidden_and_loops(tmp_path):
    for rel in ("b.m4v", "a/x.MP4", "a/y.webm", "a-c.gif", ".hidden.mp4", ".cache/z.mp4", "notes.txt", "a/im.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    found = find_videos(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a-c.gif", "a/x.MP4", "a/y.webm", "b.m4v"]
    assert all(p.parent == tmp_path or p.parent.parent == tmp_path for p in found)  # root / relative path
    assert ".m4v" in VIDEO_EXTENSIONS
    assert [p.name for p in find_files(tmp_path, (".png",))] == ["im.png"]


def test_find_videos_follows_symlinked_folders(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "v.mp4").write_bytes(b"")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert find_videos(tmp_path / "root") == [tmp_path / "root" / "linked" / "v.mp4"]


def test_find_videos_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        find_videos(tmp_path / "nowhere")
    (tmp_path / "file.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="file.mp4: is a file"):
        find_videos(tmp_path / "file.mp4")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"empty: no video files found .*\.m4v.*put videos there"):
        find_videos(tmp_path / "empty")
    assert find_videos(tmp_path / "empty", allow_empty=True) == []


# ---------------------------------------------------------------- read_video


def test_read_video_missing_and_garbage(tmp_path):
    with pytest.raises(DataError, match="missing.mp4: not found") as info:
        read_video(tmp_path / "missing.mp4")
    assert "corrupt" not in str(info.value)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DataError, match="garbage.mp4: cannot be read as a video"):
        read_video(garbage)


def test_read_video_max_frames_and_stride(tmp_path):
    write_mp4(tmp_path / "ramp.mp4", ramp_video(10))
    every = read_video(tmp_path / "ramp.mp4")
    assert every.shape == (10, 16, 16, 3) and every.dtype == torch.uint8
    levels = every[:, 8, 8, 0].int()
    assert (levels - torch.arange(10) * 20).abs().max() <= 3  # lossy, but each frame keeps its grey
    assert torch.equal(read_video(tmp_path / "ramp.mp4", max_frames=4), every[:4])
    assert torch.equal(read_video(tmp_path / "ramp.mp4", frame_stride=3), every[::3])
    assert torch.equal(read_video(tmp_path / "ramp.mp4", max_frames=2, frame_stride=4), every[[0, 4]])
    assert len(read_video(tmp_path / "ramp.mp4", max_frames=50)) == 10  # a short video gives what it has
    with pytest.raises(ValueError, match="frame_stride"):
        read_video(tmp_path / "ramp.mp4", frame_stride=0)


def test_read_video_takes_frames_by_presentation_time(tmp_path):
    """As training reads clips: a GIF that stores a held frame once (Pillow merges repeats into one
    longer frame) reads back with every frame that was written."""
    from vidiff.io.video import read_video, write_gif

    colours = torch.tensor([-1.0, 1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0])  # frames 2–4 identical
    video = colours[None, :, None, None].expand(3, 8, 8, 8).clone()
    video[0, :, :4] = -1  # some structure, so frames are not all flat
    write_gif(tmp_path / "held.gif", video, fps=8)
    frames = read_video(tmp_path / "held.gif")
    assert frames.shape == (8, 8, 8, 3)
    assert torch.equal(frames[2], frames[4]) and not torch.equal(frames[1], frames[2])
    assert read_video(tmp_path / "held.gif", max_frames=3, frame_stride=2).shape[0] == 3


def test_vidiff_cache_moves_every_cache(tmp_path, monkeypatch):
    from vidiff import hub
    from vidiff.data import shards
    from vidiff.metrics import i3d

    monkeypatch.setenv("VIDIFF_CACHE", str(tmp_path))
    monkeypatch.delenv("VIDIFF_SHARD_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert files.cache_dir() == i3d.cache_dir() == tmp_path  # converted I3D weights
    assert files.cache_dir("eval") == tmp_path / "eval"
    assert shards._cache_path("https://x/a-000.tar", None).parent == tmp_path / "shards"
    assert hub.hub_cache_dir() == str(tmp_path / "hub")
    # the specific overrides still win
    monkeypatch.setenv("VIDIFF_SHARD_CACHE", str(tmp_path / "s"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert shards._cache_path("https://x/a-000.tar", None).parent == tmp_path / "s"
    assert hub.hub_cache_dir() is None  # huggingface_hub reads HF_HUB_CACHE itself
    monkeypatch.delenv("VIDIFF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.cache_dir("eval") == tmp_path / "home" / ".cache" / "vidiff" / "eval"
