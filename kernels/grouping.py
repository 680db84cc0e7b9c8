"""Grouping rows by customer in linear time, instead of a global comparison sort.

``group_rows`` is a stable counting sort on dense group numbers: the rows of group 0 in
input order, then those of group 1, ... kernels/lines.py then orders each group's rows. A row's
group is looked up as it is read (``rank[key[i]]``), so no array of groups the size of the input
is written first.
"""

from __future__ import annotations

import numpy as np

from segmint.kernels._jit import serial

__all__ = ["group_rows", "perm_dtype"]


@serial
def group_rows(key, rank, n_groups, out_perm, out_offsets):
    """Stable counting sort of rows by their group ``rank[key[i]]``.

    Parameters
    ----------
    key : int32[n] or int64[n]       # IN  each row's key; -1 takes rank's last entry
    rank : int32[m] or int64[m]      # IN  the group of each key, 0 <= group < n_groups
    n_groups : int                   # IN
    out_perm : int32[n] or int64[n]  # OUT rows of group 0 (in input order), then of group 1, ...
    out_offsets : int64[n_groups+1]  # OUT rows of group g are out_perm[out_offsets[g]:out_offsets[g+1]]
    """
    out_offsets[:] = 0
    for i in range(key.shape[0]):
        out_offsets[rank[key[i]] + 1] += 1
    for g in range(n_groups):
        out_offsets[g + 1] += out_offsets[g]
    fill = out_offsets[:-1].copy()
    for i in range(key.shape[0]):
        g = rank[key[i]]
        out_perm[fill[g]] = i
        fill[g] += 1


def perm_dtype(rows: int) -> np.dtype:
    """The narrowest row-number type for ``rows`` rows: half the bytes of int64 on every bucket that fits."""
    return np.dtype(np.int32) if rows <= np.iinfo(np.int32).max else np.dtype(np.int64)
