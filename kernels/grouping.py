"""Grouping rows by customer in linear time, instead of a global comparison sort.

``group_rows`` is a stable counting sort on dense group numbers: the rows of group 0 in
input order, then those of group 1, ... kernels/lines.py then orders each group's rows.
"""

from __future__ import annotations

from segmint.kernels._jit import serial

__all__ = ["group_rows"]


@serial
def group_rows(group, n_groups, out_perm, out_offsets):
    """Stable counting sort of rows by ``group``.

    Parameters
    ----------
    group : int32[n] or int64[n]     # IN  group number of each row, 0 <= group < n_groups
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
