"""PNG plots for the experiments (matplotlib): one mark per measurement, the series' means joined by a
line, so that the seed-to-seed noise is visible next to the trend.

    panel = draw_series({"label": [(x, y), ...]}, "x title", "y title", log_x=False, title="")
    save_panels([panel, ...], "out.png")  # side by side in one PNG, each panel `size` pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DPI = 100  # a panel of `size` (w, h) pixels is (w / DPI, h / DPI) inches


@dataclass(frozen=True)
class Panel:
    series: dict  # label → [(x, y), ...]; repeated x = repeated measurements (seed sets)
    x_title: str
    y_title: str
    log_x: bool = False
    title: str = ""
    join: bool = True
    size: tuple = (900, 560)


def draw_series(
    series: dict,
    x_title: str,
    y_title: str,
    *,
    log_x: bool = False,
    title: str = "",
    join: bool = True,
    size=(900, 560),
) -> Panel:
    """A panel: `series` maps a label to its (x, y) points, drawn as dots; with `join`, the mean y at each
    x is joined by a line. Drawn by `save_panels`."""
    return Panel(dict(series), x_title, y_title, log_x, title, join, tuple(size))


def _draw(ax, panel: Panel) -> None:
    lowest = 0.0
    for i, (label, points) in enumerate(panel.series.items()):
        colour = f"C{i % 10}"
        xs, ys = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
        lowest = min(lowest, ys.min())
        ax.scatter(xs, ys, s=18, color=colour, alpha=0.7, label=label)
        if panel.join:
            at = np.unique(xs)
            ax.plot(at, [ys[xs == x].mean() for x in at], color=colour, linewidth=1.5)
    if panel.log_x:
        ax.set_xscale("log")
    ax.set_ylim(bottom=lowest)
    ax.set(xlabel=panel.x_title, ylabel=panel.y_title)
    ax.set_title(panel.title, fontsize="small", wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def save_panels(panels: list, path) -> Path:
    """The panels side by side in one PNG, as wide as their widths together."""
    from matplotlib.figure import Figure  # no pyplot: no display, no global state

    width, height = sum(p.size[0] for p in panels), max(p.size[1] for p in panels)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": [p.size[0] for p in panels]})
    for ax, panel in zip(axes[0], panels):
        _draw(ax, panel)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return Path(path)
