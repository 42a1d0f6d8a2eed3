"""The paper's evaluation protocols (§4.2, §4.3): generate the way the published numbers were made and
compute FVD on the I3D logits of the 16-frame clips, so that a number can sit next to the paper's.

- ``bair`` (BAIR robot pushing 64×64, the paper's Table 3): each of the 256 test trajectories gives its
  first frame; 15 frames are predicted (reconstruction guidance at the model's w_r); 100 samples per
  test trajectory (25,600 clips) against the 256 real 16-frame clips. This is the protocol of the
  video-prediction literature the paper compares with: Weissenborn, Täckström & Uszkoreit 2020
  ("Scaling Autoregressive Video Models", §4.1), followed by Ho et al. 2022 §4.3.
- ``kinetics600`` (64×64, the paper's Table 4): 5 frames given, 11 predicted, one sample per test clip,
  50,000 generated clips in all (the test clips taken in turn), against the test clips.
- ``ucf101`` (16×64×64 unconditional, the paper's Table 2, there with FID/IS of C3D features): 2,048
  generated clips against 2,048 clips of the training split.

A smaller ``num`` (generated clips) is allowed and recorded as such. Everything is resumable: the
generated clips are made in parts of ``batch_size``, each part's I3D logits saved in ``out/parts/`` as it
is done (a killed run continues with the next part), and the real clips' logits in ``out/real.npz``.
Parts are spread over torchrun's processes (:func:`vidiff.spread.map_ordered`); sample i uses seed
``seed + i``, so the clips do not depend on the number of processes or on where a run was resumed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vidiff import spread
from vidiff.errors import ConfigError, DataError
from vidiff.io.files import atomic_write, save_npz
from vidiff.request import SampleRequest

__all__ = ["PROTOCOLS", "Protocol", "run_protocol"]


@dataclass(frozen=True)
class Protocol:
    """How one published number was made."""

    name: str
    follows: str  # where the protocol comes from
    frames: int  # frames of each clip in the FVD
    size: int
    context: int  # frames given (0: unconditional generation)
    samples_per_clip: int  # generated clips per real clip given as context
    num_clips: Optional[int]  # real test clips used (None: all of the data)
    num_fake: int  # generated clips in all, at the protocol's own size
    real_split: str  # which split the real clips come from (what --data should hold)


PROTOCOLS = {
    "bair": Protocol(
        "bair",
        "Weissenborn et al. 2020 §4.1 (Scaling Autoregressive Video Models), as in Ho et al. 2022 §4.3, Table 3",
        frames=16,
        size=64,
        context=1,
        samples_per_clip=100,
        num_clips=256,
        num_fake=25_600,
        real_split="test",
    ),
    "kinetics600": Protocol(
        "kinetics600",
        "Ho et al. 2022 §4.3, Table 4 (Kinetics-600 prediction, 5 → 11 frames)",
        frames=16,
        size=64,
        context=5,
        samples_per_clip=1,
        num_clips=None,
        num_fake=50_000,
        real_split="test",
    ),
    "ucf101": Protocol(
        "ucf101",
        "Ho et al. 2022 §4.2, Table 2 (UCF-101 unconditional 16×64×64); FVD of 2,048 clips as in StyleGAN-V",
        frames=16,
        size=64,
        context=0,
        samples_per_clip=1,
        num_clips=2048,
        num_fake=2048,
        real_split="train",
    ),
}


def _real_clips(data: str, protocol: Protocol) -> torch.Tensor:
    """The real clips of the protocol: the first ``frames`` frames of the prepared clips (uint8 b f h w c)."""
    from vidiff.data.shards import ShardDataset, load_index

    index, _ = load_index(data)
    if index["frames"] < protocol.frames or list(index["size"]) != [protocol.size, protocol.size]:
        raise DataError(
            f"{data}: the {protocol.name} protocol needs clips of at least {protocol.frames} frames of "
            f"{protocol.size}×{protocol.size}, these are {index['frames']} of {index['size']}; prepare the "
            f"{protocol.real_split} split with --frames {protocol.frames} --size {protocol.size}"
        )
    ds = ShardDataset(data, index["frames"], tuple(index["size"]))
    n = len(ds) if protocol.num_clips is None else min(len(ds), protocol.num_clips)
    if protocol.num_clips and len(ds) < protocol.num_clips:
        import logging

        logging.getLogger("vidiff").warning(
            "%s holds %d clips; the %s protocol takes %d", data, len(ds), protocol.name, protocol.num_clips
        )
    clips = [((ds[i]["video"][:, : protocol.frames] + 1) * 127.5).round().to(torch.uint8) for i in range(n)]
    return torch.stack(clips).permute(0, 2, 3, 4, 1)  # (b c f h w) -> (b f h w c)


def _features(videos, i3d_weights, batch_size: int) -> np.ndarray:
    from vidiff.metrics.fvd import extract_i3d_features

    return extract_i3d_features(videos, batch_size=batch_size, i3d_weights=i3d_weights, progress=False)


def _generate(
    model, protocol: Protocol, real: torch.Tensor, start: int, count: int, seed: int, request: SampleRequest
) -> torch.Tensor:
    """Generated clips ``start .. start+count`` (float b c f h w): clip g continues real clip
    g // samples_per_clip (taken in turn), or is drawn unconditionally."""
    if protocol.context == 0:
        return model.sample(count, request, frames=protocol.frames, seed=seed + start, batch_size=count)
    from vidiff.tasks import predict

    which = [(g // protocol.samples_per_clip) % len(real) for g in range(start, start + count)]
    context = real[which, : protocol.context].permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (b c k h w)
    context = context.to(next(model.parameters()).device)
    return predict(model, context, protocol.frames, request=request, seed=seed + start)


def _part(folder: Path, model, protocol, real, part, seed, request, i3d_weights, batch_size) -> np.ndarray:
    """The I3D logits of one part of the generated clips: read back when a run already made it."""
    start, count = part
    path = folder / f"part_{start:09d}_{count:05d}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["feats"]
    with spread.alone():  # this process's part: nothing inside waits for the others
        videos = _generate(model, protocol, real, start, count, seed, request).clamp(-1, 1).cpu()
        feats = _features(videos, i3d_weights, batch_size)

    save_npz(path, feats=feats)
    return feats


def _stamp(path) -> str:
    """A file or folder as it is now: its path, size and modification time (a retrained checkpoint differs)."""
    if path is None or not Path(str(path)).exists():
        return str(path)
    files = [Path(path)] if Path(path).is_file() else sorted(Path(path).rglob("*.safetensors"))
    return ";".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def _request_key(request: SampleRequest) -> dict:
    """The request's fields that change the clips (the seed is the protocol's own)."""
    return {k: v for k, v in asdict(request).items() if k != "seed" and v is not None}


def _settings_key(protocol, checkpoint, data, num, seed, request, use_ema, i3d_weights) -> str:
    key = {
        "protocol": protocol.name,
        "checkpoint": _stamp(checkpoint),
        "data": data,
        "num": num,
        "seed": seed,
        "request": _request_key(request),
        "ema": use_ema,
        "i3d": _stamp(i3d_weights),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_protocol(
    name: str,
    checkpoint,
    data: str,
    out,
    *,
    num: Optional[int] = None,
    seed: int = 0,
    batch_size: int = 16,
    i3d_weights=None,
    request: Optional[SampleRequest] = None,
    use_ema: bool = True,
) -> dict:
    """Run protocol ``name`` for the model at ``checkpoint`` with the prepared clips ``data`` of the
    protocol's real split; the working files and ``report.json`` go to the folder ``out``. Returns the report."""
    from vidiff.metrics.frechet import frechet_distance_from_feats
    from vidiff.pipeline import VideoDiffusion

    if name not in PROTOCOLS:
        raise ConfigError(f"--protocol {name}: the protocols are {', '.join(PROTOCOLS)}")
    protocol, request = PROTOCOLS[name], SampleRequest.of(request)
    if num is not None and num < 2:
        raise ConfigError(f"--num-videos {num}: an FVD needs at least 2 generated clips")
    model = VideoDiffusion.from_pretrained(checkpoint, use_ema=use_ema, device=spread.local_device())
    window = model.config.data
    if (window.frames, window.size) != (protocol.frames, protocol.size):
        raise ConfigError(
            f"{checkpoint}: the {name} protocol generates {protocol.frames}×{protocol.size}×"
            f"{protocol.size} clips; this model's window is {window.frames}×{window.size}×{window.size}"
        )
    out = Path(out)
    parts_folder = out / "parts" / _settings_key(protocol, checkpoint, data, num, seed, request, use_ema, i3d_weights)
    parts_folder.mkdir(parents=True, exist_ok=True)
    real = _real_clips(data, protocol)
    real_feats = _real_features(out, data, real, i3d_weights, batch_size)
    total = num or protocol.num_fake
    parts = spread.chunks(total, batch_size)
    feats = spread.map_ordered(
        parts, lambda p: _part(parts_folder, model, protocol, real, p, seed, request, i3d_weights, batch_size)
    )
    fake_feats = np.concatenate(feats)
    report = {
        "protocol": name,
        "fvd": frechet_distance_from_feats(real_feats, fake_feats),
        "settings": _describe(protocol, model, real, total, request, seed, checkpoint, data),
    }
    if spread.is_main():
        atomic_write(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _real_features(out: Path, data: str, real: torch.Tensor, i3d_weights, batch_size: int) -> np.ndarray:
    digest = hashlib.sha256(real.numpy().tobytes() + _stamp(i3d_weights).encode()).hexdigest()[:16]
    path = out / f"real-{digest}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["feats"]
    feats = _features(real, i3d_weights, batch_size)
    if spread.is_main():
        save_npz(path, feats=feats)
    return feats


def _describe(
    protocol: Protocol, model, real: torch.Tensor, total: int, request: SampleRequest, seed: int, checkpoint, data
) -> dict:
    """What the report says about how the number was made."""
    call = model.sampling(request)
    method = request.method if protocol.context else "unconditional"
    return {
        **asdict(protocol),
        "num_fake": total,
        "num_real": len(real),
        "reduced": total < protocol.num_fake,
        "protocol_num_fake": protocol.num_fake,
        "predicted_frames": protocol.frames - protocol.context,
        "method": method,
        "reconstruction_weight": call.reconstruction_weight if protocol.context else None,
        "sampler": call.name,
        "sampler_options": call.options,
        "steps": call.steps,
        "seed": seed,
        "checkpoint": Path(str(checkpoint)).name,
        "data": Path(data).name,
        "fvd_features": "I3D (Kinetics-400) logits of each 16-frame clip, bilinear to 224×224, RGB in [−1, 1]",
    }
