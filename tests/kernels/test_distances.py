"""The nearest-centroid kernel against plain Python on random inputs, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segmint.kernels.distances import nearest_centroids


def _reference(x, c):
    """Row by row, in Python floats (float64) summed in feature order; the first of equal distances wins."""
    seg, dist, margin = [], [], []
    for i in range(x.shape[0]):
        ds = [math.sqrt(sum((float(x[i, f]) - float(c[j, f])) ** 2 for f in range(x.shape[1])))
              for j in range(c.shape[0])]
        order = sorted((d, j) for j, d in enumerate(ds) if not math.isnan(d) and d != math.inf)
        if not order:   # as Faiss gave such rows: no centroid, a NaN distance
            seg.append(-1)
            dist.append(np.float32(np.nan))
            margin.append(np.float32(np.nan) if len(ds) > 1 else np.float32(np.inf))
            continue
        seg.append(order[0][1])
        first = np.float32(order[0][0])
        dist.append(first)
        second = order[1][0] if len(order) > 1 else math.inf
        margin.append(np.float32(second) - first if len(ds) > 1 else np.float32(np.inf))
    return np.array(seg, np.int32), np.array(dist, np.float32), np.array(margin, np.float32)


def _run(x, c):
    n = x.shape[0]
    seg, dist, margin = np.full(n, -7, np.int32), np.full(n, -1, np.float32), np.full(n, np.inf, np.float32)
    nearest_centroids(x, np.ascontiguousarray(c.T), seg, dist, margin)
    return seg, dist, margin


@pytest.mark.parametrize(("n", "k", "d"), [(0, 3, 4), (1, 1, 1), (3, 2, 3), (257, 5, 10), (64, 2, 3), (100, 7, 1),
                                           (1030, 70, 6), (513, 9, 8), (2, 1, 4)])
def test_nearest_centroids_match_plain_python(n, k, d):
    rng = np.random.default_rng(n + k + d)
    x = (rng.standard_normal((n, d)) * 10 ** rng.uniform(-3, 3, (n, 1))).astype(np.float32)
    c = rng.standard_normal((k, d))
    x[: min(n, 3)] = c[rng.integers(0, k, min(n, 3))].astype(np.float32)   # rows on (float32 of) a centroid
    for got, want in zip(_run(x, c), _reference(x, c), strict=True):
        np.testing.assert_array_equal(got, want)


def test_ties_go_to_the_lowest_centroid_and_nan_rows_to_none():
    c = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])   # centroids 0 and 3 coincide
    x = np.array([[0.0, 0.0], [2.0, 0.0], [np.nan, 0.0], [0.0, 3.0], [5.0, 5.0]], np.float32)
    seg, dist, margin = _run(x, c)
    assert seg.tolist() == [0, 0, -1, 2, 0]          # equidistant from 0, 1 and 3; 0 and 3 tie; NaN
    assert margin[1] == 0.0 and margin[0] == 0.0
    for got, want in zip((seg, dist, margin), _reference(x, c), strict=True):
        np.testing.assert_array_equal(got, want)


def test_rows_near_two_centroids_go_to_the_nearer_where_faiss_float32_swaps_them():
    # Rows halfway between two centroids: Faiss ranks them by |x|^2 + |c|^2 - 2 x.c in float32 and puts
    # some of them (5 here) in the farther one; the kernel's float64 sums put each in the nearer.
    import faiss

    rng = np.random.default_rng(5)
    c = rng.standard_normal((2, 10))
    x = ((c[0] + c[1]) / 2 + rng.standard_normal((20_000, 10)) * 1e-4).astype(np.float32)
    seg, dist, margin = _run(x, c)
    for got, want in zip((seg[:500], dist[:500], margin[:500]), _reference(x[:500], c), strict=True):
        np.testing.assert_array_equal(got, want)
    index = faiss.IndexFlatL2(10)
    index.add(c.astype(np.float32))
    swapped = np.flatnonzero(index.search(x, 1)[1][:, 0] != seg)
    assert swapped.size > 0
    exact = ((x[swapped].astype(np.float64)[:, None, :] - c[None]) ** 2).sum(-1)
    assert (exact[np.arange(swapped.size), seg[swapped]] < exact[np.arange(swapped.size), 1 - seg[swapped]]).all()
