"""Exact sums that merge across buckets: the correctly rounded total, whatever the split.

``partials(groups, values, n)`` reduces values per group to a few floats whose exact
sum is the group's exact sum (kernels/exact_sum.py); ``total(parts)`` rounds any
collection of such partials, from any number of buckets, once. Revenue, CLV and
rejected amounts are summed this way so that one bucket and many give the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from segmint.kernels.exact_sum import MAX_PARTIALS, group_partials

__all__ = ["partials", "total"]


def partials(groups: np.ndarray, values: np.ndarray, n_groups: int) -> list[list[float]]:
    """Per group, a short list of floats whose exact sum is the exact sum of the group's values."""
    out = np.zeros((n_groups, MAX_PARTIALS))
    counts = np.zeros(n_groups, np.int64)
    group_partials(np.ascontiguousarray(groups, np.int64), np.ascontiguousarray(values, np.float64), out, counts)
    return [out[g, :counts[g]].tolist() for g in range(n_groups)]


def total(parts: Iterable[Iterable[float]]) -> float:
    """The correctly rounded sum of every partial in ``parts`` (lists from any number of buckets)."""
    return math.fsum(v for part in parts for v in part)
