"""Building blocks of the factorized space-time UNet (paper §3, Figure 1).

Inside the network a video batch `b c f h w` is carried as a batch of frames `(b f) c h w`: every
operation except temporal attention acts on one frame at a time (1×3×3 space-only convolutions,
per-frame GroupNorm, spatial attention with frames as batch), so nothing else mixes frames and a
video with f = 1 is an image.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


def zero_init(module: nn.Module) -> nn.Module:
    """Output layers start at zero, so every residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) if channels >= 4 else 1, channels, eps=1e-6)


def sinusoidal_features(u: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style features (sin, cos) of u (n,) at dim/2 frequencies 10000^(−k/(dim/2)): (n, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=u.device, dtype=torch.float32) / half)
    args = u.float()[:, None] * freqs[None]  # (n, half)
    return torch.cat([args.sin(), args.cos()], dim=1)


def logsnr_features(logsnr: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the log-SNR, through the bounded reparameterisation
    u = (2/π) atan(e^{−λ/2}) ∈ (0, 1) (the unclipped cosine-schedule time), scaled to [0, 1000]."""
    return sinusoidal_features(torch.atan(torch.exp(-0.5 * logsnr.float())) * (2.0 / math.pi) * 1000.0, dim)


def frame_places(batch: int, frames: int, mask: Optional[torch.Tensor] = None, device=None):
    """Each frame's place in its clip, as (index, timeless), both (batch·frames,): the index is the number
    of earlier frames it may attend to (its frame number in a video; 0 for the appended images of joint
    training), and a frame is timeless when it attends to no other frame (an appended image, a
    one-frame clip). `mask` is a temporal attention mask (f, f) or (b, f, f), True = allowed."""
    if mask is None:
        mask = torch.ones(frames, frames, dtype=torch.bool, device=device)
    mask = mask.expand(batch, frames, frames)
    index = torch.tril(mask, diagonal=-1).sum(-1)
    timeless = mask.sum(-1) <= 1
    return index.reshape(-1), timeless.reshape(-1)


def norm_act(norm: nn.GroupNorm, x: torch.Tensor, scale=None, shift=None) -> torch.Tensor:
    """SiLU(GroupNorm(x)), with FiLM (·(1 + scale) + shift) between them when given."""
    return _norm_act(x, norm.weight, norm.bias, scale, shift, norm.num_groups, norm.eps)


def _norm_act(x, weight, bias, scale, shift, groups: int, eps: float) -> torch.Tensor:
    h = F.group_norm(x, groups, weight, bias, eps)
    if scale is not None:
        h = h * (1 + scale) + shift
    return F.silu(h)


class _NormActConv(torch.autograd.Function):
    """conv2d(SiLU(GroupNorm(x)·(1 + scale) + shift)) that stores x only, not the activation the
    convolution reads: the backward pass recomputes that activation (elementwise, cheap) and uses it
    for the convolution's weight gradient and for the normalisation's own backward."""

    @staticmethod
    def forward(ctx, x, gn_weight, gn_bias, scale, shift, conv_weight, conv_bias, groups, eps, padding):
        a = _norm_act(x, gn_weight, gn_bias, scale, shift, groups, eps)
        ctx.save_for_backward(x, gn_weight, gn_bias, scale, shift, conv_weight)
        ctx.groups, ctx.eps, ctx.padding, ctx.has_bias = groups, eps, padding, conv_bias is not None
        return F.conv2d(a, conv_weight, conv_bias, padding=padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, gn_weight, gn_bias, scale, shift, conv_weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        leaves = [
            t.detach().requires_grad_(bool(n)) if t is not None else None
            for t, n in zip((x, gn_weight, gn_bias, scale, shift), need[:5])
        ]
        with torch.enable_grad():
            a = _norm_act(*leaves, ctx.groups, ctx.eps)
        p = ctx.padding
        grad_a, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out,
            a.detach(),
            conv_weight,
            [conv_weight.shape[0]] if ctx.has_bias else None,
            [1, 1],
            [p, p],
            [1, 1],
            False,
            [0, 0],
            1,
            [True, need[5], ctx.has_bias and need[6]],
        )
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        got = iter(torch.autograd.grad(a, wanted, grad_a)) if wanted else iter(())
        grads = [next(got) if t is not None and t.requires_grad else None for t in leaves]
        return (*grads, grad_w, grad_b, None, None, None)


def norm_act_conv(norm: nn.GroupNorm, conv: nn.Conv2d, x: torch.Tensor, scale=None, shift=None) -> torch.Tensor:
    """conv(norm_act(norm, x, scale, shift)); under autograd the activation between them is
    recomputed in the backward pass instead of stored (`_NormActConv`; under autocast, only the
    normalisation's own intermediates are recomputed)."""
    if not torch.is_grad_enabled() or torch.compiler.is_compiling():
        # compiled: one graph for all widths (the Function's backward would break it, and each width
        # would be a recompile); the compiler's partitioner recomputes elementwise work by itself
        return conv(norm_act(norm, x, scale, shift))
    if (
        torch.is_autocast_enabled(x.device.type)
        or conv.stride != (1, 1)
        or conv.dilation != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
        or conv.padding[0] != conv.padding[1]
    ):
        # mixed precision or an unusual convolution: recompute the normalisation only (stores the activation)
        return conv(checkpoint(norm_act, norm, x, scale, shift, use_reentrant=False))
    return _NormActConv.apply(
        x, norm.weight, norm.bias, scale, shift, conv.weight, conv.bias, norm.num_groups, norm.eps, conv.padding[0]
    )


class ResBlock(nn.Module):
    """Wide-ResNet block: GN → SiLU → 1×3×3 conv → GN·(1 + scale) + shift → SiLU → dropout → 1×3×3 conv,
    plus a (1×1 projected) skip. The conditioning embedding enters through scale/shift (FiLM).

    With `recompute_norms`, GN(+FiLM)+SiLU is recomputed in the backward pass rather than stored,
    for the normalisation's backward and for the weight gradient of the convolution that reads it
    (`norm_act_conv`): a block stores its input and the first convolution's output, nothing else, for
    the price of recomputing two cheap elementwise passes."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, recompute_norms: bool = True):
        super().__init__()
        self.recompute_norms = recompute_norms
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: (b f) c h w; emb: (b f) e — the video's embedding repeated per frame
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        if self.recompute_norms and torch.is_grad_enabled():
            h = norm_act_conv(self.norm1, self.conv1, x)
            if self.dropout.p > 0 and self.training:  # the dropout mask is not recomputed: store it
                h = self.conv2(self.dropout(checkpoint(norm_act, self.norm2, h, scale, shift, use_reentrant=False)))
            else:
                h = norm_act_conv(self.norm2, self.conv2, h, scale, shift)
            return self.skip(x) + h
        h = norm_act(self.norm2, self.conv1(norm_act(self.norm1, x)), scale, shift)
        return self.skip(x) + self.conv2(self.dropout(h))


class _SelfAttention(nn.Module):
    """x + branch(x, ...): GroupNorm, a qkv projection and a zero-initialised output projection. With
    `recompute` (UNetConfig.recompute_attention) the branch keeps only its input for the backward
    pass and is computed again there."""

    def __init__(self, channels: int, head_dim: int, recompute: bool = False):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_init(nn.Linear(channels, channels))
        self.recompute = recompute

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():
            return x + checkpoint(self.branch, x, *args, use_reentrant=False)
        return x + self.branch(x, *args)


class SpatialAttention(_SelfAttention):
    """Self-attention over the h·w positions of each frame (frames as batch)."""

    def __init__(self, channels: int, head_dim: int = 64, recompute: bool = False):
        super().__init__(channels, head_dim, recompute)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        bf, c, h, w = x.shape
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")
        q, k, v = rearrange(self.qkv(tokens), "n l (three m d) -> three n m l d", three=3, m=self.heads)
        a = F.scaled_dot_product_attention(q, k, v)  # (b f) heads (h w) d
        a = self.out(rearrange(a, "n m l d -> n l (m d)"))
        return rearrange(a, "n (h w) c -> n c h w", h=h, w=w)


class CrossAttention(nn.Module):
    """Attention from every pixel of every frame to the text tokens (beyond the paper, whose text
    enters only through the pooled vector). Queries are laid out `b (f h w)`, so frames do not mix.

    A learned null key/value pair is always present: a padding token never influences the result,
    and an all-False mask (the null condition of classifier-free guidance) attends to the null
    pair alone, so the conditional and unconditional branches share one forward."""

    def __init__(self, channels: int, context_dim: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.null_kv = nn.Parameter(torch.randn(2, channels) * 0.02)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, frames: int, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bf, c, h, w = x.shape
        b, n, _ = context.shape
        q = rearrange(
            self.q(rearrange(self.norm(x), "(b f) c h w -> b (f h w) c", f=frames)),
            "b l (m d) -> b m l d",
            m=self.heads,
        )
        kv = torch.cat(
            [
                self.null_kv.to(context.dtype).expand(b, 1, 2, c),
                rearrange(self.kv(context), "b n (two c) -> b n two c", two=2),
            ],
            dim=1,
        )
        k, v = rearrange(kv, "b n two (m d) -> two b m n d", m=self.heads)
        allowed = F.pad(mask, (1, 0), value=True)[:, None, None]  # (b, 1, 1, 1 + n): the null pair always
        a = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=allowed)
        a = self.out(rearrange(a, "b m l d -> b l (m d)"))
        return x + rearrange(a, "b (f h w) c -> (b f) c h w", f=frames, h=h, w=w)


REL_POS_INITS = ("normal", "zeros")  # UNetConfig.rel_pos_init


class RelativePositionBias(nn.Module):
    """Learned per-head bias b(j − i) for temporal attention, with log-spaced buckets beyond
    `max_exact` frames (T5), so there is no absolute notion of time and any frame count works.

    Initialised at random (N(0, 1), as T5 and nn.Embedding do), not at zero: the 1×3×3 convolutions
    do not mix frames, so with b(d) = b(−d) — zeros included — the whole network is exactly
    equivariant to reversing time, a symmetry gradient descent keeps in expectation on data that is
    symmetric without its captions (tests/test_unet.py::test_time_reversal_symmetry_is_broken_at_init).
    `init="zeros"` keeps that equivariance, for data without a direction of time. What the random
    start does and does not give a trained model: docs/findings/arrow-of-time.md."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 64, init: str = "normal"):
        super().__init__()
        if init not in REL_POS_INITS:
            raise ValueError(f"relative position bias init {init!r}: choose from {list(REL_POS_INITS)}")
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.bias = nn.Embedding(num_buckets, heads)
        nn.init.normal_(self.bias.weight, std=1.0)
        if init == "zeros":
            nn.init.zeros_(self.bias.weight)

    def bucket(self, rel: torch.Tensor) -> torch.Tensor:
        half = self.num_buckets // 2
        sign_offset = (rel > 0).long() * half  # separate buckets for past and future
        n = rel.abs()
        max_exact = half // 2
        large = (
            max_exact
            + (
                torch.log(n.float().clamp_min(1) / max_exact)
                / math.log(self.max_distance / max_exact)
                * (half - max_exact)
            ).long()
        )
        large = large.clamp_max(half - 1)
        return sign_offset + torch.where(n < max_exact, n, large)

    def forward(self, frames: int, device) -> torch.Tensor:
        pos = torch.arange(frames, device=device)
        rel = pos[None, :] - pos[:, None]  # (f_query, f_key): j − i
        return rearrange(self.bias(self.bucket(rel)), "i j m -> m i j")


class TemporalAttention(_SelfAttention):
    """Self-attention over the f frames at each spatial position (h·w as batch), with a relative
    position bias and an optional boolean mask (b, f, f) or (f, f), True where attention is allowed:
    `forward(x, frames, mask=None)`."""

    def __init__(
        self,
        channels: int,
        head_dim: int = 64,
        num_buckets: int = 32,
        max_distance: int = 64,
        recompute: bool = False,
        rel_pos_init: str = "normal",
    ):
        super().__init__(channels, head_dim, recompute)
        self.rel_pos = RelativePositionBias(self.heads, num_buckets, max_distance, rel_pos_init)

    def branch(self, x: torch.Tensor, frames: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bf, c, h, w = x.shape
        tokens = rearrange(self.norm(x), "(b f) c h w -> b (h w) f c", f=frames)
        q, k, v = rearrange(self.qkv(tokens), "b p f (three m d) -> three b p m f d", three=3, m=self.heads)
        bias = self.rel_pos(frames, x.device).to(q.dtype)  # m f f
        if mask is not None:
            neg = torch.zeros(mask.shape, dtype=q.dtype, device=x.device).masked_fill(~mask, float("-inf"))
            bias = bias + (neg[:, None, None] if neg.ndim == 3 else neg)  # (b, 1, 1, f, f) or (f, f)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # b (h w) heads f d
        a = self.out(rearrange(a, "b p m f d -> b p f (m d)"))
        return rearrange(a, "b (h w) f c -> (b f) c h w", h=h, w=w)


class Downsample(nn.Module):
    """Halves h and w (never f) with a stride-2 1×3×3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


# Nearest-neighbour ×2 followed by a 3-tap kernel (w₀, w₁, w₂), seen from the low-resolution input:
# even outputs 2i read x[i−1]·w₀ + x[i]·(w₁ + w₂), odd outputs 2i+1 read x[i]·(w₀ + w₁) + x[i+1]·w₂.
# That is a stride-2 transposed convolution (padding 1) with the 4-tap kernel (w₂, w₁+w₂, w₀+w₁, w₀) = M w.
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))  # M: 4×3


class Upsample(nn.Module):
    """Doubles h and w (never f): nearest neighbour, then a 1×3×3 convolution. Computed exactly as one
    stride-2 transposed 4×4 convolution of the low-resolution input (kernel M w Mᵀ), which costs 16
    instead of 4·9 = 36 multiply-adds per input pixel and channel pair and never builds the enlarged
    input; the parameters are the 3×3 convolution's. `fused = False` computes it literally."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.fused = True

    def forward(self, x):
        if not self.fused:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        w = self.conv.weight  # k c 3 3
        m = torch.tensor(_UPSAMPLE_TAPS, dtype=w.dtype, device=w.device)
        w4 = torch.einsum("ai,kcij,bj->ckab", m, w, m)  # c k 4 4 (conv_transpose2d takes in, out, kh, kw)
        return F.conv_transpose2d(x, w4, self.conv.bias, stride=2, padding=1)


def joint_attention_mask(video_frames: int, image_frames: int, device=None) -> torch.Tensor:
    """Temporal mask for joint image-video training (§3.2): the first `video_frames` attend among
    themselves, each of the `image_frames` appended images only to itself. (f, f), True = allowed."""
    f = video_frames + image_frames
    mask = torch.eye(f, dtype=torch.bool, device=device)
    mask[:video_frames, :video_frames] = True
    return mask
