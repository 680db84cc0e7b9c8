"""Greedy k-means++ seeding (Arthur & Vassilvitskii; greedy variant as in scikit-learn).

At each step ``n_trials`` candidates are drawn with probability proportional
to the squared distance to the nearest chosen centre, and the one that lowers
the potential most is kept. Random numbers come in as arguments, so the kernel
is a pure function: same inputs, same centres, whatever the thread count
(each candidate's potential is summed serially by one thread).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["kmeanspp_greedy"]


@parallel
def kmeanspp_greedy(x, first, uniforms, out_idx):
    """Choose ``k = out_idx.shape[0]`` seed rows of ``x``.

    Parameters
    ----------
    x : float32 or float64[n, d]        # IN  points
    first : int                          # IN  index of the first centre
    uniforms : float64[k - 1, n_trials]  # IN  uniforms in [0, 1) for candidate draws
    out_idx : int64[k]                   # OUT row indices of the chosen centres
    """
    n, d = x.shape
    k = out_idx.shape[0]
    n_trials = uniforms.shape[1]
    # The points feature by feature, in float64: a distance is built up one feature at a time for
    # every point at once (vector instructions), each point's sum still taken in feature order.
    xt = np.empty((d, n), dtype=np.float64)
    for i in prange(n):
        for f in range(d):
            xt[f, i] = x[i, f]
    closest = np.zeros(n, dtype=np.float64)
    _add_sqdist(xt, first, closest)
    out_idx[0] = first
    cand_dist = np.empty((n_trials, n), dtype=np.float64)
    cand_pot = np.empty(n_trials, dtype=np.float64)
    cand_idx = np.empty(n_trials, dtype=np.int64)
    cumsum = np.empty(n, dtype=np.float64)
    for c in range(1, k):
        acc = 0.0
        for i in range(n):
            acc += closest[i]
            cumsum[i] = acc
        for t in range(n_trials):
            j = np.searchsorted(cumsum, uniforms[c - 1, t] * acc)
            cand_idx[t] = min(j, n - 1)
        for t in prange(n_trials):
            dist = cand_dist[t]
            dist[:] = 0.0
            _add_sqdist(xt, cand_idx[t], dist)
            pot = 0.0
            for i in range(n):
                dd = min(closest[i], dist[i])
                dist[i] = dd
                pot += dd
            cand_pot[t] = pot
        best = 0
        for t in range(1, n_trials):
            if cand_pot[t] < cand_pot[best]:
                best = t
        out_idx[c] = cand_idx[best]
        closest[:] = cand_dist[best]


@serial
def _add_sqdist(xt, j, out):
    """out += squared distances of every point (columns of ``xt``) to point ``j``."""
    for f in range(xt.shape[0]):
        row = xt[f]
        c = row[j]
        for i in range(out.shape[0]):
            diff = row[i] - c
            out[i] += diff * diff
