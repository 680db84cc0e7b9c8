"""Greedy k-means++ kernel against the NumPy reference fed the same random numbers."""

import numpy as np
import pytest

from segmint.kernels.kmeanspp import kmeanspp_greedy
from tests.reference import kmeanspp_greedy_ref


@pytest.mark.parametrize(("n", "d", "k", "dtype", "ties"), [
    (500, 3, 8, np.float32, False), (2000, 10, 16, np.float32, False), (50, 2, 50, np.float32, False),
    (10, 4, 1, np.float32, False), (4096, 16, 64, np.float32, False), (300, 1, 20, np.float64, False),
    (1000, 5, 12, np.float64, True), (64, 3, 64, np.float32, True)])
def test_kmeanspp_matches_reference(n, d, k, dtype, ties):
    rng = np.random.default_rng(n + k)
    x = rng.lognormal(0, 1, (n, d)).astype(dtype)
    if ties:   # repeated points: equal distances and candidates drawn twice
        x[::3] = x[1]
    uniforms = rng.random((max(k - 1, 0), 2 + int(np.log(k))))
    idx = np.empty(k, np.int64)
    kmeanspp_greedy(x, 3, uniforms, idx)
    np.testing.assert_array_equal(idx, kmeanspp_greedy_ref(x, 3, uniforms, k))


def test_kmeanspp_picks_distinct_points_of_planted_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    x = (centers[rng.integers(0, 4, 4000)] + rng.normal(0, 1, (4000, 2))).astype(np.float32)
    idx = np.empty(4, np.int64)
    kmeanspp_greedy(x, 0, rng.random((3, 3)), idx)
    nearest = np.argmin(((x[idx][:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]
