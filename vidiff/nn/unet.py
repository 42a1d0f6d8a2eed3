"""The factorized space-time 3D UNet of the paper (§3, Figure 1).

A 2D image UNet made 3D: space-only 1×3×3 convolutions, a spatial attention block followed by a
temporal attention block (relative position bias) at chosen levels, resolution halved/doubled in
space only, channel multipliers M₁…M_K, skip connections, and a conditioning embedding (log-SNR plus
an optional class or pooled-text vector, through an MLP) into every residual block. Beyond the paper,
`text_cross_attention` adds cross-attention from every pixel to the caption's tokens, and
`vidiff.nn.extensions` gives each frame its own time in the embedding (one hook: `UNet3D.embedding`).
Input and output: `b c f h w`, any f ≥ 1.

Weights are named by place: `down.1.block0.res.conv1.weight` is the first block of the second
resolution on the way down, `middle.block1.temporal.qkv.weight`, `up.0.upsample.conv.weight`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidiff.errors import ConfigError
from vidiff.nn.extensions import build_extensions
from vidiff.nn.layers import (
    REL_POS_INITS,
    CrossAttention,
    Downsample,
    ResBlock,
    SpatialAttention,
    TemporalAttention,
    Upsample,
    group_norm,
    logsnr_features,
    zero_init,
)


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3
    base_channels: int = 64
    channel_mults: tuple = (1, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple = (1, 2)  # indices into channel_mults that get spatial + temporal attention
    head_dim: int = 64
    dropout: float = 0.0
    emb_dim: int = 256  # conditioning embedding width (paper: 1024)
    cond_mlp_layers: int = 2  # paper: 4 (UCF-101) or 2 (BAIR, Kinetics)
    num_classes: int = 0  # 0: no class conditioning
    text_dim: int = 0  # 0: no text conditioning; else the text encoder's token width
    text_pool_heads: int = 4
    text_cross_attention: bool = False  # beyond the paper: pixels also attend to the text tokens
    temporal_attention: bool = True
    rel_pos_buckets: int = 32
    rel_pos_max_distance: int = 64
    rel_pos_init: str = "normal"  # "normal" (N(0, 1), as T5) | "zeros" (vidiff.nn.layers.RelativePositionBias)
    frame_index_embedding: bool = False  # beyond the paper (nn/extensions.py): the frame index joins its embedding
    frame_condition_product: bool = False  # beyond the paper: the frame index times the clip's condition
    gradient_checkpointing: bool = False
    recompute_norms: bool = True  # store less: GroupNorm(+FiLM)+SiLU recomputed in the backward pass
    recompute_attention: bool = False  # store less: attention blocks recomputed in the backward pass

    def __post_init__(self):
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        problems = self.problems()
        if problems:
            raise ConfigError("invalid model configuration: " + "; ".join(problems))

    def problems(self) -> list:
        """What the network could not be built from (or train with), each naming its model.* setting."""
        problems = []
        if self.base_channels < 4 or self.base_channels % 4:
            problems.append(f"model.base_channels must be a positive multiple of 4, got {self.base_channels}")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            problems.append(f"model.channel_mults must be positive integers, got {self.channel_mults}")
        bad = [i for i in self.attention_levels if not 0 <= i < len(self.channel_mults)]
        if bad:
            problems.append(f"model.attention_levels {bad} out of range for {len(self.channel_mults)} levels")
        for key in ("in_channels", "num_res_blocks", "cond_mlp_layers", "head_dim", "emb_dim", "text_pool_heads"):
            if getattr(self, key) < 1:
                problems.append(f"model.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_classes", "text_dim"):  # filled in from the data; a config file may say anything
            if getattr(self, key) < 0:
                problems.append(f"model.{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.dropout < 1:
            problems.append(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.frame_condition_product and not self.frame_index_embedding:
            problems.append(
                "model.frame_condition_product needs frame_index_embedding: set model.frame_index_embedding=true"
            )
        if self.rel_pos_init not in REL_POS_INITS:
            problems.append(f"model.rel_pos_init must be one of {list(REL_POS_INITS)}, got {self.rel_pos_init!r}")
        if self.rel_pos_buckets < 4 or self.rel_pos_max_distance <= self.rel_pos_buckets // 4:
            problems.append(
                f"model.rel_pos_buckets must be >= 4 and model.rel_pos_max_distance above a quarter of "
                f"it, got {self.rel_pos_buckets} and {self.rel_pos_max_distance}"
            )
        if self.text_dim > 0 and self.text_pool_heads > 0 and self.text_dim % self.text_pool_heads:
            problems.append(f"model.text_pool_heads={self.text_pool_heads} must divide the text width {self.text_dim}")
        return problems or self._width_problems()

    def _width_problems(self) -> list:
        """Widths that GroupNorm (groups of 4 channels, at most 32 groups) or the attention heads cannot split."""
        down, middle, up = level_channels(self)
        widths = sorted({c for in_chs, out_ch in (*down, middle, *up.values()) for c in (*in_chs, out_ch)})
        problems = [
            f"model.base_channels={self.base_channels} with channel_mults={self.channel_mults} gives {c} "
            f"channels, which GroupNorm cannot split into {min(32, c // 4)} groups; use a base_channels "
            f"that is a multiple of 32"
            for c in widths
            if c % min(32, c // 4)
        ][:1]
        attended = sorted({down[i][1] for i in self.attention_levels} | {middle[1]})
        problems += [
            f"model.head_dim={self.head_dim} splits {c} channels into {c // self.head_dim} heads unevenly; "
            f"choose a head_dim that divides the attention widths {attended}"
            for c in attended
            if c % max(1, c // self.head_dim)
        ][:1]
        return problems

    def condition_problems(self) -> list:
        """What the network needs of its condition, known once the data has filled in num_classes and
        text_dim (before that, vidiff.config.validate checks the same against conditioning.kind)."""
        problems = []
        if self.frame_condition_product and not (self.num_classes or self.text_dim):
            problems.append(
                "model.frame_condition_product multiplies time by the clip's class or caption: it needs "
                "a class- or text-conditional model (conditioning.kind=class or text)"
            )
        if self.text_cross_attention and self.text_dim <= 0:
            problems.append(
                "model.text_cross_attention attends to caption tokens: it needs a text-conditional "
                "model (conditioning.kind=text)"
            )
        return problems

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown UNet config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


# The order in which the optimizer and the gradient clip see the parameters (the clip sums their norms
# in it, so it decides the last bit of every clipped step): vidiff 0.1.0's, so that a seed trains to
# the same losses and an optimizer state saved by position loads as it is. The top-level modules in
# this order; in each level, the residual part of every block, then the spatial attention of every
# block, and so on (BLOCK_PARTS), then the level's downsample or upsample.
PARAMETER_ORDER = (
    "logsnr_embed",
    "cond_mlp",
    "class_embed",
    "frame_embed",
    "frame_time",
    "frame_mix",
    "text_pool",
    "time_pool",
    "text_norm",
    "stem",
    "down",
    "middle",
    "up",
    "out_norm",
    "out_conv",
)
BLOCK_PARTS = ("res", "spatial", "temporal", "cross")


def parameter_place(name: str) -> tuple:
    """Where the parameter `name` (as UNet3D names it) stands in PARAMETER_ORDER, up to the order inside
    one layer."""
    parts = name.split(".")
    if parts[0] == "extensions":
        parts = parts[1:]
    top = PARAMETER_ORDER.index(parts[0])
    if parts[0] in ("down", "up"):  # the up path runs from the lowest resolution (the highest index)
        level, parts = int(parts[1]) * (1 if parts[0] == "down" else -1), parts[2:]
    elif parts[0] == "middle":
        level, parts = 0, parts[1:]
    else:
        return top, 0, 0, 0
    if not parts[0].startswith("block"):
        return top, level, len(BLOCK_PARTS), 0
    return top, level, BLOCK_PARTS.index(parts[1]), int(parts[0][len("block") :])


def level_channels(cfg: UNetConfig) -> tuple:
    """The channels of every level in build order: (down levels, the middle, up levels by index), each
    (the input width of each residual block, the output width). An up block's input is the previous
    block's output and its skip connection."""
    chans = [cfg.base_channels * m for m in cfg.channel_mults]
    down, skips, ch = [], [cfg.base_channels], cfg.base_channels
    for i, out_ch in enumerate(chans):
        down.append(([ch] + [out_ch] * (cfg.num_res_blocks - 1), out_ch))
        skips += [out_ch] * (cfg.num_res_blocks + (i < len(chans) - 1))  # the downsampled output is a skip too
        ch = out_ch
    middle = ([ch, ch], ch)
    up = {}
    for i in reversed(range(len(chans))):
        in_chs = []
        for _ in range(cfg.num_res_blocks + 1):
            in_chs.append(ch + skips.pop())
            ch = chans[i]
        up[i] = (in_chs, chans[i])
    return down, middle, up


class Block(nn.Module):
    """A residual block, then (at attention levels) spatial attention, cross-attention to the caption's
    tokens (`text_cross_attention`) and temporal attention: `(b f) c h w` in and out."""

    def __init__(self, res: ResBlock, spatial=None, cross=None, temporal=None):
        super().__init__()
        self.res, self.spatial, self.cross, self.temporal = res, spatial, cross, temporal

    def forward(self, x, emb, frames: int, mask=None, context=None, context_mask=None):
        x = self.res(x, emb)
        if self.spatial is not None:
            x = self.spatial(x)
        if self.cross is not None:
            x = self.cross(x, frames, context, context_mask)
        if self.temporal is not None:
            x = self.temporal(x, frames, mask)
        return x


def level_blocks(in_chs: list, out_ch: int, emb_dim: int, cfg: UNetConfig, attention: bool) -> list:
    """The blocks of one resolution, one per input width. Built kind by kind (every residual block,
    then every attention block of each kind), the order in which a seed has always drawn the weights."""
    n, r = len(in_chs), cfg.recompute_attention
    res = [ResBlock(c, out_ch, emb_dim, cfg.dropout, cfg.recompute_norms) for c in in_chs]
    spatial = [SpatialAttention(out_ch, cfg.head_dim, r) for _ in in_chs] if attention else [None] * n
    temporal = (
        [
            TemporalAttention(out_ch, cfg.head_dim, cfg.rel_pos_buckets, cfg.rel_pos_max_distance, r, cfg.rel_pos_init)
            for _ in in_chs
        ]
        if attention and cfg.temporal_attention
        else [None] * n
    )
    cross = (
        [CrossAttention(out_ch, cfg.text_dim, cfg.head_dim) for _ in in_chs]
        if attention and cfg.text_cross_attention
        else [None] * n
    )
    return [Block(*parts) for parts in zip(res, spatial, cross, temporal)]


class Level(nn.ModuleDict):
    """The blocks of one resolution, `block0`, `block1`, …, then its `downsample` or `upsample`, if any."""

    def __init__(self, blocks: list, resample: Optional[nn.Module] = None, name: str = ""):
        super().__init__({f"block{j}": b for j, b in enumerate(blocks)})
        if resample is not None:
            self[name] = resample

    def blocks(self) -> list:
        return [m for name, m in self.items() if name.startswith("block")]

    def resample(self) -> Optional[nn.Module]:
        return next((m for name, m in self.items() if not name.startswith("block")), None)


class UNet3D(nn.Module):
    """`UNet3D(cfg)(x, logsnr, class_labels=None, text_tokens=None, text_mask=None, temporal_mask=None)`.

    x: (b, c, f, h, w); logsnr: (b,). class_labels: (b,) long, where −1 or num_classes is the null
    class (classifier-free guidance). text_tokens (b, n, text_dim) with text_mask (b, n) bool; an
    all-False row is the null text. temporal_mask: (f, f) or (b, f, f) bool, True where frame i may
    attend to frame j. Returns the raw network output, same shape as x."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        problems = cfg.condition_problems()
        if problems:
            raise ConfigError("invalid model configuration: " + "; ".join(problems))
        self.cfg = cfg
        base, e = cfg.base_channels, cfg.emb_dim
        self.logsnr_embed = nn.Linear(base, e)
        mlp = []
        for _ in range(cfg.cond_mlp_layers):
            mlp += [nn.SiLU(), nn.Linear(e, e)]
        self.cond_mlp = nn.Sequential(*mlp)
        self.class_embed = nn.Embedding(cfg.num_classes + 1, e) if cfg.num_classes > 0 else None
        self.extensions = build_extensions(cfg)  # beyond the paper; None for the paper's network
        self.text_pool = None
        if cfg.text_dim > 0:
            from vidiff.nn.pooling import AttentionPool

            self.text_pool = AttentionPool(cfg.text_dim, e, heads=cfg.text_pool_heads)
        if cfg.text_cross_attention:
            self.text_norm = nn.LayerNorm(cfg.text_dim)

        self.stem = nn.Conv2d(cfg.in_channels, base, 3, padding=1)
        down, middle, up = level_channels(cfg)
        self.down = nn.ModuleDict()
        for i, (in_chs, out_ch) in enumerate(down):
            last = i == len(down) - 1
            self.down[str(i)] = Level(
                level_blocks(in_chs, out_ch, e, cfg, i in cfg.attention_levels),
                None if last else Downsample(out_ch),
                "downsample",
            )
        self.middle = Level(level_blocks(*middle, e, cfg, attention=True))
        self.up = nn.ModuleDict()
        for i, (in_chs, out_ch) in up.items():
            self.up[str(i)] = Level(
                level_blocks(in_chs, out_ch, e, cfg, i in cfg.attention_levels),
                Upsample(out_ch) if i > 0 else None,
                "upsample",
            )
        ch = up[0][1]
        self.channels_last = True  # NHWC activations: faster oneDNN convolutions on CPU
        self.out_norm = group_norm(ch)
        self.out_conv = zero_init(nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """As nn.Module's (and so `parameters()`), in PARAMETER_ORDER rather than in the order of the names."""
        named = super().named_parameters(prefix, recurse, remove_duplicate)
        if not recurse:
            return named
        start = len(prefix) + 1 if prefix else 0
        return iter(sorted(named, key=lambda item: parameter_place(item[0][start:])))

    def embedding(
        self, logsnr, class_labels=None, text_tokens=None, text_mask=None, frames: int = 1, temporal_mask=None
    ) -> torch.Tensor:
        """The conditioning embedding of every frame, (b·frames, emb_dim)."""
        emb = self.logsnr_embed(logsnr_features(logsnr, self.cfg.base_channels))
        class_vector = self._class_vector(class_labels)
        cond = self._condition(class_vector, text_tokens, text_mask, emb.dtype)
        emb = emb if cond is None else emb + cond
        if self.extensions is None:  # the same for every frame: through the MLP once per clip
            return repeat(self.cond_mlp(emb), "b e -> (b f) e", f=frames)
        return self.cond_mlp(self.extensions(emb, frames, temporal_mask, class_vector, text_tokens, text_mask))

    def _class_vector(self, class_labels) -> Optional[torch.Tensor]:
        """Each clip's class embedding (b, emb_dim); None for a model without classes."""
        if self.class_embed is None:
            return None
        if class_labels is None:
            raise ValueError("this model is class-conditional: pass class_labels (−1 for the null class)")
        labels = torch.where(class_labels < 0, self.cfg.num_classes, class_labels).long()
        if labels.device.type == "cpu" and not torch.compiler.is_compiling() and labels.numel():
            # on an accelerator this would sync every forward: there the conditioning checks labels
            # where they enter (ClassConditioning.training / .request)
            if int(labels.max()) > self.cfg.num_classes:
                raise ValueError(f"class label {int(labels.max())} out of range for {self.cfg.num_classes} classes")
        return self.class_embed(labels)

    def _condition(self, class_vector, text_tokens, text_mask, dtype) -> Optional[torch.Tensor]:
        """The class and/or pooled text vector of each clip, (b, emb_dim); None when unconditional."""
        if self.text_pool is None:
            return class_vector
        if text_tokens is None:
            raise ValueError("this model is text-conditional: pass text_tokens and text_mask")
        pooled = self.text_pool(text_tokens.to(dtype), text_mask)
        return pooled if class_vector is None else class_vector + pooled

    def _run(self, block: Block, x, emb, frames, mask, context=None):
        ctx = context or (None, None)
        if self.cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, emb, frames, mask, *ctx, use_reentrant=False)
        return block(x, emb, frames, mask, *ctx)

    def text_context(self, text_tokens, text_mask):
        """(layer-normed tokens, mask) for the cross-attention blocks; None without them."""
        if not self.cfg.text_cross_attention:
            return None
        b, n = text_tokens.shape[:2]
        if text_mask is None:
            text_mask = torch.ones(b, n, dtype=torch.bool, device=text_tokens.device)
        tokens = self.text_norm(text_tokens.masked_fill(~text_mask[..., None], 0.0).to(self.text_norm.weight.dtype))
        return tokens, text_mask

    def forward(
        self,
        x: torch.Tensor,
        logsnr: torch.Tensor,
        class_labels=None,
        text_tokens=None,
        text_mask=None,
        temporal_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected a video batch (b, {self.cfg.in_channels}, f, h, w), got shape {tuple(x.shape)}")
        b, c, f, h, w = x.shape
        k = self.cfg.downsample_factor
        if h % k or w % k:
            raise ValueError(f"height and width must be divisible by {k} (2^(levels−1)) for this model, got {h}×{w}")
        if temporal_mask is not None and temporal_mask.shape[-2:] != (f, f):
            raise ValueError(f"temporal_mask must be (f, f) or (b, f, f) with f={f}, got {tuple(temporal_mask.shape)}")
        emb = self.embedding(logsnr.reshape(b), class_labels, text_tokens, text_mask, f, temporal_mask)
        context = self.text_context(text_tokens, text_mask)
        frames_in = rearrange(x, "b c f h w -> (b f) c h w")
        if self.channels_last:
            frames_in = frames_in.contiguous(memory_format=torch.channels_last)
        hcur = self.stem(frames_in)
        skips = [hcur]
        for level in self.down.values():
            for block in level.blocks():
                hcur = self._run(block, hcur, emb, f, temporal_mask, context)
                skips.append(hcur)
            if level.resample() is not None:
                hcur = level.resample()(hcur)
                skips.append(hcur)
        for block in self.middle.blocks():
            hcur = self._run(block, hcur, emb, f, temporal_mask, context)
        for level in self.up.values():
            for block in level.blocks():
                hcur = self._run(block, torch.cat([hcur, skips.pop()], dim=1), emb, f, temporal_mask, context)
            if level.resample() is not None:
                hcur = level.resample()(hcur)
        out = self.out_conv(F.silu(self.out_norm(hcur)))
        return rearrange(out, "(b f) c h w -> b c f h w", f=f)
