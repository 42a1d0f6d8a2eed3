"""Small PNG plots for the benches (Pillow only): one mark per measurement, the series' means joined
by a line, so that the seed-to-seed noise is visible next to the trend.

    image = draw_series({"label": [(x, y), ...]}, "x title", "y title", log_x=False, title="")
    save_panels([image, ...], "out.png")  # side by side in one PNG
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

COLOURS = ("navy", "darkorange", "forestgreen", "crimson", "purple", "saddlebrown", "teal", "gray")


def _ticks(lo: float, hi: float, log_x: bool) -> list:
    if log_x:
        return [10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) if lo <= e <= hi]
    return list(np.linspace(lo, hi, 5))


def draw_series(series: dict, x_title: str, y_title: str, *, log_x: bool = False, title: str = "",
                join: bool = True, size=(900, 560)):
    """A PIL image: `series` maps a label to its (x, y) points (repeated x = repeated measurements, e.g.
    seed sets). Points are drawn as dots; with `join`, the mean y at each x is joined by a line; each
    series is labelled at its last point and in the legend."""
    from PIL import Image, ImageDraw

    w, h, pad = *size, 75
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    tx = (lambda x: math.log10(x)) if log_x else float
    pts = [(tx(x), y) for p in series.values() for x, y in p]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    span = (max(xs) - min(xs)) or 1.0
    x0, x1 = min(xs) - 0.08 * span, max(xs) + 0.08 * span
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.12 if max(ys) > 0 else 1.0

    def at(x, y):
        return pad + (x - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad)

    d.line([at(x0, y0), at(x1, y0)], fill="black")
    d.line([at(x0, y0), at(x0, y1)], fill="black")
    for t in _ticks(x0, x1, log_x) if log_x else sorted({p[0] for p in pts}):
        x, y = at(math.log10(t) if log_x else t, y0)
        d.line([(x, y), (x, y + 5)], fill="black")
        d.text((x - 10, y + 8), f"{t:g}", fill="black")
    for f in np.linspace(y0, y1, 5):
        x, y = at(x0, f)
        d.text((x - 60, y - 6), f"{f:.3g}", fill="black")
    d.text((w // 2 - 6 * len(x_title) // 2, h - 30), x_title, fill="black")
    d.text((10, 30), y_title, fill="black")
    d.text((10, 8), title, fill="black")
    for i, (label, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        for x, y in points:
            cx, cy = at(tx(x), y)
            d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
        means = [(tx(x), float(np.mean([y for xx, y in points if xx == x]))) for x in sorted({x for x, _ in points})]
        if join and len(means) > 1:
            d.line([at(*m) for m in means], fill=colour, width=2)
        ex, ey = at(*means[-1])
        d.text((ex + 7, ey - 6), label, fill=colour)
        lx, ly = w - pad - 170, pad + 14 * i
        d.line([(lx, ly + 6), (lx + 14, ly + 6)], fill=colour, width=2)
        d.text((lx + 20, ly), label, fill=colour)
    return img


def save_panels(images: list, path) -> Path:
    """Images side by side in one PNG."""
    from PIL import Image

    canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return Path(path)
