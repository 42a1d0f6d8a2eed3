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


def test_training_efficiency_steps_to_the_baselines_fvd():
    from experiments.training_efficiency import checkpoint_steps, parse_args, run_config, summarise, table

    def rows(lever, fvds, sets=(0, 1)):
        return [
            dict(dataset="shapes", lever=lever, seed=0, step=s, sample_set=k, fvd=f + k, train_minutes=0.0)
            for s, f in zip((100, 200, 300, 400), fvds)
            for k in sets
        ]

    summary = summarise(
        rows("baseline", [90, 60, 45, 40]) + rows("fast", [60, 40, 30, 25]) + rows("slow", [95, 80, 70, 60])
    )
    fast = summary["shapes"]["fast"]
    assert fast["steps_ratio"] == pytest.approx(200 / 400)  # reaches 40.5 (the baseline's mean) at step 200
    assert fast["steps_ratio_by_sample_set"] == pytest.approx([200 / 400, 200 / 400])
    assert summary["shapes"]["slow"]["steps_ratio"] is None
    between = summarise(rows("baseline", [90, 60, 45, 40]) + rows("mid", [80, 50, 30, 25]))["shapes"]["mid"]
    assert between["steps_ratio"] == pytest.approx((200 + 100 * (50.5 - 40.5) / (50.5 - 30.5)) / 400)
    assert "| slow | 60.5 | not reached (seeds 0: not reached; sample sets: not reached, not reached) |" in table(
        summary
    )

    # a lever measured on fewer training seeds than the baseline is compared with the baseline's same seeds
    def seed_rows(lever, seed, fvds):
        return [
            dict(dataset="shapes", lever=lever, seed=seed, step=s, sample_set=0, fvd=f, train_minutes=0.0)
            for s, f in zip((100, 200, 300, 400), fvds)
        ]

    two = seed_rows("baseline", 0, [90, 60, 45, 40]) + seed_rows("baseline", 1, [90, 80, 70, 60])
    one = summarise(two + seed_rows("fast", 0, [60, 40, 30, 25]) + seed_rows("fast", 1, [90, 80, 70, 60]))["shapes"]
    assert one["fast"]["steps_ratio_by_seed"] == pytest.approx([200 / 400, 1.0])  # seed 1: reaches 60 at 400
    alone = summarise(two + seed_rows("fast", 0, [60, 40, 30, 25]))["shapes"]["fast"]
    assert alone["seeds"] == [0] and alone["steps_ratio"] == pytest.approx(200 / 400)  # not the 2-seed mean's 50

    args = parse_args(["--steps", "3000", "--checkpoints", "6"])
    assert checkpoint_steps(args) == [500, 1000, 1500, 2000, 2500, 3000]
    cosine = run_config("cosine", "builtin:moving-shapes", 1, 1000, args)  # one schedule over every segment
    assert (cosine.train.steps, cosine.train.lr_decay_steps, cosine.train.seed) == (1000, 2900, 1)
    assert run_config("inverse_sqrt", "builtin:moving-shapes", 0, 500, args).train.lr_decay_steps == 0
    combined = run_config("combined", "builtin:moving-shapes", 0, 500, args)
    assert (combined.diffusion.loss_weighting, combined.train.ema, combined.data.size) == ("min_snr", "power", 32)


def test_demo_quality_variety_gap_to_the_real_shares():
    import torch

    from experiments.demo_quality import coherence, mix_gaps
    from vidiff.data import MovingShapes

    def clips(seed, n=40, **kw):
        data = MovingShapes(num_videos=n, frames=8, size=16, seed=seed, **kw)
        return torch.stack([data[i]["video"] for i in range(n)]), list(data.colors)

    real, palette = clips(12345, n=256)
    ref = coherence(real, palette)
    assert sum(ref["colours"].values()) == pytest.approx(1) and len(ref["colours"]) >= 3
    yellow, _ = clips(7, colors=("yellow",))  # every clip yellow: the mix is lost, coherence is not
    one_colour = coherence(yellow, palette)
    assert one_colour["same_color"] >= 0.9 and one_colour["colours"].get("yellow", 0) >= 0.9
    gaps = mix_gaps(one_colour, ref)
    assert gaps["colour_gap"] == pytest.approx(100 * abs(one_colour["colours"]["yellow"] - ref["colours"]["yellow"]))
    assert gaps["colour_gap"] > 50
    other, _ = clips(99, n=64)  # real clips of another seed: within the target (sampling noise only)
    assert max(mix_gaps(coherence(other, palette), ref).values()) < 10


@pytest.mark.slow
def test_training_efficiency_runs_end_to_end_and_reports_without_training(tmp_path):
    import json

    from experiments.training_efficiency import main

    out = tmp_path / "te"
    main(["--smoke", "--out", str(out), "--datasets", "shapes", "--levers", "baseline,min_snr"])
    results = json.loads((out / "results.json").read_text())
    assert {(r["lever"], r["step"]) for r in results["rows"]} == {
        (v, s) for v in ("baseline", "min_snr") for s in (1, 2)
    }
    assert (out / "training_efficiency.png").is_file() and "| min_snr |" in (out / "table.md").read_text()
    # --report: the FVDs measured so far, nothing trained for a lever not yet run
    reported = main(["--smoke", "--out", str(out), "--datasets", "shapes", "--levers", "baseline,cosine", "--report"])
    assert {r["lever"] for r in reported["rows"]} == {"baseline"}
    assert not (out / "runs" / "shapes" / "cosine" / "seed0" / "checkpoints").exists()
    assert [r["fvd"] for r in reported["rows"]] == [r["fvd"] for r in results["rows"] if r["lever"] == "baseline"]
