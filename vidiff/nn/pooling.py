"""Attention pooling of per-token text embeddings into one conditioning vector.

Ho et al. 2022, Sec. 4.3: the text condition is "BERT-large embeddings processed using
attention pooling". A learned query attends over the encoder's tokens; the pooled vector is
projected to the width of the network's conditioning embedding.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class AttentionPool(nn.Module):
    """Pool `tokens (b, n, in_dim)` under `mask (b, n)` into `(b, out_dim)`.

    Multi-head attention with one learned query (`self.query`, heads x head_dim) over
    layer-normed tokens; masked (padding) positions have no influence on the result.

    Null-condition contract (classifier-free guidance): a row whose mask is all False is the
    "null condition". For such rows the module returns the learned null embedding `self.null`
    (out_dim,) exactly, whatever the token values. Condition dropout in the training step and
    the unconditional branch of guidance both produce the null condition by passing an
    all-False mask; nothing else in the network needs to know about it.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 8):
        super().__init__()
        if in_dim % heads:
            raise ValueError(f"in_dim={in_dim} must be divisible by heads={heads}")
        self.in_dim, self.out_dim, self.heads = in_dim, out_dim, heads
        head_dim = in_dim // heads
        self.norm = nn.LayerNorm(in_dim)
        self.query = nn.Parameter(torch.randn(heads, head_dim) * head_dim**-0.5)
        self.to_kv = nn.Linear(in_dim, 2 * in_dim)
        self.proj = nn.Linear(in_dim, out_dim)
        self.null = nn.Parameter(torch.randn(out_dim) * 0.02)

    def forward(self, tokens: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.in_dim:
            raise ValueError(f"tokens must be (b, n, {self.in_dim}), got {tuple(tokens.shape)}")
        b, n, _ = tokens.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
        if mask.shape != (b, n) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool {(b, n)}, got {mask.dtype} {tuple(mask.shape)}")
        is_null = ~mask.any(dim=1)  # (b,)
        if n == 0:
            return self.null.to(tokens.dtype).expand(b, -1)

        # Zero the padding so non-finite values there cannot leak through 0 * inf.
        x = self.norm(tokens.masked_fill(~mask[..., None], 0.0))
        k, v = rearrange(self.to_kv(x), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        q = self.query.to(x.dtype).expand(b, -1, -1)[:, :, None]  # (b, h, 1, d)
        # An all-masked row would softmax over nothing (NaN, and NaN gradients even behind
        # torch.where); let it attend everywhere instead, its output is replaced by `null`.
        attend = (mask | is_null[:, None])[:, None, None, :]  # (b, 1, 1, n), True = attend
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)  # (b, h, 1, d)
        pooled = rearrange(pooled, "b h 1 d -> b (h d)")
        out = self.proj(pooled)  # (b, out_dim)
        return torch.where(is_null[:, None], self.null.to(out.dtype), out)
