"""Per-customer features: one customer's orders and lines reduced to their feature row.

``order_row`` takes the customer's orders sorted by time; ``line_row`` its lines in the
customer's line order. Each customer is reduced serially by one thread (kernels/lines.py
runs them over every customer), so results do not depend on the thread count.
Definitions: docs/reference.md, "Features".
"""

from __future__ import annotations

import numpy as np
from numba import prange as numba_prange

from segmint.kernels._jit import parallel, serial

__all__ = ["order_row", "line_row", "CATEGORY_SCRATCH", "sort_within", "N_ORDER_FEATURES", "ORDER_FEATURES", "DAY_US"]

DAY_US = 86_400_000_000
# Category codes below this are counted in line_row's scratch (its size), larger ones sorted.
CATEGORY_SCRATCH = 64

# Column order of the ``out`` matrix of ``order_features``.
ORDER_FEATURES = (
    "recency_days", "tenure_days", "frequency", "monetary_total", "aov",
    "ipt_mean_days", "ipt_std_days",
    "lt_frequency", "lt_recency", "lt_T", "lt_monetary",
)
N_ORDER_FEATURES = len(ORDER_FEATURES)


@serial
def order_row(ts_us, amount, channel, n, as_of_us, out, channel_share):
    """Reduce one customer's ``n`` orders (sorted by time) to the ORDER_FEATURES row.

    A purchase is an order whose net amount is >= 0; an order with a negative net
    amount is a return. Returns count only in ``monetary_total`` (and so ``aov``):
    frequency, recency, tenure, purchase days, the lt_* columns and channel shares
    are over purchases. A customer without a purchase gets NaN (cleaning
    quarantines such customers as ``returns_only`` before features are computed).

    Parameters
    ----------
    ts_us : int64[>= n]                # IN  order time, microseconds since epoch
    amount : float64[>= n]             # IN  order net amount (lines summed exactly, 0 within rounding)
    channel : int32[>= n]              # IN  channel (its column in channel_share), -1 when none
    n : int                            # IN  orders
    as_of_us : int                     # IN  as-of instant
    out : float64[N_ORDER_FEATURES]    # OUT
    channel_share : float64[n_channels]  # OUT share of purchases per channel
    """
    n_channels = channel_share.shape[0]
    as_of_day = as_of_us // DAY_US
    total = 0.0
    purchases = 0
    first = -1
    last = -1
    first_day = 0
    prev_day = 0
    # Distinct purchase days: gaps between them, and daily spend after day one.
    n_days = 0
    gap_sum = 0.0
    gap_sq = 0.0
    later_spend = 0.0
    for j in range(n_channels):
        channel_share[j] = 0.0
    for i in range(n):
        total += amount[i]
        if amount[i] < 0:
            continue
        purchases += 1
        if channel[i] >= 0:
            channel_share[channel[i]] += 1.0
        day = ts_us[i] // DAY_US
        if first < 0:
            first = i
            first_day = day
            prev_day = day
            n_days = 1
        else:
            if day != prev_day:
                gap = float(day - prev_day)
                gap_sum += gap
                gap_sq += gap * gap
                n_days += 1
                prev_day = day
            if day != first_day:
                later_spend += amount[i]
        last = i
    if purchases == 0:
        for j in range(out.shape[0]):
            out[j] = np.nan
        out[3] = total
        return
    out[0] = (as_of_us - ts_us[last]) / DAY_US
    out[1] = (as_of_us - ts_us[first]) / DAY_US
    out[2] = purchases
    out[3] = total
    out[4] = total / purchases
    if n_days > 1:
        n_gaps = n_days - 1
        mean = gap_sum / n_gaps
        out[5] = mean
        out[6] = np.sqrt(max(gap_sq / n_gaps - mean * mean, 0.0))
        out[10] = later_spend / n_gaps
    else:
        # One purchase day: the gap so far is censored at the time since it.
        out[5] = float(as_of_day - first_day)
        out[6] = 0.0
        out[10] = 0.0
    out[7] = n_days - 1
    out[8] = float(prev_day - first_day)
    out[9] = float(as_of_day - first_day)
    for j in range(n_channels):
        channel_share[j] /= purchases


@serial
def line_row(amount, category, n, out, counts):
    """Refund share and category breadth of one customer's ``n`` order lines.

    Distinct categories are counted per code when the customer's codes are small, else over
    the customer's own codes sorted in place: linear in the lines whatever the number of
    categories (a SKU mapped as the category has millions). Entropy is summed over the
    categories in code order (codes rank the category values) either way.

    Parameters
    ----------
    amount : float64[>= n]   # IN      line amounts, negative = refund, in the customer's line order
    category : int32[>= n]   # IN/OUT  category code of each line, -1 when unknown (may be sorted on return)
    n : int                  # IN      lines
    out : float64[3]         # OUT     refund_share, category_count, category_entropy
    counts : int64[64]       # SCRATCH CATEGORY_SCRATCH: lines per code, when the codes are small (the caller's:
                             #         one allocation per customer cost customer_pass on bench M 0.77 -> 0.74 s)
    """
    gross = 0.0
    refunded = 0.0
    for i in range(n):
        a = amount[i]
        if a > 0:
            gross += a
        elif a < 0:
            refunded -= a
    if gross > 0:
        out[0] = min(refunded / gross, 1.0)
    else:
        out[0] = 1.0 if refunded > 0 else 0.0
    codes = category[:n]
    top = -1
    for i in range(n):
        top = max(top, codes[i])
    known = 0
    distinct = 0
    entropy = 0.0
    if top < CATEGORY_SCRATCH:  # few categories: count them in code order (no sort)
        for k in range(top + 1):
            counts[k] = 0
        for i in range(n):
            if codes[i] >= 0:
                counts[codes[i]] += 1
                known += 1
        for k in range(top + 1):
            if counts[k] > 0:
                distinct += 1
                p = counts[k] / known
                entropy -= p * np.log(p)
    else:           # many (a SKU mapped as the category): sort the customer's own codes
        codes.sort()
        for i in range(n):
            if codes[i] >= 0:
                known += 1
        i = 0
        while i < n:
            j = i
            while j < n and codes[j] == codes[i]:
                j += 1
            if codes[i] >= 0:
                distinct += 1
                p = (j - i) / known
                entropy -= p * np.log(p)
            i = j
    out[1] = distinct
    out[2] = entropy


@parallel
def sort_within(offsets, key, tie, out_perm):
    """Argsort by (key, tie) within each CSR range (ranges stay in place); equal pairs keep their order.

    Parameters
    ----------
    offsets : int64[n + 1]     # IN  range boundaries
    key : int64[m]             # IN  sort key
    tie : int32[m] or int64[m] # IN  second key, deciding between equal keys
    out_perm : int64[m]        # OUT global indices; out_perm[lo:hi] orders range [lo, hi)
    """
    n = offsets.shape[0] - 1
    for c in numba_prange(n):
        lo = offsets[c]
        hi = offsets[c + 1]
        by_tie = np.argsort(tie[lo:hi], kind="mergesort")
        order = by_tie[np.argsort(key[lo:hi][by_tie], kind="mergesort")]
        for i in range(hi - lo):
            out_perm[lo + i] = lo + order[i]
