"""Nearest centroid of each row by exact float64 distances, summed row by row: the same
labels and bits however the rows are batched, bucketed or threaded.

Faiss' flat search ranks centroids by float32 ``|x|^2 + |c|^2 - 2 x.c``, which can put the
second nearest first where two distances are within float32 rounding of each other: on
bench scenario M at k=64, one customer in 909,090 got a centroid 6e-8 farther than its
nearest and a negative margin. Summing the differences in float64 ranks them exactly, and it
is also faster than Faiss' BLAS search up to k=256 on 2 cores (bench/README.md).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["nearest_centroids"]

BLOCK = 256   # rows per parallel task: their float64 copy (d x 256 x 8 bytes) and sums stay in cache


@parallel
def nearest_centroids(x, centroids_t, segment, distance, margin):
    """Each row's nearest centroid, its Euclidean distance and the margin to the second nearest.

    A block of rows is copied feature-major in float64; then, two centroids at a time, their squared
    distances to the block's rows are summed, each row's sum feature by feature in feature order. The inner
    loop runs over the rows, which LLVM vectorises (bench/README.md, forty-eighth round: 909,090 rows x 10 at
    k=8 about 2.5x faster than summing four rows' distances to every centroid at a time, as before; k=64 a little
    faster; k=256 about as fast, 3-5% slower by the median at 10 features). Four features a pass rather than one
    is what keeps k=256 level with before.

    Parameters
    ----------
    x : float32[n, d]             # IN  rows
    centroids_t : float64[d, k]   # IN  centroids, transposed
    segment : int32[n]            # OUT nearest centroid (the lowest index among exact ties; -1 where
                                  #     every distance is NaN or infinite, as Faiss gave)
    distance : float32[n]         # OUT distance to it, summed in float64 in feature order (NaN for -1)
    margin : float32[n]           # OUT distance to the second nearest minus distance (float32);
                                  #     untouched if k == 1
    """
    n, d = x.shape
    k = centroids_t.shape[1]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        m = min(n, lo + BLOCK) - lo
        rows = np.empty((d, BLOCK))
        for i in range(m):
            for f in range(d):
                rows[f, i] = np.float64(x[lo + i, f])
        one = np.empty(BLOCK)
        other = np.empty(BLOCK)
        first = np.full(BLOCK, np.inf)    # each row's nearest squared distance so far, its centroid, the second's
        nearest = np.full(BLOCK, -1, np.int64)
        second = np.full(BLOCK, np.inf)
        for j in range(0, k, 2):
            pair = min(j + 1, k - 1)      # j itself where k is odd: summed twice, taken once
            _squares(rows, centroids_t, j, pair, m, one, other)
            _nearest_two(one, j, m, first, nearest, second)
            if pair > j:
                _nearest_two(other, pair, m, first, nearest, second)
        for i in range(m):
            segment[lo + i] = nearest[i]
            near = np.float32(np.sqrt(first[i])) if nearest[i] >= 0 else np.float32(np.nan)
            distance[lo + i] = near
            if k > 1:
                margin[lo + i] = np.float32(np.sqrt(second[i])) - near


@serial
def _squares(rows, centroids_t, j, pair, m, one, other):
    """one[i] and other[i] = squared distances of row i (column i of ``rows``, i < m) to centroids j and
    ``pair``, each summed in feature order: four features per pass over the rows, each row's sum held while
    they are added one after another (the same additions, in the same order, as one feature at a time), so
    that a row's sums are loaded and stored once per four features."""
    for i in range(m):
        one[i] = 0.0
        other[i] = 0.0
    d = rows.shape[0]
    f = 0
    while f + 4 <= d:
        a0, a1, a2, a3 = centroids_t[f, j], centroids_t[f + 1, j], centroids_t[f + 2, j], centroids_t[f + 3, j]
        b0, b1 = centroids_t[f, pair], centroids_t[f + 1, pair]
        b2, b3 = centroids_t[f + 2, pair], centroids_t[f + 3, pair]
        r0, r1, r2, r3 = rows[f], rows[f + 1], rows[f + 2], rows[f + 3]
        for i in range(m):
            one[i] = _four(one[i], r0[i], r1[i], r2[i], r3[i], a0, a1, a2, a3)
            other[i] = _four(other[i], r0[i], r1[i], r2[i], r3[i], b0, b1, b2, b3)
        f += 4
    while f < d:
        a0 = centroids_t[f, j]
        b0 = centroids_t[f, pair]
        r0 = rows[f]
        for i in range(m):
            e = r0[i] - a0
            one[i] += e * e
            e = r0[i] - b0
            other[i] += e * e
        f += 1


@serial
def _nearest_two(squares, j, m, first, nearest, second):
    """Each row's two nearest so far, with centroid j's squared distances (``squares``) seen after those of
    centroids 0..j-1: a strictly nearer one takes the lead, so the lowest index wins exact ties; NaN never
    compares nearer."""
    for i in range(m):
        v = squares[i]
        lead = v < first[i]
        second[i] = first[i] if lead else (v if v < second[i] else second[i])
        nearest[i] = j if lead else nearest[i]
        first[i] = v if lead else first[i]


@serial
def _four(s, x0, x1, x2, x3, c0, c1, c2, c3):
    """``s`` plus the squared differences of four features, added one after another in feature order."""
    e = x0 - c0
    s += e * e
    e = x1 - c1
    s += e * e
    e = x2 - c2
    s += e * e
    e = x3 - c3
    return s + e * e
