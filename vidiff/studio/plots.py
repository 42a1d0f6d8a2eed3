"""Curves as inline SVG, drawn here so the page needs no plotting library."""

from __future__ import annotations

import html
import math

WIDTH, HEIGHT, PAD = 520, 220, 56


def _ticks(lo: float, hi: float, n: int = 4, integer: bool = False) -> list:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    step = max(step, 1) if integer else step
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_plot_svg(points: list, title: str, css_class: str = "", log_y: bool = False) -> str:
    """An SVG line plot of [(step, value)] with axes and ticks; `log_y` plots log10 of positive values."""
    esc = html.escape
    head = (
        f'<svg class="plot {esc(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{esc(title)}"><text x="{WIDTH / 2}" y="16" text-anchor="middle" '
        f'class="title">{esc(title)}</text>'
    )
    pts = [(x, math.log10(y) if log_y else y) for x, y in points if not log_y or y > 0]
    if not pts:
        return head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data yet</text></svg>'
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    sx = lambda x: PAD + (x - x0) / (x1 - x0) * (WIDTH - 1.5 * PAD)
    sy = lambda y: HEIGHT - PAD + 10 - (y - y0) / (y1 - y0) * (HEIGHT - 1.5 * PAD - 10)
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
    parts = [head, f'<path class="axis" d="M{PAD},{sy(y1)} V{sy(y0)} H{sx(x1)}" fill="none"/>']
    for t in _ticks(y0, y1):
        label = f"{10**t:.3g}" if log_y else f"{t:.4g}"
        parts.append(f'<text x="{PAD - 4}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    for t in _ticks(x0, x1, integer=True):
        parts.append(f'<text x="{sx(t):.1f}" y="{HEIGHT - PAD + 24}" text-anchor="middle" class="tick">{t:g}</text>')
    parts.append(f'<path class="line" d="{path}" fill="none"/>')
    if len(pts) == 1:
        parts.append(f'<circle class="line" cx="{sx(xs[0]):.1f}" cy="{sy(ys[0]):.1f}" r="3"/>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 4}" text-anchor="middle" class="tick">step</text></svg>')
    return "".join(parts)
