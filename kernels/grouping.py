"""Grouping rows by customer in linear time, instead of a global comparison sort.

``group_rows`` is a stable counting sort on dense group numbers: the rows of group 0 in
input order, then those of group 1, ... kernels/lines.py then orders each group's rows. A row's
group is looked up as it is read (``rank[key[i]]``), so no array of groups the size of the input
is written first.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from segmint.kernels._jit import parallel

__all__ = ["group_rows", "perm_dtype"]

_MIN_RUN = 1 << 16   # rows: below this a second run costs more than it saves


def group_rows(key, rank, n_groups, out_perm, out_offsets, *, threads=None):
    """Stable counting sort of rows by their group ``rank[key[i]]``.

    The rows are cut into one run per thread (runs of at least _MIN_RUN rows): each run counts its
    rows per group, then writes them after those of the same group in earlier runs. That is where the
    serial sort puts them, so the result does not depend on the thread count (bench M, 20 M rows into
    909 k groups: 0.117 s on one thread). The counts take 8 bytes per group and run.

    Parameters
    ----------
    key : int32[n] or int64[n]       # IN  each row's key; -1 takes rank's last entry
    rank : int32[m] or int64[m]      # IN  the group of each key, 0 <= group < n_groups
    n_groups : int                   # IN
    out_perm : int32[n] or int64[n]  # OUT rows of group 0 (in input order), then of group 1, ...
    out_offsets : int64[n_groups+1]  # OUT rows of group g are out_perm[out_offsets[g]:out_offsets[g+1]]
    threads : int                    # most runs (default: Numba's thread count)
    """
    most = numba.get_num_threads() if threads is None else threads
    _group_rows(key, rank, n_groups, max(1, min(most, key.shape[0] // _MIN_RUN)), out_perm, out_offsets)


@parallel
def _group_rows(key, rank, n_groups, runs, out_perm, out_offsets):
    """``group_rows`` in ``runs`` runs (the thread count is read outside: a kernel that reads it cannot
    be cached)."""
    n = key.shape[0]
    at = np.zeros((runs, n_groups), np.int64)   # rows per group in each run, then where the run writes them
    for r in prange(runs):
        for i in range(r * n // runs, (r + 1) * n // runs):
            at[r, rank[key[i]]] += 1
    out_offsets[0] = 0
    for g in range(n_groups):
        start = out_offsets[g]
        for r in range(runs):
            rows = at[r, g]
            at[r, g] = start
            start += rows
        out_offsets[g + 1] = start
    for r in prange(runs):
        for i in range(r * n // runs, (r + 1) * n // runs):
            g = rank[key[i]]
            out_perm[at[r, g]] = i
            at[r, g] += 1


def perm_dtype(rows: int) -> np.dtype:
    """The narrowest row-number type for ``rows`` rows: half the bytes of int64 on every bucket that fits."""
    return np.dtype(np.int32) if rows <= np.iinfo(np.int32).max else np.dtype(np.int64)
