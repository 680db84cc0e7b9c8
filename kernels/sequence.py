"""Per-customer features over CSR arrays (one row range per customer).

Orders must be sorted by (customer, time); lines need only be grouped by
customer. Every customer is reduced serially by one thread, so results do not
depend on the thread count. Definitions: README, "Features".
"""

from __future__ import annotations

import numpy as np
from numba import prange as numba_prange

from segmint.kernels._jit import parallel

__all__ = ["order_features", "line_features", "sort_within", "N_ORDER_FEATURES", "ORDER_FEATURES"]

DAY_US = 86_400_000_000

# Column order of the ``out`` matrix of ``order_features``.
ORDER_FEATURES = (
    "recency_days", "tenure_days", "frequency", "monetary_total", "aov",
    "ipt_mean_days", "ipt_std_days",
    "lt_frequency", "lt_recency", "lt_T", "lt_monetary",
)
N_ORDER_FEATURES = len(ORDER_FEATURES)


@parallel
def order_features(offsets, ts_us, amount, channel, as_of_us, out, channel_share):
    """Reduce each customer's orders to the ORDER_FEATURES row.

    A purchase is an order whose net amount is >= 0; an order with a negative net
    amount is a return. Returns count only in ``monetary_total`` (and so ``aov``):
    frequency, recency, tenure, purchase days, the lt_* columns and channel shares
    are over purchases. A customer without a purchase gets NaN (cleaning
    quarantines such customers as ``returns_only`` before features are computed).

    Parameters
    ----------
    offsets : int64[n_customers + 1]            # IN  CSR offsets into the order arrays
    ts_us : int64[n_orders]                      # IN  order time, microseconds since epoch
    amount : float64[n_orders]                   # IN  order net amount (lines summed)
    channel : int32[n_orders]                    # IN  channel code, -1 when unknown
    as_of_us : int                               # IN  as-of instant
    out : float64[n_customers, N_ORDER_FEATURES] # OUT
    channel_share : float64[n_customers, n_channels]  # OUT share of purchases per channel
    """
    n = offsets.shape[0] - 1
    n_channels = channel_share.shape[1]
    as_of_day = as_of_us // DAY_US
    for c in numba_prange(n):
        lo = offsets[c]
        hi = offsets[c + 1]
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
            channel_share[c, j] = 0.0
        for i in range(lo, hi):
            total += amount[i]
            if amount[i] < 0:
                continue
            purchases += 1
            if channel[i] >= 0:
                channel_share[c, channel[i]] += 1.0
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
            for j in range(out.shape[1]):
                out[c, j] = np.nan
            out[c, 3] = total
            continue
        out[c, 0] = (as_of_us - ts_us[last]) / DAY_US
        out[c, 1] = (as_of_us - ts_us[first]) / DAY_US
        out[c, 2] = purchases
        out[c, 3] = total
        out[c, 4] = total / purchases
        if n_days > 1:
            n_gaps = n_days - 1
            mean = gap_sum / n_gaps
            out[c, 5] = mean
            out[c, 6] = np.sqrt(max(gap_sq / n_gaps - mean * mean, 0.0))
            out[c, 10] = later_spend / n_gaps
        else:
            # One purchase day: the gap so far is censored at the time since it.
            out[c, 5] = float(as_of_day - first_day)
            out[c, 6] = 0.0
            out[c, 10] = 0.0
        out[c, 7] = n_days - 1
        out[c, 8] = float(prev_day - first_day)
        out[c, 9] = float(as_of_day - first_day)
        for j in range(n_channels):
            channel_share[c, j] /= purchases


@parallel
def line_features(offsets, amount, category, out):
    """Refund share and category breadth per customer, over order lines.

    Distinct categories are counted over the customer's own codes, sorted: linear in the lines
    whatever the number of categories (a SKU mapped as the category has millions). Entropy is
    summed over the categories in code order, as a scan over every code would.

    Parameters
    ----------
    offsets : int64[n_customers + 1]     # IN  CSR offsets into the line arrays
    amount : float64[n_lines]            # IN  line amount, negative = refund
    category : int32[n_lines]            # IN  category code, -1 when unknown
    out : float64[n_customers, 3]        # OUT refund_share, category_count, category_entropy
    """
    n = offsets.shape[0] - 1
    for c in numba_prange(n):
        lo = offsets[c]
        hi = offsets[c + 1]
        gross = 0.0
        refunded = 0.0
        for i in range(lo, hi):
            a = amount[i]
            if a > 0:
                gross += a
            elif a < 0:
                refunded -= a
        if gross > 0:
            out[c, 0] = min(refunded / gross, 1.0)
        else:
            out[c, 0] = 1.0 if refunded > 0 else 0.0
        codes = np.sort(category[lo:hi])
        known = 0
        for i in range(codes.shape[0]):
            if codes[i] >= 0:
                known += 1
        distinct = 0
        entropy = 0.0
        i = 0
        while i < codes.shape[0]:
            j = i
            while j < codes.shape[0] and codes[j] == codes[i]:
                j += 1
            if codes[i] >= 0:
                distinct += 1
                p = (j - i) / known
                entropy -= p * np.log(p)
            i = j
        out[c, 1] = distinct
        out[c, 2] = entropy


@parallel
def sort_within(offsets, key, tie, out_perm):
    """Argsort by (key, tie) within each CSR range (ranges stay in place); equal pairs keep their order.

    Parameters
    ----------
    offsets : int64[n + 1]     # IN  range boundaries
    key : int64[m]             # IN  sort key
    tie : int64[m]             # IN  second key, deciding between equal keys
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
