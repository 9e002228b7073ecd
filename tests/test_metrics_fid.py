"""Fréchet distance, streamed statistics, KID and the real-set statistics cache."""

import numpy as np
import pytest
import scipy.linalg
import torch

from atelier.metrics.fid import FeatureStats, frechet_distance, kernel_inception_distance, stats_cache_path

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _features(n, dim, seed, shift=0.0):
    mixing = np.random.default_rng(123).normal(size=(dim, dim)) / np.sqrt(dim)  # one distribution for all seeds
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, dim)) @ mixing + shift).astype(np.float32)


def _direct_fid(a, b):
    """The textbook formula with scipy's sqrtm, written out independently."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root.real))


def test_frechet_distance_equals_direct_sqrtm_and_eigh_agrees():
    a, b = _features(400, 32, 0).astype(np.float64), _features(300, 32, 1, shift=0.3).astype(np.float64)
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    expected = _direct_fid(a, b)
    assert abs(frechet_distance(*args) - expected) < 1e-8 * max(1, expected)
    assert abs(frechet_distance(*args, method="eigh") - expected) < 1e-7 * max(1, expected)


def test_streamed_statistics_equal_numpy_and_self_fid_is_zero():
    features = _features(257, 48, 2)
    stats = FeatureStats(dim=48)
    for start in range(0, 257, 50):
        stats.add(torch.from_numpy(features[start : start + 50]))
    mu, sigma = stats.mean_cov()
    assert np.allclose(mu, features.astype(np.float64).mean(0), atol=1e-12)
    assert np.allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), atol=1e-10)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert abs(frechet_distance(mu, sigma, mu, sigma, method="eigh")) < 1e-6


def test_reservoir_is_bounded_and_keeps_small_sets_whole():
    features = _features(500, 8, 3)
    stats = FeatureStats(dim=8, kid_capacity=100, seed=0)
    for start in range(0, 500, 64):
        stats.add(torch.from_numpy(features[start : start + 64]))
    assert stats.reservoir.shape == (100, 8) and stats.count == 500
    assert len({row.tobytes() for row in stats.reservoir}) == 100
    assert {row.tobytes() for row in stats.reservoir} <= {row.tobytes() for row in features}
    small = FeatureStats(dim=8, kid_capacity=1000)
    small.add(torch.from_numpy(features[:30]))
    assert np.array_equal(small.reservoir, features[:30])


def test_kid_sanity_and_equals_direct_unbiased_mmd():
    same1, same2 = _features(300, 16, 4), _features(300, 16, 5)
    shifted = _features(300, 16, 6, shift=1.0)
    kid_same, _ = kernel_inception_distance(same1, same2, subsets=20, subset_size=200)
    kid_shift, _ = kernel_inception_distance(same1, shifted, subsets=20, subset_size=200)
    assert abs(kid_same) < 0.02 and kid_shift > 10 * abs(kid_same) + 0.05
    # one subset covering both sets: the estimator is the unbiased MMD^2 with kernel (x.y/d + 1)^3
    x, y = same1[:50].astype(np.float64), shifted[:50].astype(np.float64)

    def kernel(a, b):
        return (a @ b.T / 16 + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    direct = (kxx.sum() - np.trace(kxx)) / (50 * 49) + (kyy.sum() - np.trace(kyy)) / (50 * 49) - 2 * kxy.mean()
    value, _ = kernel_inception_distance(x, y, subsets=1, subset_size=50)
    assert abs(value - direct) < 1e-9


def test_statistics_round_trip_and_cache_key_follows_the_files(tmp_path):
    stats = FeatureStats(dim=8, kid_capacity=10)
    stats.add(torch.from_numpy(_features(40, 8, 7)))
    path = tmp_path / "s.npz"
    stats.save(path)
    loaded = FeatureStats.load(path)
    assert loaded.count == 40 and np.allclose(loaded.mean_cov()[1], stats.mean_cov()[1])
    files = []
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
        files.append(tmp_path / name)
    identity = {"protocol": "cfld", "key": "fid", "size": [256, 176]}
    first = stats_cache_path(files, identity)
    assert first == stats_cache_path(list(reversed(files)), identity)
    assert first.parent.name == "stats" and first.name.startswith("cfld-fid-")
    assert stats_cache_path(files, {**identity, "size": [512, 352]}) != first
    (tmp_path / "b.png").write_bytes(b"changed")
    assert stats_cache_path(files, identity) != first
