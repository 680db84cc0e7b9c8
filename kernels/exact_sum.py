"""Exact float sums per group, so totals do not depend on how rows are split or ordered.

Each group keeps Shewchuk's non-overlapping partials (the algorithm behind Python's
``math.fsum``): their exact sum equals the exact sum of the group's values. Partials
from any split of the rows (buckets, blocks) can be concatenated and rounded once
with ``math.fsum``, which gives the correctly rounded total: the same bits however
the rows were divided. Float64 partials never number more than about 40 (they
cover disjoint bit ranges of the 2098-bit exponent span); MAX_PARTIALS leaves room.
A group whose running sum leaves the float range (as ``math.fsum`` raises on, for its
"intermediate overflow") keeps one partial, +inf or -inf, from then on: its sum cannot
be represented, and engine.exact reports it as such instead of a wrong number.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["group_partials", "segment_sums", "add_partial", "round_partials", "net_sum", "MAX_PARTIALS", "CANCEL"]

MAX_PARTIALS = 64
# An order's net within this share of its lines' absolute sum is 0 (net_sum). A line read from decimal text or a
# decimal type is within 2^-53 of its value as written, so lines that cancel as written could net to -2.8e-17
# as floats (0.30 - 0.10 - 0.20): a return, and a customer who bought and was refunded was quarantined as
# returns_only (exit 0). Nets beyond the lines' own rounding are kept to the last bit.
CANCEL = 2.0 ** -52


@serial
def group_partials(groups, values, partials, counts):
    """Accumulate ``values`` into the partials of their groups.

    Parameters
    ----------
    groups : int64[n]                       # IN      group of each value, 0 <= group < n_groups
    values : float64[n]                     # IN      finite values
    partials : float64[n_groups, MAX_PARTIALS]  # IN/OUT partials[g, :counts[g]] of group g
    counts : int64[n_groups]                # IN/OUT  partials in use per group
    """
    for i in range(values.shape[0]):
        g = groups[i]
        counts[g] = add_partial(partials[g], counts[g], values[i])


@serial
def add_partial(partials, used, x):
    """Add ``x`` to the non-overlapping partials ``partials[:used]``; returns how many are in use.
    Beyond the float range the partials become one, +inf or -inf, and stay so."""
    if used == 1 and not np.isfinite(partials[0]):
        return 1
    kept = 0
    for k in range(used):
        y = partials[k]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        if not np.isfinite(hi):
            partials[0] = hi
            return 1
        lo = y - (hi - x)
        if lo != 0.0:
            partials[kept] = lo
            kept += 1
        x = hi
    partials[kept] = x
    return kept + 1


@parallel
def segment_sums(values, offsets, out):
    """The net (``net_sum``) of each segment: ``math.fsum`` of values[offsets[i]:offsets[i+1]], 0 within the
    values' rounding of 0.

    The result, and so its sign, is that of the exact sum, whatever the order of the
    segment's values: an order whose lines cancel is exactly 0, never +-1e-15. (Only a net at the
    2^-52 bound depends on the order, through the absolute sum's rounding.)

    Parameters
    ----------
    values : float64[n]                # IN  finite values
    offsets : int64[n_segments + 1]    # IN  segment boundaries
    out : float64[n_segments]          # OUT
    """
    n_segments = offsets.shape[0] - 1
    block = 4096
    for b in prange((n_segments + block - 1) // block):
        partials = np.empty(MAX_PARTIALS)
        for s in range(b * block, min(n_segments, (b + 1) * block)):
            used = 0
            gross = 0.0
            for i in range(offsets[s], offsets[s + 1]):
                used = add_partial(partials, used, values[i])
                gross += abs(values[i])
            out[s] = net_sum(partials, used, gross)


@serial
def net_sum(partials, n, gross):
    """``round_partials``, or 0.0 where that is within CANCEL of ``gross`` (the values' absolute sum, finite)."""
    total = round_partials(partials, n)
    if abs(total) <= gross * CANCEL and np.isfinite(gross):
        return 0.0
    return total


@serial
def round_partials(partials, n):
    """CPython's final step of math.fsum: the partials' exact sum, correctly rounded."""
    if n == 0:
        return 0.0
    n -= 1
    hi = partials[n]
    lo = 0.0
    while n > 0:
        x = hi
        n -= 1
        y = partials[n]
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        yr = x - hi
        if y == yr:
            hi = x
    return hi
