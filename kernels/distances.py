"""Nearest centroid of each row by exact float64 distances, summed row by row: the same
labels and bits however the rows are batched, bucketed or threaded.

Faiss' flat search ranks centroids by float32 ``|x|^2 + |c|^2 - 2 x.c``, which can put the
second nearest first where two distances are within float32 rounding of each other: on
bench scenario M at k=64, one customer in 909,090 got a centroid 6e-8 farther than its
nearest and a negative margin. Summing the differences in float64 ranks them exactly, and
four rows at a time (each centroid value loaded once for four rows) it is also faster than
Faiss' BLAS search up to k=256 on 2 cores (bench/README.md).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["nearest_centroids"]

BLOCK = 512   # rows per parallel task (a multiple of the four rows _squares sums together)


@parallel
def nearest_centroids(x, centroids_t, segment, distance, margin):
    """Each row's nearest centroid, its Euclidean distance and the margin to the second nearest.

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
    n = x.shape[0]
    k = centroids_t.shape[1]
    for b in prange((n + BLOCK - 1) // BLOCK):
        hi = min(n, (b + 1) * BLOCK)
        acc = np.empty((4, k))
        for first in range(b * BLOCK, hi, 4):
            last = min(first + 4, hi) - 1
            _squares(x, centroids_t, first, last, acc)
            for i in range(first, last + 1):
                _nearest_two(acc[i - first], k, i, segment, distance, margin)


@serial
def _squares(x, centroids_t, first, last, acc):
    """acc[r, j] = squared distance of row min(first + r, last) to centroid j, summed in feature order:
    four rows at once, each centroid value loaded once for the four (rows past ``last`` repeat it)."""
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    acc[:] = 0.0
    for f in range(x.shape[1]):
        x0 = np.float64(x[first, f])
        x1 = np.float64(x[min(first + 1, last), f])
        x2 = np.float64(x[min(first + 2, last), f])
        x3 = np.float64(x[min(first + 3, last), f])
        for j in range(centroids_t.shape[1]):
            c = centroids_t[f, j]
            e0, e1, e2, e3 = x0 - c, x1 - c, x2 - c, x3 - c
            a0[j] += e0 * e0
            a1[j] += e1 * e1
            a2[j] += e2 * e2
            a3[j] += e3 * e3


@serial
def _nearest_two(squares, k, i, segment, distance, margin):
    j1 = -1
    d1 = d2 = np.inf
    for j in range(k):
        v = squares[j]
        if v < d1:
            d2, j1, d1 = d1, j, v
        elif v < d2:
            d2 = v
    segment[i] = j1
    near = np.float32(np.sqrt(d1)) if j1 >= 0 else np.float32(np.nan)
    distance[i] = near
    if k > 1:
        margin[i] = np.float32(np.sqrt(d2)) - near
