"""Exact grouped sums: equal to math.fsum per group, and the same bits however rows are split."""

import math

import numpy as np
import pytest

from segmint.engine.exact import partials, total
from tests.reference_map import order_net


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_sums_equal_fsum_and_do_not_depend_on_the_split(seed):
    rng = np.random.default_rng(seed)
    n, k = 20_000, 7
    # Values across 30 orders of magnitude with cancellation: naive sums differ by order.
    values = rng.normal(0, 1, n) * 10.0 ** rng.integers(-15, 15, n)
    values[::97] = -values[1::97][: values[::97].size]
    groups = rng.integers(0, k, n)
    whole = partials(groups, values, k)
    for g in range(k):
        assert total([whole[g]]) == math.fsum(values[groups == g].tolist())
    # Split the rows into 5 random buckets, sum each, merge: the same bits.
    bucket = rng.integers(0, 5, n)
    split = [partials(groups[bucket == b], values[bucket == b], k) for b in range(5)]
    for g in range(k):
        assert total(part[g] for part in split) == total([whole[g]])
    # A plain sum in another order is not exact here (the reason for this module).
    order = rng.permutation(n)
    assert any(float(np.sum(values[order][groups[order] == g])) != total([whole[g]]) for g in range(k))


def test_empty_groups_and_empty_input():
    got = partials(np.array([2]), np.array([1.5]), 4)
    assert [total([p]) for p in got] == [0.0, 0.0, 1.5, 0.0]
    assert partials(np.zeros(0, np.int64), np.zeros(0), 2) == [[], []]


@pytest.mark.parametrize("seed", [0, 1])
def test_segment_sums_equal_fsum_in_any_order(seed):
    from segmint.kernels.exact_sum import segment_sums

    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 2, 3, 6, 40], 3000)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    values = np.round(rng.lognormal(2, 1.5, offsets[-1]), 2) * rng.choice([1, -1], offsets[-1])
    # Orders whose lines cancel: their exact sum is 0, which a plain sum misses (+-1e-15).
    for lo, hi in zip(offsets[:-1][sizes == 6], offsets[1:][sizes == 6]):
        values[lo + 3:hi] = -values[lo:lo + 3]
    out = np.empty(sizes.size)
    segment_sums(values, offsets, out)
    for i, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
        assert out[i] == order_net(values[lo:hi].tolist())
    assert (out[sizes == 6] == 0).all()
    shuffled = values.copy()
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        shuffled[lo:hi] = rng.permutation(values[lo:hi])
    again = np.empty(sizes.size)
    segment_sums(shuffled, offsets, again)
    assert (again == out).all()


def test_lines_that_cancel_as_written_in_decimal_net_to_zero():
    # 0.30 - 0.10 - 0.20 is -2.8e-17 as floats: the order was a return, its customer quarantined as returns_only.
    from segmint.kernels.exact_sum import segment_sums

    values = np.array([0.30, -0.10, -0.20, 0.1, 0.2, -0.3, 5.0, -5.0 + 2**-40, 1e308, 1e308, -1e308, -1e308])
    offsets = np.array([0, 3, 6, 8, 12], np.int64)
    out = np.empty(4)
    segment_sums(values, offsets, out)
    assert math.fsum([0.30, -0.10, -0.20]) < 0 and math.fsum([0.1, 0.2, -0.3]) > 0
    assert out[0] == 0.0 and out[1] == 0.0
    assert out[2] == 2**-40   # beyond the lines' rounding: kept to the last bit
    assert out[3] == math.inf   # a running sum beyond the float range stays so (engine.exact reports it)
