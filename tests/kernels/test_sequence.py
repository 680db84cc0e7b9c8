"""Sequence kernels against the plain references, on random inputs and edge cases."""

import numpy as np
import pytest

from segmint.kernels.sequence import CATEGORY_SCRATCH, ORDER_FEATURES, line_row, order_row
from tests.reference import DAY_US, line_features_ref, order_features_ref

AS_OF = 20_000 * DAY_US + 12 * 3_600_000_000


def _csr(groups):
    offsets = np.zeros(len(groups) + 1, np.int64)
    offsets[1:] = np.cumsum([len(g) for g in groups])
    return offsets, [item for g in groups for item in g]


def order_features(offsets, ts, amount, channel, as_of, out, shares):
    """order_row over every customer of CSR arrays, as kernels/lines.py runs it."""
    for c in range(offsets.size - 1):
        lo, hi = offsets[c], offsets[c + 1]
        order_row(ts[lo:hi], amount[lo:hi], channel[lo:hi], hi - lo, as_of, out[c], shares[c])


def line_features(offsets, amount, category, out):
    """line_row over every customer of CSR arrays (it sorts a copy of the customer's categories), with one
    scratch for all, as customer_pass gives it: what a customer counted there must not reach the next."""
    counts = np.full(CATEGORY_SCRATCH, 7, np.int64)
    for c in range(offsets.size - 1):
        lo, hi = offsets[c], offsets[c + 1]
        line_row(amount[lo:hi], category[lo:hi].copy(), hi - lo, out[c], counts)


def _random_customers(rng, n):
    groups = []
    for _ in range(n):
        m = int(rng.choice([1, 1, 2, 3, 8, 40]))
        # Few distinct days so several orders share a day; sometimes identical timestamps.
        ts = np.sort(AS_OF - rng.integers(0, 30, m) * DAY_US - rng.integers(0, DAY_US, m))
        if m > 2 and rng.random() < 0.3:
            ts[1] = ts[0]
        amount = np.round(rng.lognormal(3, 1, m) * np.where(rng.random(m) < 0.15, -1, 1), 2)
        channel = rng.integers(-1, 3, m)
        groups.append(list(zip(ts.tolist(), amount.tolist(), channel.tolist())))
    return groups


EDGE_CASES = [
    [(AS_OF - 5 * DAY_US, 10.0, 0)],                                   # one transaction
    [(AS_OF - DAY_US, 5.0, 1)] * 3,                                    # identical timestamps
    [(AS_OF - 3 * DAY_US, 20.0, 0), (AS_OF - 2 * DAY_US, -20.0, 0)],   # a later return: not a purchase
    [(AS_OF - 9 * DAY_US, -4.0, 1), (AS_OF - 8 * DAY_US, 0.0, 1),      # a return first, a zero-amount
     (AS_OF - 8 * DAY_US, 6.0, 2)],                                    # purchase (kept, as lifetimes does)
    [(AS_OF, 1.0, 2)],                                                 # at the as-of instant
]
RETURNS_ONLY = [(AS_OF - 2 * DAY_US, -7.5, -1)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_order_features_match_reference(seed):
    rng = np.random.default_rng(seed)
    groups = _random_customers(rng, 300) + EDGE_CASES
    offsets, flat = _csr(groups)
    ts = np.array([o[0] for o in flat], np.int64)
    amount = np.array([o[1] for o in flat], np.float64)
    channel = np.array([o[2] for o in flat], np.int32)
    out = np.full((len(groups), len(ORDER_FEATURES)), np.nan)
    shares = np.full((len(groups), 3), np.nan)
    order_features(offsets, ts, amount, channel, AS_OF, out, shares)
    for c, g in enumerate(groups):
        row, ref_shares = order_features_ref(g, AS_OF, 3)
        np.testing.assert_allclose(out[c], [row[f] for f in ORDER_FEATURES], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(shares[c], ref_shares, rtol=1e-12)
        assert np.isfinite(out[c]).all() == any(amount >= 0 for _, amount, _ in g)


def test_returns_are_not_purchases():
    # A return after the last purchase moves neither recency nor frequency; it lowers the total.
    groups = [[(AS_OF - 10 * DAY_US, 50.0, 0)], [(AS_OF - 10 * DAY_US, 50.0, 0), (AS_OF - DAY_US, -20.0, 1)],
              RETURNS_ONLY]
    offsets, flat = _csr(groups)
    out = np.empty((3, len(ORDER_FEATURES)))
    shares = np.empty((3, 2))
    order_features(offsets, np.array([o[0] for o in flat], np.int64), np.array([o[1] for o in flat]),
                   np.array([o[2] for o in flat], np.int32), AS_OF, out, shares)
    f = {name: out[:, i] for i, name in enumerate(ORDER_FEATURES)}
    assert f["frequency"][1] == f["frequency"][0] == 1 and f["lt_frequency"][1] == 0
    assert f["recency_days"][1] == f["recency_days"][0] == 10.0
    assert f["monetary_total"][1] == 30.0 and f["aov"][1] == 30.0
    assert shares[1].tolist() == [1.0, 0.0]
    # No purchase at all: NaN features (cleaning quarantines such customers first).
    assert f["monetary_total"][2] == -7.5 and np.isnan(f["frequency"][2])


@pytest.mark.parametrize("seed", [0, 1])
def test_line_features_match_reference(seed):
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(300):
        m = int(rng.choice([1, 2, 5, 30]))
        amount = np.round(rng.normal(20, 30, m), 2)
        cat = rng.integers(-1, 6, m)
        groups.append(list(zip(amount.tolist(), cat.tolist())))
    groups += [[(0.0, -1)], [(-5.0, 2)], [(10.0, 1), (-15.0, 1)], [(3.0, 4)] * 4]
    offsets, flat = _csr(groups)
    out = np.full((len(groups), 3), np.nan)
    line_features(offsets, np.array([a for a, _ in flat]), np.array([c for _, c in flat], np.int32), out)
    for c, g in enumerate(groups):
        np.testing.assert_allclose(out[c], line_features_ref(g), rtol=1e-12, atol=1e-12)


def test_line_features_of_many_lines_sort_their_categories():
    # Above the insertion-sort size the general sort takes over: same counts and entropy.
    rng = np.random.default_rng(5)
    lines = list(zip(np.round(rng.normal(10, 5, 200), 2).tolist(), rng.integers(-1, 40, 200).tolist()))
    out = np.empty(3)
    line_row(np.array([a for a, _ in lines]), np.array([c for _, c in lines], np.int32), len(lines), out,
             np.empty(CATEGORY_SCRATCH, np.int64))
    np.testing.assert_allclose(out, line_features_ref(lines), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_sort_within_matches_a_lexsort_per_range(seed):
    from segmint.kernels.sequence import sort_within

    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 2, 7, 50], 200)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    key = rng.integers(0, 5, offsets[-1])      # many equal keys
    tie = rng.integers(0, 3, offsets[-1])      # and equal (key, tie) pairs
    out = np.empty(offsets[-1], np.int64)
    sort_within(offsets, key, tie, out)
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        want = lo + np.lexsort((np.arange(hi - lo), tie[lo:hi], key[lo:hi]))
        assert out[lo:hi].tolist() == want.tolist()
