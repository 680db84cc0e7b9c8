"""The Gamma-Gamma kernel against the textbook log-likelihood (tests/reference.py), the BG/NBD (terms per
distinct triple, times its customers) and NBD kernels against their terms in plain NumPy (value and
gradient), and the discounted CLV against NumPy."""

import math
from collections import Counter

import numba
import numpy as np
import pytest

from segmint.engine.analytics.clv import _triples
from segmint.kernels.clv import (BLOCK, _log_sum_weights, bgnbd_triple_sums, customer_triples, discounted_value,
                                 gamma_gamma_customer_terms, logs, n_blocks)
from tests.reference import gamma_gamma_ll_ref


def _terms_left_to_the_caller(x: float, p: float, q: float, v: float) -> float:
    # What depends on x and the parameters only, not on m: the caller adds it once per distinct x.
    return math.lgamma(p * x + q) - math.lgamma(p * x) - math.lgamma(q) + q * math.log(v) + p * x * math.log(x)


def _kernel_part_ref(x, m, p, q, v) -> float:
    return sum(gamma_gamma_ll_ref(xi, mi, p, q, v) - _terms_left_to_the_caller(xi, p, q, v)
               for xi, mi in zip(x.tolist(), m.tolist(), strict=True))


@pytest.mark.parametrize(("seed", "n"), [(0, 1), (1, 700), (2, BLOCK + 7)])
def test_gamma_gamma_terms_match_the_textbook_likelihood_and_its_gradient(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 40, n).astype(np.float64)
    m = rng.lognormal(3, 1.2, n)
    params = rng.uniform([0.3, 0.5, 0.5], [12.0, 15.0, 80.0])
    out = np.full((n_blocks(n), 4), np.nan)
    gamma_gamma_customer_terms(x, m, logs(m), *params, out)
    value, grad = out.sum(axis=0)[0], out.sum(axis=0)[1:]
    assert value == pytest.approx(_kernel_part_ref(x, m, *params), rel=1e-11)
    # Measured agreement with the central differences: 1e-10 to 1e-7.
    np.testing.assert_allclose(grad, _central_differences(lambda *p: _kernel_part_ref(x, m, *p), params), rtol=1e-6)


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= 1e-16, reason="no extended precision here (long double is double)")
def test_log_sum_weights_are_those_of_extended_precision_to_a_few_ulps():
    # The BG/NBD's gradient weighs each triple's two terms by these weights: rounding in them reads to the fit as a
    # gradient that does not vanish at the optimum, and costs it evaluations (M's fit: 45 against 27 with these alone).
    rng = np.random.default_rng(0)
    a3 = np.concatenate([-rng.uniform(0, 700, 3_000), [0.0, -1e-300, -5.0, -5.0, -600.0, -1.0]])
    edges = [0.0, 0.0, 1e-12, -40.0, 37.0, 710.0]   # equal, a hair apart, a weight of 4e-18, one below the normal range
    gap = np.concatenate([rng.normal(0, 3, 1_500), rng.uniform(-800, 800, 1_500), edges])
    a4 = a3 + gap
    a3l, a4l = a3.astype(np.longdouble), a4.astype(np.longdouble)
    top = np.maximum(a3l, a4l)
    e3, e4 = np.exp(a3l - top), np.exp(a4l - top)
    want = (top + np.log(e3 + e4), e3 / (e3 + e4), e4 / (e3 + e4))
    got = np.array([_log_sum_weights(u, w) for u, w in zip(a3.tolist(), a4.tolist(), strict=True)]).T
    ulp = np.finfo(np.float64).eps
    assert np.all(np.abs(got[0] - want[0]) <= 2 * ulp * np.maximum(np.abs(want[0]), 1.0))
    # A weight is exp of the gap a4 - a3 (or 1 / (1 + that)); the gap's own rounding, |gap| ulps, carries into it:
    # that much is the inputs' conditioning. exp(a3 - ll) carried |ll|'s instead, up to 700 ulps here.
    bound = (4 + np.abs(gap)) * ulp
    for weight, exact in zip(got[1:], want[1:], strict=True):
        tiny = exact < np.finfo(np.float64).tiny   # below the normal range: compared in absolute terms
        assert np.all(np.abs(weight - exact) <= np.where(tiny, 1e-320, bound * exact))
        assert np.all((weight >= 0) & (weight <= 1))
    assert np.all(got[1] + got[2] == pytest.approx(1.0, abs=4 * ulp))


@pytest.mark.parametrize(("seed", "n", "repeat_share", "whole"), [(0, 1, 1.0, True), (1, 700, 0.6, True),
                                                                  (2, 900, 0.0, True), (3, BLOCK + 7, 0.8, True),
                                                                  (4, 2 * BLOCK + 3, 0.7, False),
                                                                  (5, 4 * BLOCK, 0.9, True)])
def test_bgnbd_sums_match_plain_numpy_and_their_gradient(seed, n, repeat_share, whole):
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(n) < repeat_share, rng.integers(1, 30, n), 0).astype(np.float64)
    T = rng.uniform(1.0, 80.0, n)
    if whole:   # whole units: customers share triples; else nearly each is its own, over several blocks of triples
        T = np.round(T)
    tx = np.where(x > 0, np.floor(T * rng.random(n)), 0.0)
    params = rng.uniform([0.1, 0.5, 0.05, 0.2], [5.0, 40.0, 3.0, 6.0])  # b < 1 too: log(b - 1) is not taken

    def ref(r, alpha, a, b):  # FHL 2005 eq. 6 without the terms in x alone, summed in NumPy's order
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(invalid="ignore", divide="ignore"):
            a4 = np.log(a) - np.log(b + x - 1) - (r + x) * np.log(alpha + tx)
        return float(np.where(x > 0, np.logaddexp(a3, np.where(x > 0, a4, -np.inf)), a3).sum())

    ix, itx, iT, xs, txs, Ts = _indexed(x, tx, T)
    shares, t_x, t_tx, t_T = _triples(ix, itx, iT, txs.size, Ts.size)
    # Each triple is a distinct (x, t_x, T) of the customers, its share the customers who have it.
    got = dict(zip(zip(xs[t_x].tolist(), txs[t_tx].tolist(), Ts[t_T].tolist(), strict=True), shares.tolist(),
                   strict=True))
    assert len(got) == t_x.size and got == Counter(zip(x.tolist(), tx.tolist(), T.tolist(), strict=True))
    assert (t_x.size > BLOCK) == (n > 2 * BLOCK) and (shares.max() > 1) == (whole and n > 1)
    out = np.full((n_blocks(t_x.size), 5), np.nan)
    bgnbd_triple_sums(t_x, t_tx, t_T, shares, xs, txs, Ts, *params, out)
    value, grad = out.sum(axis=0)[0], out.sum(axis=0)[1:]
    # Per block of triples in a fixed order: the same bits on one thread.
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        alone = np.full_like(out, np.nan)
        bgnbd_triple_sums(t_x, t_tx, t_T, shares, xs, txs, Ts, *params, alone)
    finally:
        numba.set_num_threads(before)
    assert alone.tobytes() == out.tobytes()
    assert value == pytest.approx(ref(*params), rel=1e-12)
    np.testing.assert_allclose(grad, _central_differences(ref, params), rtol=1e-6, atol=1e-9 * n)


@pytest.mark.parametrize(("seed", "n", "n_pairs", "n_T"), [(0, 0, 0, 0), (1, 1, 1, 3), (2, 500, 1, 1), (3, 500, 40, 9),
                                                        (4, 3_000, 3_000, 3_000), (5, 20_000, 300, 700)])
def test_customer_triples_match_a_plain_grouping(seed, n, n_pairs, n_T):
    # Empty, one customer, every customer the same triple, few pairs and T, nearly every triple apart, many shared.
    rng = np.random.default_rng(seed)
    pair = rng.integers(0, max(n_pairs, 1), n).astype(np.int32)
    iT = rng.integers(0, max(n_T, 1), n).astype(np.int32)
    t_pair, t_T, shares = customer_triples(pair, n_pairs, iT, n_T)
    # The plain grouping: each (pair, T)'s customers, by pair, then by the pair's first customer of that T.
    members: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(pair.tolist(), iT.tolist(), strict=True)):
        members.setdefault(key, []).append(i)
    ordered = sorted(members, key=lambda key: (key[0], members[key][0]))
    assert t_pair.dtype == t_T.dtype == np.int32 and shares.dtype == np.float64
    assert list(zip(t_pair.tolist(), t_T.tolist(), strict=True)) == ordered
    assert shares.tolist() == [len(members[key]) for key in ordered]


def _indexed(*columns):
    """Each column as the kernels take it: per-customer int32 indices first, then the distinct values."""
    pairs = [np.unique(c, return_inverse=True) for c in columns]
    return *(inverse.astype(np.int32) for _, inverse in pairs), *(values for values, _ in pairs)


def _central_differences(f, params):
    """The gradient of f at params by central differences, step 1e-6 relative."""
    out = []
    for i in range(len(params)):
        h = params[i] * 1e-6
        up, down = params.copy(), params.copy()
        up[i] += h
        down[i] -= h
        out.append((f(*up) - f(*down)) / (2 * h))
    return out


@pytest.mark.parametrize(("seed", "n", "steps"), [(0, 0, 3), (1, 1, 1), (2, 5_000, 13), (3, 2_000, 40)])
def test_discounted_value_is_the_numpy_loop_bit_for_bit(seed, n, steps):
    rng = np.random.default_rng(seed)
    pairs = max(1, n // 7)
    grid = np.cumsum(rng.exponential(0.3, (pairs, steps)), axis=1)    # expected purchases grow with time
    grid[0] = 0.0                                                    # a pair that never buys again
    pair = rng.integers(0, pairs, n)
    alive, avg = rng.uniform(0, 1, n), rng.lognormal(3, 1.5, n)
    rate = 0.1 * rng.uniform()
    discount = np.array([(1 + rate) ** i for i in range(1, steps + 1)])
    clv, expected = np.empty(n), np.empty(n)
    discounted_value(grid, pair, alive, avg, discount, clv, expected)
    ref_clv, before = np.zeros(n), np.zeros(n)
    for i in range(1, steps + 1):   # predict_clv's NumPy expression before the kernel
        upto = grid[:, i - 1][pair] * alive
        ref_clv += (upto - before) * avg / (1 + rate) ** i
        before = upto
    assert clv.tobytes() == ref_clv.tobytes() and expected.tobytes() == before.tobytes()
