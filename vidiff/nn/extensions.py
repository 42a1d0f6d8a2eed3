"""What vidiff adds to the paper's network: each frame's own time in its conditioning embedding.

The paper's temporal attention knows only relative positions, and every frame of a clip gets the same
embedding. Two options, off by default (a default UNet3D is the paper's), each starting at zero so
that a new model computes what the paper's does:

- `frame_index_embedding`: each frame's index (its absolute time) joins its embedding;
- `frame_condition_product`: that time also enters multiplied by the clip's condition (the class
  vector, or the caption's token mean whitened over the captions seen, `WhitenedMean`), so that a
  condition can say where things are at each time (a direction) from the first step: a sum moves
  every frame alike and leaves the product of condition and time to the MLP.

docs/findings/arrow-of-time.md has what they were measured to do. The UNet calls them through one
hook, `FrameTime.forward`, between the clip's embedding and the conditioning MLP.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from vidiff.nn.layers import frame_places, sinusoidal_features, zero_init


class FrameTime(nn.Module):
    """`forward(emb, frames, temporal_mask, class_vector, text_tokens, text_mask)`: each clip's
    embedding `emb` (b, e) with each frame's time added, (b·frames, e), before the conditioning MLP.
    Timeless frames (the appended images of joint training, one-frame clips) get nothing."""

    def __init__(self, cfg):
        super().__init__()
        base, e = cfg.base_channels, cfg.emb_dim
        self.base = base
        self.frame_embed = zero_init(nn.Linear(base, e, bias=False))
        self.frame_time = self.frame_mix = self.time_pool = None
        if cfg.frame_condition_product:
            self.frame_time = nn.Linear(base, e, bias=False)
            self.frame_mix = zero_init(nn.Linear(e, e, bias=False))
            if cfg.text_dim > 0:  # its own whitened caption: a direction word counts as much as a colour,
                # however close the encoder puts "left" and "right"
                self.time_pool = WhitenedMean(cfg.text_dim, e)

    def forward(
        self,
        emb: torch.Tensor,
        frames: int,
        temporal_mask: Optional[torch.Tensor],
        class_vector: Optional[torch.Tensor],
        text_tokens: Optional[torch.Tensor],
        text_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        index, timeless = frame_places(len(emb), frames, temporal_mask, emb.device)
        features = sinusoidal_features(index, self.base).masked_fill(timeless[:, None], 0.0).to(emb.dtype)
        cond = None
        if self.frame_time is not None:
            cond = repeat(self.condition(class_vector, text_tokens, text_mask, emb.dtype), "b e -> (b f) e", f=frames)
        return self.timed(repeat(emb, "b e -> (b f) e", f=frames), cond, features)

    def timed(self, emb: torch.Tensor, cond: Optional[torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        """Frame embeddings `emb` (n, e) with their time features (n, base) added, and with
        `frame_condition_product` also multiplied by their clip's condition `cond` (n, e), layer-normed."""
        timed = emb + self.frame_embed(features)
        if self.frame_time is not None:
            unit = F.layer_norm(cond, cond.shape[-1:])
            timed = timed + self.frame_mix(unit * self.frame_time(features))
        return timed

    def condition(self, class_vector, text_tokens, text_mask, dtype) -> torch.Tensor:
        """The clip's condition that multiplies time, (b, e): its class vector plus its whitened caption."""
        cond = class_vector
        if self.time_pool is not None:
            pooled = self.time_pool(text_tokens.to(dtype), text_mask)
            cond = pooled if cond is None else cond + pooled
        return cond


def build_extensions(cfg) -> Optional[FrameTime]:
    """The extensions a UNetConfig turns on, as one module; None for the paper's network."""
    return FrameTime(cfg) if cfg.frame_index_embedding else None


class WhitenedMean(nn.Module):
    """A caption as the mean of its tokens `(b, n, in_dim)` under `mask (b, n)`, whitened by the
    running mean and covariance of the captions seen in training, then projected to `out_dim`.

    Whitening gives every way in which captions differ the same spread: two words the encoder puts
    close together (a direction and its opposite) end as far apart as two colours, so a layer that
    reads the vector starts out able to tell them apart. `eps` (relative to the largest variance)
    keeps directions the captions never vary along from blowing up. In training the statistics move
    towards each batch's (no gradient through them; the first batch sets them); eval uses them as
    left. Null rows (all tokens masked) read as the mean caption and do not enter the statistics.
    """

    def __init__(self, in_dim: int, out_dim: int, momentum: float = 0.05, eps: float = 0.01):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.proj = nn.Linear(in_dim, out_dim)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("cov", torch.eye(in_dim))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, tokens: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        weight = mask[..., None].to(tokens.dtype)
        caption = (tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        valid = mask.any(1)
        if self.training and bool(valid.any()):
            self._update(caption[valid].detach().float())
        with torch.autocast(tokens.device.type, enabled=False):  # statistics stay in fp32
            white = (caption.float() - self.mean) @ self._whitening()
        return self.proj(torch.where(valid[:, None], white, 0.0).to(tokens.dtype))

    def _whitening(self) -> Tensor:
        """cov^(-1/2) with eps, recomputed only when `cov` changed (training, loading, moving)."""
        key = (self.cov, self.cov._version)  # in-place updates (lerp_, copy_) bump the version
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] is not key[0] or cached[1] != key[1]:
            values, vectors = torch.linalg.eigh(self.cov)
            scale = (values.clamp(min=0) + self.eps * values.max()).rsqrt()
            self._cached = (*key, (vectors * scale) @ vectors.T)
        return self._cached[2]

    @torch.no_grad()
    def _update(self, rows: Tensor) -> None:
        step, mean = torch.where(self.seen, self.momentum, 1.0), rows.mean(0)
        centred = rows - mean
        self.mean.lerp_(mean, step)
        self.cov.lerp_(centred.T @ centred / len(rows), step)
        self.seen.fill_(True)
