"""Reading and writing video files, and tiling videos into a grid.

Two layouts meet here: models work on float ``(c f h w)`` in [-1, 1]; files hold uint8 ``(f h w c)``
RGB frames. Every writer accepts either and tells them apart by dtype. Writes go through
:func:`vidiff.io.files.atomic_write`, so a reader never sees half a file; the temporary name it writes to
does not end in the real suffix, so every writer names its format explicitly.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import av
import numpy as np
import torch
from einops import rearrange
from PIL import Image

from vidiff.errors import DataError
from vidiff.io.decode import ShortVideoError, VideoInfo, decode_frames, probe_video
from vidiff.io.files import atomic_write


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


def probe(path: str | os.PathLike, fps: float | None = None) -> VideoInfo:
    """What :func:`read_video` would read of a video file: its length in frames at ``fps`` (default: its
    nominal rate), size and timing, from its metadata and first frame. Raises DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a video file" if path.is_dir() else "not found"
        raise DataError(f"{path}: {what}; check the path")
    with _decode_errors(path):
        return probe_video(path, fps)


@contextlib.contextmanager
def _decode_errors(path: Path):
    """Errors of decoding `path` as one DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as e:  # removed between the check and the decoder opening it
        raise DataError(f"{path}: not found; check the path") from e
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(
            f"{path}: cannot be decoded as a video ({type(e).__name__}: {e}); the file is corrupt, truncated or "
            f"not a video; re-encode it (e.g. `ffmpeg -i IN -pix_fmt yuv420p OUT.mp4`) or remove it"
        ) from e


def _decoded(info: VideoInfo, slots: range, **decode) -> Optional[np.ndarray]:
    """The frames at `slots` (:func:`decode_frames` with `decode`'s keywords); a file that ends before its
    metadata said gives what it has; None for no frames."""
    if not len(slots):
        return None
    with _decode_errors(Path(info.path)):
        try:
            return decode_frames(info, list(slots), **decode)
        except ShortVideoError as e:  # the file ends before its metadata said: what it has
            slots = [k for k in slots if k < e.frames_decoded]
            info = replace(info, num_frames=e.frames_decoded)
            return decode_frames(info, slots, **decode) if slots else None


def read_video(
    path: str | os.PathLike, max_frames: int | None = None, frame_stride: int = 1, fps: float | None = None
) -> torch.Tensor:
    """Decode a video file (any container/codec FFmpeg reads) to uint8 RGB frames (f h w c), by
    presentation time as training reads it (:mod:`vidiff.io.decode`): the frames shown at
    every ``frame_stride``-th instant k / fps from the first frame (``fps``: the file's nominal rate),
    at most ``max_frames`` of them. A video shorter than ``max_frames`` gives all it has; callers that
    need a length check it.

    Raises DataError when the file is missing, cannot be decoded, or has no frames."""
    if (max_frames is not None and max_frames < 1) or frame_stride < 1:
        raise ValueError(f"max_frames and frame_stride must be >= 1, got {max_frames} and {frame_stride}")
    info = probe(path, fps)
    frames = _decoded(info, range(0, info.num_frames, frame_stride)[:max_frames])
    if frames is None:
        raise DataError(f"{path}: cannot be decoded: the video has no frames; re-encode or remove it")
    return torch.from_numpy(frames)  # (f, h, w, c)


def read_clip(path: str | os.PathLike, size, max_frames: int | None = None, *, progress: bool = False) -> torch.Tensor:
    """A video file → float (1 c f h w) in [−1, 1], as training reads it: each frame resized (area) as it
    is decoded so that it covers `size` (h, w), keeping the aspect ratio, then centre-cropped; memory
    holds the result and one frame at the file's size. `progress` shows a bar."""
    from tqdm.auto import tqdm

    from vidiff.io.frames import center_crop, cover_shape, parse_size, to_model_video

    info = probe(path)
    slots = range(info.num_frames)[:max_frames]
    h, w = parse_size(size)

    def crop(frame: np.ndarray) -> np.ndarray:
        bar.update()
        return center_crop(frame[None], h, w)[0]

    with tqdm(total=len(slots), desc=f"reading {Path(path).name}", unit="frame", disable=not progress) as bar:
        frames = _decoded(info, slots, hw=cover_shape(info.height, info.width, h, w), transform=crop)
        bar.n = bar.total  # a frame held over several slots is cropped once
        bar.refresh()
    if frames is None:
        raise DataError(f"{path}: cannot be decoded: the video has no frames; re-encode or remove it")
    return to_model_video(frames)[None]  # (1 c f h w)


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

    atomic_write(path, write)


def write_gif(path: str | os.PathLike, video: torch.Tensor, fps: int = 8) -> None:
    """Write a looping GIF with Pillow.

    Pillow merges consecutive identical frames into one longer frame, so the timing is kept but a
    GIF read back may have fewer frames than were written.
    """
    frames = [Image.fromarray(frame) for frame in to_uint8(video).numpy()]  # f x (h, w, c)

    def write(tmp: str) -> None:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)), loop=0
        )

    atomic_write(path, write)


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
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
