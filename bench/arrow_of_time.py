"""Where the arrow of time is lost: two controls for the text models' direction problem (they learn
the axis of a motion from the caption but not its sign; bench/text_guidance.py).

* `always-right`: the unconditional cpu-demo model trained on clips that all move right. If its
  samples move right, the network can represent a time-asymmetric distribution (the relative
  position bias breaks the time-reversal symmetry).
* `direction-class`: cpu-demo-class trained with the direction as its only class (4 learned
  one-hot embeddings, no text encoder). If its samples move as asked, a condition can steer the
  sign of a motion; if not, coupling any condition to a motion is what is slow to learn, not the
  text features.
* `tokens`: how far apart the text encoder puts the direction words (L2 distance of the caption
  tokens that differ, mean-pooled cosine), next to the colour words.

    python bench/arrow_of_time.py --minutes 5 --out runs/arrow [--only always-right,direction-class,tokens]

Each model is sampled with DDIM 50 (8 samples per direction, w = 0 and 1 for the class model) and
read back with `describe_video`; results go to OUT/arrow_of_time.json.
"""
from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from pathlib import Path

import torch

import vidiff.data
from vidiff import VideoDiffusion, get_preset
from vidiff.data import MovingShapes, describe_video
from vidiff.data.moving_shapes import DIRECTIONS
from vidiff.train import train


class DirectionClasses(MovingShapes):
    """The built-in shapes with the direction of motion as the class (colour and shape vary freely)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.classes = list(self.directions)

    def label(self, index: int) -> int:
        return self.directions.index(self.attributes(index)["direction"])

    def __getitem__(self, index: int) -> dict:
        return {**super().__getitem__(index), "label": self.label(index)}


def trained(preset: str, dataset, folder: Path, minutes: float) -> VideoDiffusion:
    """Train `preset` for `minutes` on `dataset` (a MovingShapes variant standing in for the built-in one)."""
    if not (folder / "checkpoints").is_dir():
        built_in = vidiff.data.MovingShapes
        vidiff.data.MovingShapes = dataset  # what build_dataset constructs for builtin:moving-shapes
        try:
            cfg = get_preset(preset).override([f"train.max_minutes={minutes}", "train.save_every=0",
                                               "train.num_samples=0"])
            train(cfg, folder, progress=False)
        finally:
            vidiff.data.MovingShapes = built_in
    return VideoDiffusion.from_pretrained(folder)


def moved(model, num: int, **request) -> Counter:
    return Counter(describe_video(v)["direction"] for v in model.sample(num, sampler="ddim", steps=50, **request))


def always_right(out: Path, args) -> dict:
    model = trained("cpu-demo", functools.partial(MovingShapes, directions=("right",)), out / "always-right",
                    args.minutes)
    return {"moved": dict(moved(model, 4 * args.num, seed=0, batch_size=4 * args.num))}


def direction_class(out: Path, args) -> dict:
    model = trained("cpu-demo-class", DirectionClasses, out / "direction-class", args.minutes)
    report = {}
    for w in (0.0, 1.0):
        table = {d: dict(moved(model, args.num, class_label=d, guidance=w, seed=100 * i, batch_size=args.num))
                 for i, d in enumerate(DIRECTIONS)}
        report[f"w={w:g}"] = {"moved": table, "match": sum(t.get(d, 0) for d, t in table.items()) / (4 * args.num)}
    return report


def tokens(out: Path, args) -> dict:
    from vidiff.text import TextEncoder

    encoder = TextEncoder()  # the text models' encoder (MiniLM-L6 from its package)
    captions = {w: f"a red circle moving {w}" for w in DIRECTIONS} | {"green": "a green circle moving left",
                                                                       "blue": "a blue circle moving left"}
    tok, mask = encoder.encode(list(captions.values()))
    mean = (tok * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    ref = 0  # "a red circle moving left"
    return {f"left vs {k}": {"largest token distance": (tok[ref] - tok[i]).norm(dim=-1).max().item(),
                             "pooled cosine": torch.cosine_similarity(mean[ref], mean[i], dim=0).item()}
            for i, k in enumerate(captions) if i != ref}


PROBES = {"always-right": always_right, "direction-class": direction_class, "tokens": tokens}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/arrow")
    p.add_argument("--minutes", type=float, default=5.0, help="training time of each control model")
    p.add_argument("--num", type=int, default=8, help="samples per direction")
    p.add_argument("--only", default=",".join(PROBES))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "arrow_of_time.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.only.split(","):
        report[name] = PROBES[name](out, args)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
