"""Grouping rows by customer in linear time, instead of a global comparison sort.

``group_rows`` is a stable counting sort on dense group numbers; ``sort_segments``
then orders each customer's rows by (major, minor) key, stably. Together they give
exactly ``np.lexsort((minor, major, group))``: the rows of a customer in key order,
ties in input order. ``take`` gathers a column through the permutation on every core.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["group_rows", "sort_segments", "take"]

# Segments up to this many rows are insertion-sorted in place (no allocation); customers
# average about 22 lines.
_SMALL = 64


@serial
def group_rows(group, n_groups, out_perm, out_offsets):
    """Stable counting sort of rows by ``group``.

    Parameters
    ----------
    group : int64[n]                 # IN  group number of each row, 0 <= group < n_groups
    n_groups : int                   # IN
    out_perm : int64[n]              # OUT rows of group 0 (in input order), then of group 1, ...
    out_offsets : int64[n_groups+1]  # OUT rows of group g are out_perm[out_offsets[g]:out_offsets[g+1]]
    """
    out_offsets[:] = 0
    for i in range(group.shape[0]):
        out_offsets[group[i] + 1] += 1
    for g in range(n_groups):
        out_offsets[g + 1] += out_offsets[g]
    fill = out_offsets[:-1].copy()
    for i in range(group.shape[0]):
        g = group[i]
        out_perm[fill[g]] = i
        fill[g] += 1


@parallel
def sort_segments(offsets, perm, major, minor):
    """Order ``perm[lo:hi]`` of every segment by (major[row], minor[row]), stably, in place.

    Parameters
    ----------
    offsets : int64[n_segments + 1]  # IN     segment boundaries in perm
    perm : int64[n]                  # IN/OUT row numbers
    major, minor : int64[rows]       # IN     sort keys, indexed by row number
    """
    for s in prange(offsets.shape[0] - 1):
        lo = offsets[s]
        hi = offsets[s + 1]
        in_order = True
        for i in range(lo + 1, hi):
            a = perm[i - 1]
            b = perm[i]
            if major[b] < major[a] or (major[b] == major[a] and minor[b] < minor[a]):
                in_order = False
                break
        if in_order:
            continue
        if hi - lo <= _SMALL:
            _insertion_sort(perm, lo, hi, major, minor)
            continue
        rows = perm[lo:hi].copy()
        # Two stable passes, minor key first: the major key decides, ties keep minor order.
        by_minor = rows[np.argsort(minor[rows], kind="mergesort")]
        perm[lo:hi] = by_minor[np.argsort(major[by_minor], kind="mergesort")]


@parallel
def take(src, perm, out):
    """out[i] = src[perm[i]]."""
    for i in prange(perm.shape[0]):
        out[i] = src[perm[i]]


@serial
def _insertion_sort(perm, lo, hi, major, minor):
    """Stable: a row moves left only past rows with strictly greater keys."""
    for i in range(lo + 1, hi):
        row = perm[i]
        j = i - 1
        while j >= lo and (major[perm[j]] > major[row] or (major[perm[j]] == major[row] and minor[perm[j]] > minor[row])):
            perm[j + 1] = perm[j]
            j -= 1
        perm[j + 1] = row
