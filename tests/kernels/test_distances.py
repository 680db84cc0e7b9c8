"""The per-row distance kernel against plain Python on random inputs, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segmint.kernels.distances import nearest_distances


def _reference(x, c, idx):
    """Row by row, in Python floats (float64), summed in feature order."""
    dist, margin = [], []
    for i in range(x.shape[0]):
        ds = [math.sqrt(sum((float(x[i, f]) - float(c[j, f])) ** 2 for f in range(x.shape[1]))) for j in idx[i]]
        first = np.float32(ds[0])
        dist.append(first)
        margin.append(np.float32(ds[1]) - first if len(ds) == 2 else np.float32(np.inf))
    return np.array(dist, np.float32), np.array(margin, np.float32)


@pytest.mark.parametrize(("n", "k", "d", "m"), [(0, 3, 4, 2), (1, 1, 1, 1), (257, 5, 10, 2), (64, 2, 3, 1),
                                                 (100, 7, 1, 2)])
def test_nearest_distances_match_plain_python(n, k, d, m):
    rng = np.random.default_rng(n + k + d)
    x = (rng.standard_normal((n, d)) * 10 ** rng.uniform(-3, 3, (n, 1))).astype(np.float32)
    c = rng.standard_normal((k, d))
    idx = np.stack([rng.permutation(k)[:m] for _ in range(n)]) if n else np.empty((0, m), np.int64)
    x[: min(n, 3)] = c[idx[: min(n, 3), 0]].astype(np.float32)   # rows on (float32 of) their centroid
    dist = np.full(n, -1, np.float32)
    margin = np.full(n, np.inf, np.float32)
    nearest_distances(x, c, idx.astype(np.int64), dist, margin)
    want_dist, want_margin = _reference(x, c, idx)
    np.testing.assert_array_equal(dist, want_dist)
    np.testing.assert_array_equal(margin, want_margin)
