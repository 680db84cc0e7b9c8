"""The purchase simulator against its documented process (tests/reference.py).

The kernel draws its own random numbers (Numba's generator, seeded inside), so the comparison is
statistical: each summary must agree with the reference's, or with its stated value, within
4 standard errors (a chance failure once in about 16,000 comparisons; seeds are fixed, so a run
either always passes or always fails).
"""

import numpy as np

from segmint.kernels.synth import simulate_purchases
from tests.reference import purchase_days_ref

Z = 4.0
N = 20_000
N_CATEGORIES = 10


def _simulate(seed, birth, rate, dropout, horizon, persona=None, spend_mu=None, favourite=None, *,
              spend_sigma=(0.4,), refund_p=(0.05,), lines_mean=(1.5,), chan_cum=((0.5, 0.8, 1.0),),
              cat_focus=(0.5,)):
    n = birth.size
    return simulate_purchases(
        seed, np.zeros(n, np.int64) if persona is None else persona, birth, rate, dropout,
        np.full(n, 3.0) if spend_mu is None else spend_mu,
        np.zeros(n, np.int64) if favourite is None else favourite, horizon,
        np.array(spend_sigma), np.array(refund_p), np.array(lines_mean), np.array(chan_cum), np.array(cat_focus),
        N_CATEGORIES)


def _orders(cust, day, order, amount):
    """(customer, day, order id) of each order, from its first purchase line; refunds are the lines
    with a negative sign bit (a refunded 0.00 line is -0.0)."""
    bought = ~np.signbit(amount)
    ids, first = np.unique(order[bought], return_index=True)
    return cust[bought][first], day[bought][first], ids


def _agree(sample, reference, what):
    """Two independent samples have the same mean, within Z standard errors."""
    se = np.sqrt(sample.var() / sample.size + reference.var() / reference.size)
    z = (sample.mean() - reference.mean()) / se
    assert abs(z) < Z, f"{what}: {sample.mean():.4g} vs reference {reference.mean():.4g} (z={z:.1f})"


def _matches(sample, expected, sd, what):
    """A sample's mean equals a stated value, within Z standard errors."""
    z = (sample.mean() - expected) / (sd / np.sqrt(sample.size))
    assert abs(z) < Z, f"{what}: {sample.mean():.4g} vs {expected:.4g} (z={z:.1f})"


def test_order_days_follow_the_documented_process():
    rng = np.random.default_rng(0)
    horizon = 365.0
    birth = rng.uniform(0, 300, N)
    rate = rng.uniform(0.02, 0.2, N)
    dropout = rng.uniform(0.1, 0.6, N)
    cust, day, order, amount, *_ = _simulate(7, birth, rate, dropout, horizon)
    c, d, _ = _orders(cust, day, order, amount)
    ref = purchase_days_ref(np.random.default_rng(1), birth, rate, dropout, horizon)

    # Exactly: the first order at birth, days increasing, no line (order or refund) at or after the horizon.
    first = np.r_[True, c[1:] != c[:-1]]
    assert np.array_equal(c[first], np.arange(N)) and np.array_equal(d[first], birth)
    assert np.all(np.diff(d)[~first[1:]] > 0) and day.max() < horizon
    gap = np.diff(d)[~first[1:]] * rate[c[1:][~first[1:]]]
    # In distribution: orders per customer, one-order customers, gaps, last order day.
    counts = np.bincount(c, minlength=N)
    ref_counts = np.array([len(days) for days in ref])
    _agree(counts, ref_counts, "orders per customer")
    _agree(counts == 1, ref_counts == 1, "share of one-order customers")
    _agree(gap, np.concatenate([np.diff(days) * lam for days, lam in zip(ref, rate, strict=True)]),
           "gaps in units of the customer's mean gap")
    last = np.r_[first[1:], True]
    _agree(d[last] - birth, np.array([days[-1] for days in ref]) - birth, "days from first to last order")


def test_lines_refunds_channels_and_categories():
    rng = np.random.default_rng(2)
    persona = rng.integers(0, 2, N)
    spend_mu = rng.normal(3.5, 0.5, N)
    favourite = rng.integers(0, N_CATEGORIES, N)
    horizon = 1e9  # no order and no refund is cut off by the window's end
    params = {"spend_sigma": (0.3, 0.6), "refund_p": (0.03, 0.2), "lines_mean": (1.2, 3.0),
              "chan_cum": ((0.6, 0.9, 1.0), (0.1, 0.3, 1.0)), "cat_focus": (0.2, 0.8)}
    cust, day, order, amount, channel, category = _simulate(
        3, np.zeros(N), np.full(N, 0.05), np.full(N, 0.4), horizon, persona, spend_mu, favourite, **params)
    refund = np.signbit(amount)
    c, d, ids = _orders(cust, day, order, amount)
    order_of = np.searchsorted(ids, order)
    p_line = persona[cust[~refund]]

    # Order ids run 0, 1, 2, ... and every order has a purchase line.
    assert np.array_equal(ids, np.unique(order)) and np.array_equal(ids, np.arange(ids.size))
    # A refund repeats a purchase line of the same order negated, 1 to 30 days later.
    bought = np.flatnonzero(~refund)
    twin = np.flatnonzero(refund) - 1  # written right after the line it refunds
    assert np.array_equal(np.intersect1d(twin, bought), twin)
    assert np.array_equal(amount[twin], -amount[refund]) and np.array_equal(order[twin], order[refund])
    assert np.array_equal(category[twin], category[refund]) and np.array_equal(channel[twin], channel[refund])
    waited = day[refund] - d[order_of[refund]]
    assert waited.min() >= 1.0 and waited.max() < 30.0
    # Each order: one or more lines, all on its day and channel.
    lines = np.bincount(order_of[~refund])
    assert lines.min() >= 1
    first_line = bought[np.searchsorted(order_of[bought], np.arange(ids.size))]
    assert np.array_equal(day[~refund], d[order_of[~refund]])
    assert np.array_equal(channel[~refund], channel[first_line][order_of[~refund]])

    for p in (0, 1):
        mine = persona[c] == p
        lam = params["lines_mean"][p]
        _matches(lines[mine], lam, np.sqrt(lam - 1), f"lines per order, persona {p}")
        refunded = np.isin(np.flatnonzero(~refund)[p_line == p], twin)
        q = params["refund_p"][p]
        _matches(refunded, q, np.sqrt(q * (1 - q)), f"refunded share of lines, persona {p}")
        order_channel = channel[first_line][mine]
        for ch, share in enumerate(np.diff(params["chan_cum"][p], prepend=0.0)):
            _matches(order_channel == ch, share, np.sqrt(share * (1 - share)), f"channel {ch}, persona {p}")
        # The favourite category, or one drawn uniformly (which may be the favourite too).
        fav = params["cat_focus"][p] + (1 - params["cat_focus"][p]) / N_CATEGORIES
        _matches(category[~refund][p_line == p] == favourite[cust[~refund]][p_line == p], fav,
                 np.sqrt(fav * (1 - fav)), f"favourite category share, persona {p}")
        # Order value log-normal around the customer's spend_mu (lines round to cents).
        value = np.bincount(order_of[~refund], weights=amount[~refund])[mine]
        resid, sigma = np.log(value) - spend_mu[c[mine]], params["spend_sigma"][p]
        _matches(resid, 0.0, sigma, f"mean log order value - spend_mu, persona {p}")
        _matches(resid**2, sigma**2, np.sqrt(2) * sigma**2, f"variance of log order value, persona {p}")


def test_same_seed_same_lines():
    rng = np.random.default_rng(4)
    birth, rate, dropout = rng.uniform(0, 100, 500), rng.uniform(0.05, 0.5, 500), rng.uniform(0.1, 0.5, 500)
    a = _simulate(11, birth, rate, dropout, 200.0)
    b = _simulate(11, birth, rate, dropout, 200.0)
    c = _simulate(12, birth, rate, dropout, 200.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
