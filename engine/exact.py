"""Exact sums that merge across buckets: the correctly rounded total, whatever the split.

``partials(groups, values, n)`` reduces values per group to a few floats whose exact
sum is the group's exact sum (kernels/exact_sum.py); ``total(parts)`` rounds any
collection of such partials, from any number of buckets, once. Revenue, CLV and
rejected amounts are summed this way so that one bucket and many give the same bits.
A sum beyond the float range is +inf or -inf (never a wrong finite number, never NaN
unless sums overflowed both ways); callers decide what such a total means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from segmint.engine.errors import InputContractError
from segmint.kernels.exact_sum import MAX_PARTIALS, group_partials

__all__ = ["partials", "total", "finite_total", "reported"]


def partials(groups: np.ndarray, values: np.ndarray, n_groups: int) -> list[list[float]]:
    """Per group, a short list of floats whose exact sum is the exact sum of the group's values."""
    out = np.zeros((n_groups, MAX_PARTIALS))
    counts = np.zeros(n_groups, np.int64)
    group_partials(np.ascontiguousarray(groups, np.int64), np.ascontiguousarray(values, np.float64), out, counts)
    return [out[g, :counts[g]].tolist() for g in range(n_groups)]


def total(parts: Iterable[Iterable[float]]) -> float:
    """The correctly rounded sum of every partial in ``parts`` (lists from any number of buckets);
    +inf or -inf beyond the float range, NaN when partials overflowed both ways."""
    values = [v for part in parts for v in part]
    if not all(math.isfinite(v) for v in values):
        up, down = math.inf in values, -math.inf in values
        return math.nan if (up and down) or any(math.isnan(v) for v in values) else (math.inf if up else -math.inf)
    try:
        return math.fsum(values)
    except OverflowError:   # the exact sum is beyond the float range; scaled down, its sign is exact
        return math.copysign(math.inf, math.fsum(v * 2.0**-64 for v in values))


def finite_total(parts: Iterable[Iterable[float]], what: str) -> float:
    """``total``, or a contract error when it is beyond the float range: an output never holds
    a sum that is not the sum."""
    value = total(parts)
    if not math.isfinite(value):
        msg = (f"the {what} sums beyond the float range (about 1.8e308): some amounts are absurdly large; check "
               f"the amount column and its unit, or filter those rows out")
        raise InputContractError(msg)
    return value


def reported(parts: Iterable[Iterable[float]]) -> float | None:
    """``total`` for a report (run.json): None where it is beyond the float range."""
    value = total(parts)
    return value if math.isfinite(value) else None
