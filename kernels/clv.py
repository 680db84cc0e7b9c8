"""Customer-dependent parts of the BG/NBD and Gamma-Gamma log-likelihoods, with gradients (the NBD's, linear
in a customer's repeat count, are summed per distinct T by its caller: engine.analytics.clv.fit_nbd).

Terms that depend only on the repeat count x (the log-gamma and digamma
terms) are evaluated once per distinct x by the caller; these kernels add
what varies per customer (the BG/NBD's once per distinct (x, t_x, T), times
its customers). Sums run per fixed block of customers (or triples), then over
blocks in order, so the result does not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["bgnbd_triple_sums", "customer_triples",
           "gamma_gamma_customer_terms", "discounted_value", "logs", "n_blocks", "BLOCK"]

BLOCK = 65_536


@parallel
def bgnbd_triple_sums(t_x, t_tx, t_T, shares, xs, txs, Ts, r, alpha, a, b, out):
    """Sum over customers of log(e^A3 + [x>0] e^A4) and its gradient in (r, alpha, a, b), a distinct (x, t_x, T)
    at a time.

    A3 = -(r + x) log(alpha + T); A4 = log a - log(b + x - 1) - (r + x) log(alpha + t_x)
    (Fader, Hardie & Lee 2005, eq. 6, in log form). A customer's term depends on its triple alone, and
    customers share triples (bench M: 550 k among 909 k customers; L: 2.7 M among 10 M), so each triple's
    terms are evaluated once and added times the customers who share it. They were added once per customer,
    in customer order, through a table of every triple's terms: on L that gather took 42 ms an evaluation
    beside the terms' 47.

    Parameters
    ----------
    t_x, t_tx, t_T : int32[m]    # IN  each triple's indices into xs, txs, Ts
    shares : float64[m]          # IN  customers of each triple (whole numbers)
    xs, txs, Ts : float64[...]   # IN  distinct repeat purchases, times of last purchase, ages (same unit)
    r, alpha, a, b : float       # IN  parameters
    out : float64[n_blocks(m), 5]  # OUT per block of triples: value, d/dr, d/dalpha, d/da, d/db
    """
    aT, lT = _shifted_logs(Ts, alpha, 0.0)
    atx, ltx = _shifted_logs(txs, alpha, 0.0)
    bx, lbx = _shifted_logs(xs, b, 1.0)
    la = math.log(a)
    m = t_x.shape[0]
    for blk in prange(out.shape[0]):
        v = 0.0
        gr = 0.0
        gal = 0.0
        ga = 0.0
        gb = 0.0
        for t in range(blk * BLOCK, min(m, (blk + 1) * BLOCK)):
            c = t_x[t]
            j = t_tx[t]
            k = t_T[t]
            w = shares[t]
            x = xs[c]
            rx = r + x
            a3 = -rx * lT[k]
            if x > 0:
                a4 = la - lbx[c] - rx * ltx[j]
                ll, w3, w4 = _log_sum_weights(a3, a4)
                v += w * ll
                gr += w * (-w3 * lT[k] - w4 * ltx[j])
                gal += w * (-rx * (w3 / aT[k] + w4 / atx[j]))
                ga += w * (w4 / a)
                gb += w * (-w4 / bx[c])
            else:
                v += w * a3
                gr += w * -lT[k]
                gal += w * (-rx / aT[k])
        out[blk, 0] = v
        out[blk, 1] = gr
        out[blk, 2] = gal
        out[blk, 3] = ga
        out[blk, 4] = gb


@serial
def customer_triples(pair, n_pairs, iT, n_T):
    """The distinct (pair, T) of the customers - their triples, where a pair codes (x, t_x) - and how many
    customers share each; returns each triple's pair code and T index (int32[m] each) and its customers
    (float64[m], whole numbers), ordered by pair code, then as the pair's customers first meet their T.

    A counting sort of the customers by pair carries their T along, so that each pair's customers are then
    coded by T in sequential passes (one counts the triples, one fills them), through a table of every T that the
    pair's own customers reset (scenario L's 10 M customers over 2.7 M triples: 0.70-0.80 s and 245-306 MB at the
    peak through hash tables of the triples; 0.34-0.55 s so, with the pairs' coding, ``_triples``).

    Parameters
    ----------
    pair : int32[n]      # IN  each customer's pair code, 0 <= code < n_pairs
    n_pairs : int        # IN  the number of pair codes
    iT : int32[n]        # IN  each customer's T index, 0 <= index < n_T
    n_T : int            # IN  the number of distinct T
    """
    n = pair.shape[0]
    start = np.zeros(n_pairs + 1, np.int64)
    for i in range(n):
        start[pair[i] + 1] += 1
    for p in range(n_pairs):
        start[p + 1] += start[p]
    by_pair = np.empty(n, np.int32)   # the customers' T, by pair, each pair's in customer order
    at = start[:n_pairs].copy()
    for i in range(n):
        by_pair[at[pair[i]]] = iT[i]
        at[pair[i]] += 1
    seen = np.full(n_T, -1, np.int64)
    m = 0
    for p in range(n_pairs):
        for k in range(start[p], start[p + 1]):
            if seen[by_pair[k]] < 0:
                seen[by_pair[k]] = 0
                m += 1
        for k in range(start[p], start[p + 1]):
            seen[by_pair[k]] = -1
    t_pair = np.empty(m, np.int32)
    t_T = np.empty(m, np.int32)
    shares = np.zeros(m)
    m = 0
    for p in range(n_pairs):
        first = m
        for k in range(start[p], start[p + 1]):
            t = by_pair[k]
            c = seen[t]
            if c < 0:
                c = m
                seen[t] = m
                t_pair[m] = p
                t_T[m] = t
                m += 1
            shares[c] += 1.0
        for c in range(first, m):
            seen[t_T[c]] = -1
    return t_pair, t_T, shares


@parallel
def gamma_gamma_customer_terms(x, m, lm, p, q, v, out):
    """Sum over customers of (p x - 1) log m - (p x + q) log(x m + v) and its gradient in (p, q, v).

    Parameters
    ----------
    x : float64[n]               # IN  repeat purchases (> 0)
    m : float64[n]               # IN  mean repeat spend (> 0)
    lm : float64[n]              # IN  log m (``logs(m)``: the same for every evaluation of a fit)
    p, q, v : float              # IN  parameters
    out : float64[n_blocks, 4]   # OUT per block: value, d/dp, d/dq, d/dv
    """
    n = x.shape[0]
    for blk in prange(out.shape[0]):
        s = 0.0
        gp = 0.0
        gq = 0.0
        gv = 0.0
        for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            xm = x[i] * m[i] + v
            lxm = math.log(xm)
            px = p * x[i]
            s += (px - 1.0) * lm[i] - (px + q) * lxm
            gp += x[i] * lm[i] - x[i] * lxm
            gq += -lxm
            gv += -(px + q) / xm
        out[blk, 0] = s
        out[blk, 1] = gp
        out[blk, 2] = gq
        out[blk, 3] = gv


@parallel
def discounted_value(grid, pair, alive, avg, discount, out_clv, out_expected):
    """Each customer's discounted CLV over the horizon's steps and its expected purchases by the horizon.

    Step i (from 1) adds (E_i - E_{i-1}) * avg / discount[i-1], where E_i = grid[pair, i-1] * alive is
    the expected purchases by the step's end (E_0 = 0): the NumPy expression, one customer at a time,
    in the same order of operations, so the same bits.

    Parameters
    ----------
    grid : float64[n_pairs, steps]   # IN  expected purchases given alive, per distinct (x, T) and step
    pair : intp[n]                   # IN  each customer's row of grid
    alive, avg : float64[n]          # IN  P(alive) and the expected order value
    discount : float64[steps]        # IN  (1 + rate per step) ** i for step i
    out_clv, out_expected : float64[n]  # OUT
    """
    for c in prange(pair.shape[0]):
        clv = 0.0
        before = 0.0
        for i in range(grid.shape[1]):
            upto = grid[pair[c], i] * alive[c]
            clv += (upto - before) * avg[c] / discount[i]
            before = upto
        out_clv[c] = clv
        out_expected[c] = before


@parallel
def logs(values):
    """The natural logarithm of each value, as the likelihood kernels take it (math.log)."""
    out = np.empty(values.shape[0])
    for i in prange(values.shape[0]):
        out[i] = math.log(values[i])
    return out


def n_blocks(n: int) -> int:
    """Blocks needed for n customers (at least one, so empty input sums to 0)."""
    return max(1, -(-n // BLOCK))



@serial
def _shifted_logs(values, shift, less):
    """(values + shift) - less and its logarithm, per value, rounded as the likelihood writes them."""
    shifted = np.empty(values.size)
    logs = np.empty(values.size)
    for j in range(values.size):
        shifted[j] = (values[j] + shift) - less
        logs[j] = math.log(shifted[j])
    return shifted, logs


@serial
def _log_sum_weights(a3, a4):
    """log(e^a3 + e^a4) and the weights e^a3 / (e^a3 + e^a4), e^a4 / (e^a3 + e^a4), from one exp.

    Around the larger of the two, so the exp cannot overflow. The weights once came from exp(a3 - ll) and
    exp(a4 - ll): two exp more, and ll's rounding (|ll| is tens to hundreds) in each weight, about 3e-14 of
    it, so noisy a gradient that bench M's BG/NBD fit took 45 evaluations to converge where these weights
    alone made it 27 (bench/README.md, forty-first round).
    """
    if a3 >= a4:
        e = math.exp(a4 - a3)
        w3 = 1.0 / (1.0 + e)
        return a3 + math.log(1.0 + e), w3, e * w3
    e = math.exp(a3 - a4)
    w4 = 1.0 / (e + 1.0)
    return a4 + math.log(e + 1.0), e * w4, w4
