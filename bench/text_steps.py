"""`python -m bench.text_cache --train`: training steps of a text model from shards with and without
the captions' stored encodings (see bench/text_cache.py)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.text_cache import caption, rss_mb
from vidiff.data.prepare import caption_tokens, text_embeddings_meta
from vidiff.data.shards import ShardWriter, encode_clip
from vidiff.nn.text import TextEncoder
from vidiff.presets import get_preset
from vidiff.train.loader import build_loader
from vidiff.train.setup import build_data, build_trainer, derive_config
from vidiff.train.step import train_step

FRAMES, SIZE, LENGTH = 4, 8, 32  # small clips, a light step: the caption path shows; text_max_length default
MODEL = ("model.base_channels=8", "model.channel_mults=[1]", "model.attention_levels=[]")


def write_shards(out: Path, captions: list, encoder=None) -> float:
    """Random clips with `captions` into shards at `out`, with their encodings where `encoder` is given;
    the seconds spent encoding."""
    rng = np.random.default_rng(0)
    writer, spent = ShardWriter(out, 10**9), 0.0
    for start in range(0, len(captions), 256):
        chunk = captions[start : start + 256]
        t = time.perf_counter()
        tokens = caption_tokens(encoder, chunk) if encoder else [None] * len(chunk)
        spent += time.perf_counter() - t
        for i, (text, tok) in enumerate(zip(chunk, tokens)):
            clip = rng.integers(0, 256, (3, FRAMES, SIZE, SIZE), dtype=np.uint8)
            writer.add(f"{start + i:09d}", encode_clip(clip, {"caption": text, "label": -1}, tok))
    meta = {"text_embeddings": text_embeddings_meta(encoder)} if encoder else {}
    writer.close({"frames": FRAMES, "size": [SIZE, SIZE], "classes": [], "captioned": len(captions), **meta})
    return spent


class Run:
    """Training steps of the text model from the shards at `source` (`drop_stored`: as if they held no
    encodings), one at a time, each timed with its batch's reading."""

    def __init__(self, source: Path, batch: int, drop_stored: bool = False):
        cfg = get_preset("cpu-tiny").override(
            [
                "conditioning.kind=text",
                f"conditioning.text_max_length={LENGTH}",
                f"data.source={source}",
                f"train.batch_size={batch}",
                "train.warmup_steps=1",
                f"data.frames={FRAMES}",
                f"data.size={SIZE}",
                *MODEL,
            ]  # fmt: skip
        )
        data = build_data(cfg)
        self.t = build_trainer(derive_config(cfg, data), torch.device("cpu"))
        self.batches = iter(build_loader(data, batch, cfg.train.seed, 0, 0, 1, 0))
        self.drop_stored, self.times = drop_stored, []

    def step(self) -> None:
        start = time.perf_counter()
        b = next(self.batches)
        if self.drop_stored:
            b = {k: v for k, v in b.items() if k not in ("text_tokens", "text_mask")}
        train_step(self.t, b, len(self.times))
        self.times.append(time.perf_counter() - start)


def ms(times: list, last: int) -> float:
    return 1000 * statistics.median(times[-last:])


def train_steps(n: int, batch: int, before_steps: int) -> None:
    encoder = TextEncoder(max_length=LENGTH)
    with tempfile.TemporaryDirectory() as tmp:
        distinct, one = Path(tmp, "distinct"), Path(tmp, "one")
        for out in (distinct, one):
            out.mkdir()
        spent = write_shards(distinct, [caption(i) for i in range(n)], encoder)
        write_shards(one, [caption(0)] * n)
        size = sum(f.stat().st_size for f in distinct.glob("*.tar")) / n
        print(f"encoding {n} captions once (the prepare's cost): {spent:.1f} s; {size / 1e3:.1f} KB per sample")
        print(f"model: cpu-tiny with {' '.join(MODEL)}, batch {batch}; the runs' steps interleaved")
        print(
            "| captions seen | RSS (MB) | ms per step, one caption | distinct, stored | distinct, encoded in the step |"
        )
        print("|---|---|---|---|---|")
        ref, after = Run(one, batch), Run(distinct, batch)
        before = Run(distinct, batch, drop_stored=True)
        window = 2000 // batch
        for step in range(n // batch):
            ref.step(), after.step()
            if step < before_steps:
                before.step()
            if (step + 1) % window == 0 or step == n // batch - 1:
                b = f"{ms(before.times, window):.1f}" if step < before_steps else "–"
                print(f"| {(step + 1) * batch} | {rss_mb():.0f} | {ms(ref.times, window):.1f} | "
                      f"{ms(after.times, window):.1f} | {b} |", flush=True)  # fmt: skip
    m = [statistics.median(r.times[10:]) * 1000 for r in (ref, after, before)]  # the first steps warm up
    print(
        f"median ms per step: one caption {m[0]:.1f}; {n} distinct stored {m[1]:.1f} "
        f"({100 * (m[1] / m[0] - 1):+.1f}%); "
        f"distinct encoded in the step ({len(before.times)} steps) {m[2]:.1f} ({100 * (m[2] / m[0] - 1):+.1f}%)"
    )
