"""The experiments' shared plot helper: matplotlib panels side by side, each the size it asks for."""

import pytest
from PIL import Image

pytest.importorskip("matplotlib")
from experiments.plots import draw_series, save_panels  # noqa: E402


def test_panels_are_drawn_side_by_side_at_their_size(tmp_path):
    series = {"joint": [(0, 1.0), (0, 1.4), (4, 0.7)], "video only": [(0, 2.0), (4, 1.1), (4, 1.3)]}
    panels = [
        draw_series(series, "images per video", "FVD", size=(600, 420), title="a"),
        draw_series(series, "network evaluations (log)", "FVD", log_x=False, join=False, size=(400, 420)),
        draw_series({"pc": [(10, 3.0), (100, 2.0)]}, "evaluations", "FVD", log_x=True),
    ]
    path = save_panels(panels, tmp_path / "plots" / "fig.png")
    image = Image.open(path)
    assert image.size == (1900, 560) and len(image.getcolors(1 << 20)) > 10  # drawn, not blank
