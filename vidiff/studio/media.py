"""What the studio writes for the page: enlarged H.264 previews of a command's videos, a filmstrip
with the known frames of a conditional task marked, and checked uploads."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from vidiff.errors import VidiffError
from vidiff.io.decode import probe_video
from vidiff.io.files import VIDEO_EXTENSIONS, atomic_write
from vidiff.io.video import read_video, to_uint8, write_mp4
from vidiff.studio.paths import StudioError

PREVIEW_SIZE = 256  # previews are enlarged with nearest neighbours to at least this many pixels
MAX_UPLOAD_BYTES = 64 * 2**20
MAX_UPLOAD_FRAMES = 1000
KNOWN = (40, 200, 90)  # the border of a known (given) frame in a filmstrip
GENERATED = (235, 235, 235)


def enlarge(videos: torch.Tensor, min_size: int = PREVIEW_SIZE) -> torch.Tensor:
    """Videos (b c f h w) enlarged by an integer factor with nearest neighbours, so that small models'
    samples are seen pixel by pixel instead of blurred by the browser."""
    k = max(1, -(-min_size // min(videos.shape[-2:])))
    if k == 1:
        return videos
    return F.interpolate(videos, scale_factor=(1, k, k), mode="nearest")


def load_samples(folder: Path) -> torch.Tensor:
    """The videos (b c f h w) in [−1, 1] a vidiff command wrote to `folder` (samples.safetensors)."""
    from safetensors.torch import load_file

    return load_file(str(folder / "samples.safetensors"))["videos"]


def write_previews(folder: Path, videos: torch.Tensor, fps: int = 8, prefix: str = "view") -> list:
    """`prefix_NNN.mp4`: each video enlarged, H.264 yuv420p (plays in Chromium, Firefox and Safari)."""
    names = []
    for i, v in enumerate(enlarge(videos)):
        write_mp4(folder / f"{prefix}_{i:03d}.mp4", v, fps=fps)
        names.append(f"{prefix}_{i:03d}.mp4")
    return names


def known_frames(task: str, frames: int, *, context: int = 0, given: int = 0, factor: int = 1) -> list:
    """Which frames of a task's result were given, not generated: predict keeps the first `context`,
    extend the `given` frames it started from, interpolate every `factor`-th; upsample generates all
    (each is guided by its low-resolution frame)."""
    if task == "predict":
        return [i < context for i in range(frames)]
    if task == "extend":
        return [i < given for i in range(frames)]
    if task == "interpolate":
        return [i % factor == 0 for i in range(frames)]
    return [False] * frames


def marked_filmstrip(path: Path, videos: torch.Tensor, known: list, frame_size: int = 64, border: int = 3) -> None:
    """A PNG, one row per video (b c f h w), one column per frame; known frames get a green border."""
    b, _, f, h, w = videos.shape
    k = max(1, -(-frame_size // min(h, w)))
    tiles = rearrange(
        to_uint8(rearrange(enlarge(videos, k * min(h, w)), "b c f h w -> c (b f) h w")), "(b f) h w c -> b f h w c", b=b
    )
    th, tw = tiles.shape[2:4]
    canvas = torch.full((b * (th + 2 * border), f * (tw + 2 * border), 3), 255, dtype=torch.uint8)
    for j in range(f):
        colour = torch.tensor(KNOWN if j < len(known) and known[j] else GENERATED, dtype=torch.uint8)
        x = j * (tw + 2 * border)
        for i in range(b):
            y = i * (th + 2 * border)
            canvas[y : y + th + 2 * border, x : x + tw + 2 * border] = colour
            canvas[y + border : y + border + th, x + border : x + border + tw] = tiles[i, j]
    image = Image.fromarray(canvas.numpy())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def input_preview(source: Path, folder: Path, max_frames: int, fps: int = 8) -> int:
    """`input.mp4`: the first `max_frames` frames of a clip, enlarged; returns how many there are."""
    frames = read_video(source, max_frames=max_frames)  # (f h w c) uint8
    video = rearrange(frames, "f h w c -> 1 c f h w").float() / 127.5 - 1
    write_mp4(folder / "input.mp4", enlarge(video)[0], fps=fps)
    return frames.shape[0]


def check_upload(path: Path, name: str, max_frames: int = MAX_UPLOAD_FRAMES) -> dict:
    """An uploaded file checked before any task reads it: a video vidiff can decode, not too long.
    Returns its frames, size and rate; a StudioError says what is wrong with it."""
    if Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
        raise StudioError(f"{name}: not a video file; upload one of {' '.join(VIDEO_EXTENSIONS)}")
    try:
        info = probe_video(path)
    except VidiffError:
        raise StudioError(
            f"{name}: cannot be read as a video; the file is corrupt, truncated or not a video "
            f"(re-encode it, e.g. `ffmpeg -i IN -pix_fmt yuv420p OUT.mp4`)"
        ) from None
    if info.num_frames > max_frames:
        seconds = float(info.num_frames / info.fps) if info.fps else 0
        raise StudioError(
            f"{name}: the clip is too long ({info.num_frames} frames, {seconds:.0f} s); the studio "
            f"takes clips of up to {max_frames} frames: trim it first"
        )
    return {"frames": info.num_frames, "height": info.height, "width": info.width, "fps": float(info.fps)}
