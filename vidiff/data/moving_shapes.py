"""Moving shapes: a built-in video dataset that needs no download.

Each clip shows one solid shape (circle, square or triangle) of one palette colour moving at constant
speed in one direction (left, right, up or down) over a uniform dark background, bouncing off the
walls. Clips are generated on the fly, deterministically from ``(seed, index)``, at any resolution and
length. Sizes and speeds scale with the frame size: at 32x32 a shape is about 10 px across and moves
1-2 px per frame. The start position is chosen so that the shape moves in its captioned direction for
as long as the clip allows before its first bounce, so the caption stays true of the clip.

The class label is the (colour, shape) pair, ``label = color_index * len(shapes) + shape_index``, with
class names such as ``"red circle"`` (``label=`` makes it the colour, the shape or the direction alone);
the direction appears only in the caption (``"a red circle moving left"``), which makes the dataset
useful both for class-conditional and for text-conditional models. :func:`describe_video` reads
colour, shape and direction back from a video, so that samples can
be checked against the prompt that produced them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from einops import reduce
from torch.utils.data import Dataset

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.16, 0.16),
    "green": (0.16, 0.80, 0.24),
    "blue": (0.20, 0.36, 0.96),
    "yellow": (0.96, 0.86, 0.16),
    "magenta": (0.86, 0.22, 0.86),
    "cyan": (0.16, 0.84, 0.88),
}
BACKGROUND = (0.08, 0.08, 0.10)
COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
LABELS = ("object", "color", "shape", "direction")  # what MovingShapes(label=...) makes the class
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy), y points down

_RADIUS = 0.16  # circle radius as a fraction of min(h, w): ~10 px diameter at 32x32
_SPEED = (0.035, 0.055)  # px per frame as a fraction of min(h, w): 1.1-1.8 px at 32x32
_SQUARE = 0.87  # square half-side / radius: about the circle's area
_TRIANGLE = 1.3  # triangle circumradius / radius


def _half_extents(shape: str, r: float) -> tuple[float, float, float]:
    """(half-width, extent above the centre, extent below the centre) of a shape of radius r."""
    if shape == "circle":
        return r, r, r
    if shape == "square":
        return _SQUARE * r, _SQUARE * r, _SQUARE * r
    rt = _TRIANGLE * r
    return rt * np.sqrt(3) / 2, rt, rt / 2


def _coverage(shape: str, cx: np.ndarray, cy: np.ndarray, r: float, h: int, w: int, ss: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape, (f, h, w), by supersampling ss x ss per pixel."""
    xs = (np.arange(w * ss, dtype=np.float32) + 0.5) / ss
    ys = (np.arange(h * ss, dtype=np.float32) + 0.5) / ss
    dx = xs[None, None, :] - cx[:, None, None].astype(np.float32)  # (f, 1, w*ss)
    dy = ys[None, :, None] - cy[:, None, None].astype(np.float32)  # (f, h*ss, 1)
    if shape == "square":
        # separable: coverage is the outer product of the 1-D coverages
        a = _SQUARE * r
        mx = reduce((np.abs(dx) <= a).astype(np.float32), "f one (w sw) -> f one w", "mean", sw=ss)
        my = reduce((np.abs(dy) <= a).astype(np.float32), "f (h sh) one -> f h one", "mean", sh=ss)
        return mx * my  # (f, h, w)
    if shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    else:
        rt = _TRIANGLE * r
        # equilateral triangle pointing up, centroid at (cx, cy): base at dy = rt/2, slanted sides
        # through the apex (0, -rt) satisfy sqrt(3)|dx| - dy = rt
        inside = (np.sqrt(3) * np.abs(dx) - dy <= rt) & (dy <= rt / 2)
    return reduce(inside.astype(np.float32), "f (h sh) (w sw) -> f h w", "mean", sh=ss, sw=ss)


def _fold(u: np.ndarray, span: float) -> np.ndarray:
    """Reflect positions u >= 0 into [0, span]: a point bouncing between two walls."""
    if span <= 0:
        return np.zeros_like(u)
    m = np.mod(u, 2 * span)
    return np.where(m <= span, m, 2 * span - m)


class MovingShapes(Dataset):
    """Clips of one coloured shape moving and bouncing on a dark background (see module docstring).

    Args:
        num_videos: dataset length; clips are generated on the fly, so this can be large.
        frames: frames per clip.
        size: frame size, an int or (h, w).
        seed: clip ``i`` depends only on ``(seed, i)``.
        colors, shapes, directions: the attribute values to draw from (names from ``PALETTE``,
            ``SHAPES``, ``DIRECTIONS``).
        second_shape: add a second, different shape in the background with its own direction; it is
            named in the caption but not in the label.
        supersample: sub-samples per pixel side for anti-aliasing.
        label: what the class is: ``"object"`` (the (colour, shape) pair, the default), ``"color"``,
            ``"shape"`` or ``"direction"``.
        speed: a factor on the speeds drawn (1.1–1.8 px per frame at 32×32).

    Items are dicts ``{"video": float32 (c f h w) in [-1, 1], "label": int, "caption": str}``.
    """

    items_are_cheap = True  # ~2,300 clips/s a core at 8×16×16 (vidiff.train.loader.num_workers)

    def __init__(
        self,
        num_videos: int = 100_000,
        frames: int = 8,
        size: int | tuple[int, int] = 32,
        seed: int = 0,
        colors: Sequence[str] = COLORS,
        shapes: Sequence[str] = SHAPES,
        directions: Sequence[str] = DIRECTIONS,
        second_shape: bool = False,
        supersample: int = 4,
        label: str = "object",
        speed: float = 1.0,
    ):
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if num_videos < 1 or frames < 1 or h < 8 or w < 8 or supersample < 1 or not speed > 0:
            raise ValueError(
                f"MovingShapes needs num_videos >= 1, frames >= 1, size >= 8, supersample >= 1 and speed > 0; "
                f"got num_videos={num_videos}, frames={frames}, size={size}, supersample={supersample}, "
                f"speed={speed}"
            )
        for name, values, allowed in (
            ("colors", colors, PALETTE),
            ("shapes", shapes, SHAPES),
            ("directions", directions, DIRECTIONS),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"MovingShapes {name}={list(values)}: choose from {list(allowed)}")
        if label not in LABELS:
            raise ValueError(f"MovingShapes label={label!r}: choose from {list(LABELS)}")
        if second_shape and len(colors) * len(shapes) < 2:
            raise ValueError("MovingShapes second_shape=True needs at least two (colour, shape) classes")
        self.num_videos, self.frames, self.size, self.seed = num_videos, frames, (h, w), seed
        self.colors, self.shapes, self.directions = tuple(colors), tuple(shapes), tuple(directions)
        self.second_shape, self.supersample, self.label_by, self.speed = second_shape, supersample, label, speed
        self.classes = (
            [f"{c} {s}" for c in self.colors for s in self.shapes]
            if label == "object"
            else list({"color": self.colors, "shape": self.shapes, "direction": self.directions}[label])
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_videos

    def _objects(self, index: int) -> list[dict]:
        if not 0 <= index < self.num_videos:
            raise IndexError(f"MovingShapes index {index} out of range [0, {self.num_videos})")
        rng = np.random.default_rng([self.seed, index])
        (h, w), f = self.size, self.frames
        r = _RADIUS * min(h, w)
        objects = []
        for k in range(2 if self.second_shape else 1):
            while True:
                color = int(rng.integers(len(self.colors)))
                shape = int(rng.integers(len(self.shapes)))
                if k == 0 or (color, shape) != (objects[0]["color_index"], objects[0]["shape_index"]):
                    break
            direction = self.directions[int(rng.integers(len(self.directions)))]
            speed = rng.uniform(*_SPEED) * min(h, w) * self.speed
            ex, ey_top, ey_bottom = _half_extents(self.shapes[shape], r)
            lo_x, hi_x, lo_y, hi_y = ex, w - ex, ey_top, h - ey_bottom
            (sx, sy), t = _STEP[direction], np.arange(f)
            lo, hi = (lo_x, hi_x) if sx else (lo_y, hi_y)
            span = max(hi - lo, 0.0)
            travel = speed * (f - 1)
            # distance from the wall behind the shape; no bounce at all when the clip allows it
            u = _fold(rng.uniform(0, max(span - travel, 0.0)) + speed * t, span)
            along = lo + u if sx + sy > 0 else hi - u
            lo_p, hi_p = (lo_y, hi_y) if sx else (lo_x, hi_x)
            across = np.full(f, rng.uniform(lo_p, max(hi_p, lo_p)))
            cx, cy = (along, across) if sx else (across, along)
            objects.append(
                dict(
                    color_index=color,
                    shape_index=shape,
                    color=self.colors[color],
                    shape=self.shapes[shape],
                    direction=direction,
                    speed=speed,
                    cx=cx,
                    cy=cy,
                    r=r,
                )
            )
        return objects

    def attributes(self, index: int) -> dict:
        """The attributes of clip ``index``: ``dict(color=, shape=, direction=)``."""
        o = self._objects(index)[0]
        return dict(color=o["color"], shape=o["shape"], direction=o["direction"])

    def label(self, index: int) -> int:
        return self._label(self._objects(index)[0])

    def _label(self, o: dict) -> int:
        if self.label_by == "object":
            return o["color_index"] * len(self.shapes) + o["shape_index"]
        if self.label_by == "direction":
            return self.directions.index(o["direction"])
        return o[f"{self.label_by}_index"]

    def __getitem__(self, index: int) -> dict:
        objects = self._objects(index)
        (h, w), ss = self.size, self.supersample
        bg = np.asarray(BACKGROUND, np.float32)
        video = np.broadcast_to(bg[:, None, None, None], (3, self.frames, h, w)).copy()  # (c, f, h, w)
        for o in reversed(objects):  # the labelled shape is drawn last, on top
            cover = _coverage(o["shape"], o["cx"], o["cy"], o["r"], h, w, ss)[None]  # (1, f, h, w)
            color = np.asarray(PALETTE[o["color"]], np.float32)[:, None, None, None]  # (c, 1, 1, 1)
            video += cover * (color - video)
        caption = " and ".join(f"a {o['color']} {o['shape']} moving {o['direction']}" for o in objects)
        return {"video": torch.from_numpy(video * 2 - 1), "label": self._label(objects[0]), "caption": caption}


def describe_video(video: torch.Tensor, palette: Sequence[str] | None = None) -> dict:
    """Read colour, shape and direction of motion back from a moving-shapes-like video.

    Args:
        video: (c f h w) float in [-1, 1], one object on a roughly uniform background.
        palette: colour names from ``PALETTE`` to choose from (default: all of them).

    Returns:
        ``dict(color=, shape=, direction=, speed=, foreground=)``: the palette colour nearest to the
        foreground's colour, the shape guessed from how much of its bounding box it fills, the
        direction of the median frame-to-frame displacement of its centroid (robust to a bounce),
        the speed in px/frame and the fraction of pixels in the foreground. ``"none"`` where no
        foreground or no motion is found.
    """
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"describe_video expects a (c f h w) RGB video, got shape {tuple(video.shape)}")
    names = list(palette or PALETTE)
    x = (video.detach().float().cpu().clamp(-1, 1) + 1) / 2
    bg = x.flatten(1).median(dim=1).values  # (c,): the background covers most pixels
    diff = x - bg[:, None, None, None]  # (c, f, h, w)
    dist = diff.norm(dim=0)  # (f, h, w)
    fg = dist > 0.3
    out = dict(color="none", shape="none", direction="none", speed=0.0, foreground=fg.float().mean().item())
    if fg.sum() < 3:
        return out

    # colour: cosine between the mean foreground offset from the background and each palette offset;
    # partly covered edge pixels lie on the same line, so they do not bias it
    mean_diff = diff[:, fg].mean(dim=1)
    offsets = torch.tensor([PALETTE[n] for n in names]) - bg  # (n, c)
    cos = torch.nn.functional.cosine_similarity(offsets, mean_diff[None], dim=1)
    out["color"] = names[int(cos.argmax())]

    f, h, w = dist.shape
    level = dist[fg].quantile(0.9)  # the full-coverage distance
    cover = (dist / level).clamp(0, 1) * fg  # (f, h, w): per-pixel coverage estimate
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    centroids, fills = [], []
    for t in range(f):
        mass = cover[t].sum()
        if mass < 1:
            continue
        centroids.append(((cover[t] * xs).sum() / mass, (cover[t] * ys).sum() / mass))
        rows = torch.nonzero(cover[t].amax(dim=1) > 0.5).flatten()
        cols = torch.nonzero(cover[t].amax(dim=0) > 0.5).flatten()
        if len(rows) and len(cols):
            box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
            fills.append(mass / box)
    if fills:
        # fill of the bounding box: triangle 1/2, circle pi/4, square 1
        fill = torch.stack(fills).median().item()
        out["shape"] = "triangle" if fill < 0.66 else "circle" if fill < 0.89 else "square"
    if len(centroids) >= 2:
        c = torch.tensor(centroids)  # (frames with foreground, 2): (x, y)
        step = (c[1:] - c[:-1]).median(dim=0).values
        dx, dy = step.tolist()
        out["speed"] = max(abs(dx), abs(dy))
        if out["speed"] > 0.1:
            if abs(dx) >= abs(dy):
                out["direction"] = "right" if dx > 0 else "left"
            else:
                out["direction"] = "down" if dy > 0 else "up"
    return out
