"""InceptionV3 of FID (Heusel et al. 2017): the TF graph of 2015-12-05, in PyTorch.

Architecture as the FID-standard port (pytorch-fid's FIDInceptionA/C/E): torchvision's InceptionV3
layout (so its state-dict keys) with 1008 classes, no auxiliary head, and the TF graph's
differences: the average pools inside Inception blocks exclude padding, and the last block
(Mixed_7c) pools with max instead of average. Outputs the 2048-d pool features (FID, KID) and the
1008 logits (Inception Score).

Weights are never downloaded: pass a safetensors file or the state-dict file
`pt_inception-2015-12-05-6726825d.pth` (read with `torch.load(weights_only=True)`).
Input: images `n c h w` in [−1, 1], any size, resized to 299×299 (bilinear, align_corners=False,
antialias=False, as pytorch-fid).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidiff import spread
from vidiff.errors import MetricsError, MissingWeightsError
from vidiff.metrics.videos import as_float_videos, iter_batches

INCEPTION_SIZE = 299
INCEPTION_HINT = (
    "FID/IS/KID need the FID InceptionV3 weights, which cannot be downloaded here. On a machine with "
    "network, fetch pt_inception-2015-12-05-6726825d.pth from the pytorch-fid releases on GitHub "
    "(mseitzer/pytorch-fid, release 'fid_weights') and pass inception_weights=PATH "
    "(or --inception-weights PATH); a safetensors file with the same keys works too"
)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (ε = 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF: padding not counted


class InceptionA(nn.Module):
    """Mixed_5b/c/d: 1×1, 5×5, double 3×3, pool branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_no_pad(x))], dim=1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """Mixed_6b–e: factorised 7×7 (1×7 and 7×1) branches."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_no_pad(x))], dim=1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """Mixed_7b/c: expanded 3×3 branches (1×3 and 3×1 side by side). `max_pool` for Mixed_7c."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_no_pad(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pool)], dim=1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 of the TF 2015-12-05 graph. forward(images in [−1, 1]) -> (pool 2048, logits 1008)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise MetricsError(f"Inception expects images n c h w with c = 3, got {tuple(x.shape)}")
        if tuple(x.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (n, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)  # (n, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (n, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (n, 192, 35, 35)
        for name in (
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ):
            x = getattr(self, name)(x)  # (n, 2048, 8, 8) at the end
        pool = x.mean(dim=(2, 3))  # (n, 2048)
        return pool, self.fc(pool)  # (n, 2048), (n, 1008)


def _check_hash_in_name(path: Path) -> None:
    """Files named like torch hub's `name-<sha256 prefix>.pth` must match that prefix."""
    match = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", path.name)
    if match:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if not h.hexdigest().startswith(match.group(1)):
            raise MetricsError(f"{path}: sha256 {h.hexdigest()} does not start with {match.group(1)} (file damaged?)")


def load_inception_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a PyTorch state-dict file read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"Inception weights not found at {path}. {INCEPTION_HINT}")
    not_weights = (
        f"{path} is not FID InceptionV3 weights: {{}}; give pt_inception-2015-12-05-6726825d.pth or its "
        f"safetensors conversion"
    )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise MetricsError(not_weights.format(f"not a safetensors file ({e})")) from None
    _check_hash_in_name(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no arbitrary objects
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise MetricsError(
            not_weights.format(f"torch.load reads no state dict of tensors from it ({type(e).__name__})")
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricsError(not_weights.format("it does not hold a state dict of tensors"))
    return state


def load_inception(inception_weights: str | os.PathLike | None, device="cpu") -> FIDInceptionV3:
    """The FID InceptionV3 in eval mode with the given weights (see INCEPTION_HINT when absent)."""
    if inception_weights is None:
        raise MissingWeightsError(INCEPTION_HINT)
    model = FIDInceptionV3()
    missing, unexpected = model.load_state_dict(load_inception_state_dict(inception_weights), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # absent in old state dicts
    if missing or unexpected:
        raise MetricsError(
            f"{inception_weights} is not an FID InceptionV3 state dict: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval().requires_grad_(False).to(device)


@functools.lru_cache(maxsize=2)
def _cached_inception(path: str) -> FIDInceptionV3:
    return load_inception(path)


def get_inception(inception_weights: str | os.PathLike | None) -> FIDInceptionV3:
    """The FID InceptionV3 for a weight file, loaded once."""
    if inception_weights is None:
        raise MissingWeightsError(INCEPTION_HINT)
    return _cached_inception(str(Path(inception_weights).resolve()))


def inception_features(images: torch.Tensor, model: FIDInceptionV3) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool features `(n, 2048)`, logits `(n, 1008)`) of images `n c h w` in [−1, 1], float32."""
    with torch.inference_mode():
        pool, logits = model(images.float())
    return pool, logits


def extract_inception_features(
    source,
    inception_weights: str | os.PathLike | None = None,
    batch_size: int = 32,
    num: int | None = None,
    progress: bool = True,
    model: FIDInceptionV3 | None = None,
    desc: str = "Inception",
):
    """Frame-level Inception features of every frame of the first `num` videos of `source` (a video
    tensor, uint8 `b f h w c` or float `b c f h w` in [−1, 1], or an iterable of batches):
    (pool `(n·f, 2048)`, logits `(n·f, 1008)`) as float64 numpy arrays."""
    from tqdm.auto import tqdm

    model = get_inception(inception_weights) if model is None else model
    with tqdm(total=num, desc=desc, unit="clip", disable=not (progress and spread.is_main())) as bar:

        def features(item) -> tuple:
            clips, frames = item
            pool, logit = inception_features(frames, model)
            bar.update(clips * spread.world())
            return pool.double().numpy(), logit.double().numpy()

        def frame_chunks():
            for batch in iter_batches(source, num):
                frames = rearrange(as_float_videos(batch), "b c f h w -> (b f) c h w").split(batch_size)
                for i, chunk in enumerate(frames):
                    yield (len(batch) if i == 0 else 0), chunk

        results = spread.map_ordered(frame_chunks(), features)  # over torchrun's processes, if any
    pools, logits = [r[0] for r in results], [r[1] for r in results]
    if not pools:
        raise MetricsError("no videos to compute Inception features on")
    return np.concatenate(pools), np.concatenate(logits)  # (n·f, 2048), (n·f, 1008)
