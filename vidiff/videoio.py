"""Reading and writing video files, and tiling videos into a grid.

Two layouts meet here: models work on float ``(c f h w)`` in [-1, 1]; files hold uint8 ``(f h w c)``
RGB frames. Every writer accepts either and tells them apart by dtype. Writes are atomic: the file is
written next to its destination under a temporary name and then renamed over it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
from einops import rearrange
from PIL import Image

from vidiff.data.errors import DataError


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float (c f h w) in [-1, 1] -> uint8 (f h w c); a uint8 (f h w c) video is returned as is."""
    if video.ndim != 4:
        raise ValueError(f"expected a video with 4 dims, got shape {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        if video.shape[-1] not in (1, 3):
            raise ValueError(f"a uint8 video must be (f h w c) with c = 1 or 3, got {tuple(video.shape)}")
        return video.expand(*video.shape[:3], 3) if video.shape[-1] == 1 else video
    if not video.is_floating_point():
        raise ValueError(f"expected a float (c f h w) or uint8 (f h w c) video, got dtype {video.dtype}")
    if video.shape[0] not in (1, 3):
        raise ValueError(f"a float video must be (c f h w) with c = 1 or 3, got {tuple(video.shape)}")
    x = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.expand(3, *x.shape[1:])
    return rearrange(x, "c f h w -> f h w c").contiguous()


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """Decode a video file (any container/codec FFmpeg reads) to uint8 RGB frames (f h w c)."""
    path = Path(path)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream in this file; is it really a video?")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.FFmpegError, OSError) as e:
        raise DataError(f"{path}: cannot decode this video ({e}); the file may be corrupt or truncated") from e
    if not frames:
        raise DataError(f"{path}: the video has no frames")
    return torch.from_numpy(np.stack(frames))  # (f, h, w, c)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_mp4(path: str | os.PathLike, video: torch.Tensor, fps: int = 8, crf: int = 18) -> None:
    """Write an H.264 (libx264, yuv420p) MP4; odd frame sizes are padded to even by edge repetition."""
    frames = to_uint8(video).numpy()  # (f, h, w, c)
    f, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")

    def write(tmp: str) -> None:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())

    _atomic_write(Path(path), write)


def write_gif(path: str | os.PathLike, video: torch.Tensor, fps: int = 8) -> None:
    """Write a looping GIF with Pillow.

    Pillow merges consecutive identical frames into one longer frame, so the timing is kept but a
    GIF read back may have fewer frames than were written.
    """
    frames = [Image.fromarray(frame) for frame in to_uint8(video).numpy()]  # f x (h, w, c)

    def write(tmp: str) -> None:
        frames[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=max(1, round(1000 / fps)),
            loop=0,
        )

    _atomic_write(Path(path), write)


def save_video(path: str | os.PathLike, video: torch.Tensor, fps: int = 8) -> None:
    """Write ``video`` as MP4 or GIF, chosen by the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        write_mp4(path, video, fps=fps)
    elif suffix == ".gif":
        write_gif(path, video, fps=fps)
    else:
        raise ValueError(f"save_video: cannot write {path!s}; use a .mp4 or .gif file name")


def make_grid(videos: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """Tile videos (b c f h w) into one video (c f H W), ``nrow`` videos per row, with a border."""
    if videos.ndim != 5:
        raise ValueError(f"make_grid expects (b c f h w) videos, got shape {tuple(videos.shape)}")
    b, c, f, h, w = videos.shape
    if b == 0 or nrow < 1:
        raise ValueError(f"make_grid needs at least one video and nrow >= 1, got {b} videos and nrow={nrow}")
    ncol = min(nrow, b)
    nrows = -(-b // ncol)
    grid = videos.new_full((c, f, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(b):
        y = padding + (i // ncol) * (h + padding)
        x = padding + (i % ncol) * (w + padding)
        grid[:, :, y : y + h, x : x + w] = videos[i]
    return grid


def write_filmstrip(path: str | os.PathLike, videos: torch.Tensor, min_frame_size: int = 48, padding: int = 2) -> None:
    """Write a PNG with one row per video (b c f h w) and one column per frame, enlarged with nearest
    neighbours so that each frame is at least ``min_frame_size`` px: every frame at a glance."""
    if videos.ndim != 5:
        raise ValueError(f"write_filmstrip expects (b c f h w) videos, got shape {tuple(videos.shape)}")
    b, c, f, h, w = videos.shape
    k = max(1, -(-min_frame_size // min(h, w)))
    frames = rearrange(videos.detach().float().cpu(), "b c f h w -> (b f) c h w")
    frames = torch.nn.functional.interpolate(frames, scale_factor=k, mode="nearest")
    grid = make_grid(rearrange(frames, "(b f) c h w -> (b f) c 1 h w", b=b), nrow=f, padding=padding)
    image = Image.fromarray(to_uint8(grid)[0].numpy())
    _atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))
