"""Where the arrow of time is lost: two controls for the text models' direction problem (they learn
the axis of a motion from the caption but not its sign; experiments/text_guidance.py).

* `always-right`: the unconditional cpu-demo model trained on clips that all move right. If its
  samples move right, the network can represent a time-asymmetric distribution (the relative
  position bias breaks the time-reversal symmetry).
* `direction-class`: cpu-demo-class trained with the direction as its only class (4 learned
  one-hot embeddings, no text encoder). If its samples move as asked, a condition can steer the
  sign of a motion; if not, coupling any condition to a motion is what is slow to learn, not the
  text features.
* `tokens`: how far apart the text encoder puts the direction words (L2 distance of the caption
  tokens that differ, mean-pooled cosine), next to the colour words.
* `ideal`: what the direction word is worth to the Bayes-optimal denoiser at each noise level (its
  x-MSE with the true direction, the opposite one, another axis, the colour, nothing), estimated from
  16,000 clips. If the true direction lowers the error about as much as the colour does, the data
  carries the signal and the network is what fails to take it.
* `drift`: whether the network can tell early frames from late ones at high noise, where a
  direction's mean is decided: on clips that all move right, how fast the always-right model's x̂
  drifts right (and, with `--text-run`, a text model's under "right" and "left"), against the ideal.

    python -m experiments.arrow_of_time --minutes 5 --out runs/arrow
        [--only always-right,direction-class,tokens,ideal,drift]
        [--text-run RUN] [--set model.frame_index_embedding=true ...]

Each model is sampled with DDIM 50 (8 samples per direction, w = 0 and 1 for the class model) and
read back with `describe_video`; results go to OUT/arrow_of_time.json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from experiments.common import train_once
from vidiff import VideoDiffusion, get_preset
from vidiff.data import MovingShapes, describe_video
from vidiff.data.moving_shapes import BACKGROUND, DIRECTIONS
from vidiff.diffusion.schedule import alpha_sigma


def trained(preset: str, source: str, folder: Path, args) -> VideoDiffusion:
    """Train `preset` for args.minutes on the built-in data with `source`'s options and the --set
    overrides (once)."""
    cfg = get_preset(preset).override(
        [
            f"train.max_minutes={args.minutes}",
            "train.save_every=0",
            "train.num_samples=0",
            f"data.source={source}",
            *args.set,
        ]
    )
    return VideoDiffusion.from_pretrained(train_once(cfg, folder, progress=False))


def moved(model, num: int, **request) -> Counter:
    return Counter(describe_video(v)["direction"] for v in model.sample(num, sampler="ddim", steps=50, **request))


def always_right(out: Path, args) -> dict:
    model = trained("cpu-demo", "builtin:moving-shapes?directions=right", out / "always-right", args)
    return {"moved": dict(moved(model, 4 * args.num, seed=0, batch_size=4 * args.num))}


def direction_class(out: Path, args) -> dict:
    model = trained("cpu-demo-class", "builtin:moving-shapes?label=direction", out / "direction-class", args)
    report = {}
    for w in (0.0, 1.0):
        table = {
            d: dict(moved(model, args.num, class_label=d, guidance=w, seed=100 * i, batch_size=args.num))
            for i, d in enumerate(DIRECTIONS)
        }
        report[f"w={w:g}"] = {"moved": table, "match": sum(t.get(d, 0) for d, t in table.items()) / (4 * args.num)}
    x = _right_clips(128, seed=4321)
    g = torch.Generator().manual_seed(0)
    for lam in (-8, -6, -4):  # does the class steer x̂ where the noisy clip does not show the motion yet?
        z = _noise(x, lam, g)
        with torch.no_grad():
            report[f"x̂ drift at logsnr {lam:+d}"] = {
                d: _drift(
                    model.denoiser.predict(
                        z, torch.full((len(z),), float(lam)), class_labels=torch.full((len(z),), DIRECTIONS.index(d))
                    )[0]
                )
                for d in ("right", "left")
            }
    return report


def tokens(out: Path, args) -> dict:
    from vidiff.nn.text import TextEncoder

    encoder = TextEncoder()  # the text models' encoder (MiniLM-L6 from its package)
    captions = {w: f"a red circle moving {w}" for w in DIRECTIONS} | {
        "green": "a green circle moving left",
        "blue": "a blue circle moving left",
    }
    tok, mask = encoder.encode(list(captions.values()))
    mean = (tok * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    ref = 0  # "a red circle moving left"
    return {
        f"left vs {k}": {
            "largest token distance": (tok[ref] - tok[i]).norm(dim=-1).max().item(),
            "pooled cosine": torch.cosine_similarity(mean[ref], mean[i], dim=0).item(),
        }
        for i, k in enumerate(captions)
        if i != ref
    }


_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
_OTHER_AXIS = {"left": "up", "right": "down", "up": "left", "down": "right"}


def _noise(x: torch.Tensor, lam: float, g: torch.Generator) -> torch.Tensor:
    a, s = alpha_sigma(torch.tensor(float(lam)))
    return a * x + s * torch.randn(x.shape, generator=g)


def _noised(x_test: torch.Tensor, x: torch.Tensor, lam: float, g: torch.Generator) -> tuple:
    """z_t of `x_test` at log-SNR `lam`, and log q(z_t | x_i) + const for every clip x_i of `x`
    (num_test, n): the weights of the ideal denoiser's estimate."""
    a, s = (v.item() for v in alpha_sigma(torch.tensor(float(lam))))
    z = _noise(x_test, lam, g)
    return z, -(torch.cdist(z.flatten(1), a * x.flatten(1)) ** 2) / (2 * s * s)


def _right_clips(num: int, seed: int) -> torch.Tensor:
    """`num` clips of the cpu-demo size that all move right, (num, c, f, h, w)."""
    cfg = get_preset("cpu-demo").data
    clips = MovingShapes(num_videos=num, frames=cfg.frames, size=cfg.size, directions=("right",), seed=seed)
    return torch.stack([clips[i]["video"] for i in range(num)])


def ideal_gain(out: Path, args, num_train: int = 16_000, num_test: int = 256, logsnrs=(-10, -8, -6, -4, -2, 0)) -> dict:
    """What each word is worth to the Bayes-optimal denoiser: E[x | z_t, condition] estimated by weighting
    `num_train` clips by q(z_t | x_i) (exact as num_train grows; `ess` is the effective number of clips
    behind an estimate, trustworthy where it is large), with the condition the clip's direction, that
    direction's opposite, another axis, its colour, or nothing. x-MSE on unseen clips of cpu-demo's size;
    a word's worth is the unconditional error minus the error with the true word."""
    cfg = get_preset("cpu-demo").data
    train_set = MovingShapes(num_videos=num_train, frames=cfg.frames, size=cfg.size, seed=0)
    test_set = MovingShapes(num_videos=num_test, frames=cfg.frames, size=cfg.size, seed=4321)
    x = torch.stack([train_set[i]["video"] for i in range(num_train)]).flatten(1)  # (n, d)
    attrs = [train_set.attributes(i) for i in range(num_train)]
    x_test = torch.stack([test_set[i]["video"] for i in range(num_test)]).flatten(1)
    want = [test_set.attributes(i) for i in range(num_test)]

    def allowed(key: str, value) -> torch.Tensor:  # (num_test, n): which training clips fit each test condition
        return torch.tensor([[a[key] == value(w) for a in attrs] for w in want])

    conditions = {
        "none": torch.ones(num_test, num_train, dtype=torch.bool),
        "direction": allowed("direction", lambda w: w["direction"]),
        "opposite direction": allowed("direction", lambda w: _OPPOSITE[w["direction"]]),
        "other axis": allowed("direction", lambda w: _OTHER_AXIS[w["direction"]]),
        "colour": allowed("color", lambda w: w["color"]),
    }
    g = torch.Generator().manual_seed(0)
    report = {}
    for lam in logsnrs:
        z, logits = _noised(x_test, x, lam, g)
        row = {}
        for name, mask in conditions.items():
            w = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
            row[name] = {"x_mse": ((w @ x - x_test) ** 2).mean().item(), "ess": (1 / (w**2).sum(1)).median().item()}
        report[f"logsnr {lam:+d}"] = row
        print(
            f"  λ={lam:+d}: " + "  ".join(f"{k} {v['x_mse']:.4f} (ess {v['ess']:.0f})" for k, v in row.items()),
            flush=True,
        )
    return report


def _drift(x: torch.Tensor) -> float:
    """(b c f h w) → px per frame that the foreground's x-centroid moves, least squares, clip mean."""
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1, 1) * 2 - 1
    mass = (x - bg).norm(dim=1).sum(dim=2)  # (b, f, w)
    cx = (mass * torch.arange(mass.shape[-1])).sum(-1) / mass.sum(-1).clamp_min(1e-6)  # (b, f)
    t = torch.arange(cx.shape[1], dtype=torch.float32) - (cx.shape[1] - 1) / 2
    return ((cx * t).sum(1) / (t * t).sum()).mean().item()


def drift(out: Path, args, num_train: int = 16_000, num_test: int = 128, logsnrs=(-8, -6, -4, -2)) -> dict:
    """Can the network tell early frames from late ones at high noise? On clips that all move right,
    the ideal x̂ drifts right at the clips' own speed at every noise level (its first frames sit left
    of its last); compare the always-right model's x̂ and, with --text-run, a text model's x̂ under
    the captions "... moving right" and "... moving left" (same z)."""
    cfg = get_preset("cpu-demo").data
    test_set = MovingShapes(num_videos=num_test, frames=cfg.frames, size=cfg.size, directions=("right",), seed=4321)
    x, x_test = _right_clips(num_train, seed=0), _right_clips(num_test, seed=4321)
    models = {"always-right": trained("cpu-demo", "builtin:moving-shapes?directions=right", out / "always-right", args)}
    if args.text_run:
        models["text"] = VideoDiffusion.from_pretrained(args.text_run)
    g = torch.Generator().manual_seed(0)
    report = {"real": _drift(x_test)}
    for lam in logsnrs:
        z, logits = _noised(x_test, x, lam, g)
        row = {"ideal": _drift((torch.softmax(logits, dim=1) @ x.flatten(1)).view_as(x_test))}
        logsnr = torch.full((num_test,), float(lam))
        with torch.no_grad():
            row["always-right"] = _drift(models["always-right"].denoiser.predict(z, logsnr)[0])
            for word in ("right", "left") if "text" in models else ():
                captions = [test_set[i]["caption"].rsplit(" ", 1)[0] + f" {word}" for i in range(num_test)]
                tok, mask = models["text"].conditioning.encoder.encode(captions)
                row[f"text '{word}'"] = _drift(
                    models["text"].denoiser.predict(z, logsnr, text_tokens=tok, text_mask=mask)[0]
                )
        report[f"logsnr {lam:+d}"] = row
        print(f"  λ={lam:+d}: " + "  ".join(f"{k} {v:+.3f}" for k, v in row.items()), flush=True)
    return report


PROBES = {
    "always-right": always_right,
    "direction-class": direction_class,
    "tokens": tokens,
    "ideal": ideal_gain,
    "drift": drift,
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/arrow")
    p.add_argument("--minutes", type=float, default=5.0, help="training time of each control model")
    p.add_argument("--num", type=int, default=8, help="samples per direction")
    p.add_argument("--only", default=",".join(PROBES))
    p.add_argument("--text-run", help="a text model (e.g. cpu-demo-text) for the drift probe")
    p.add_argument("--set", action="append", default=[], help="override for the control models (section.key=value)")
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
