"""Distances of rows to given centroids, summed in float64 row by row: the same bits however
the rows are batched, bucketed or threaded (BLAS distances change in the last bits with the
batch's shape)."""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["nearest_distances"]


@parallel
def nearest_distances(x, centroids, idx, distance, margin):
    """Euclidean distance of each row to its nearest centroid, and the margin to its second.

    Parameters
    ----------
    x : float32[n, d]            # IN  rows
    centroids : float64[k, d]    # IN
    idx : int64[n, m]            # IN  nearest (column 0) and, with m == 2, second nearest centroid
    distance : float32[n]        # OUT distance to idx[:, 0]
    margin : float32[n]          # OUT distance to idx[:, 1] minus distance (float32); untouched if m == 1
    """
    for i in prange(x.shape[0]):
        first = np.float32(_distance(x, i, centroids, idx[i, 0]))
        distance[i] = first
        if idx.shape[1] == 2:
            margin[i] = np.float32(_distance(x, i, centroids, idx[i, 1])) - first


@serial
def _distance(x, i, centroids, c):
    s = 0.0
    for f in range(x.shape[1]):
        diff = np.float64(x[i, f]) - centroids[c, f]
        s += diff * diff
    return np.sqrt(s)
