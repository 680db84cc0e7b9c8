"""Clean lines grouped by customer, collapsed into orders (the cohort table's input).

Lines come grouped by customer in line order (engine.features.build: by order id, time,
input position); an order's time is its earliest line's and its amount the exact (correctly
rounded) sum of its lines, 0 within their rounding (kernels.exact_sum.net_sum), so an order whose
lines cancel nets to exactly 0 and its sign does not depend on line order (but for nets within
the rounding of the lines' absolute sum, itself summed in line order, at 2^-52 of it). Orders are
sorted by time within each customer, ties by the input position of their first line: the same whether
the input is processed whole or bucket by bucket (buckets keep input order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.kernels.exact_sum import segment_sums
from segmint.kernels.sequence import sort_within

__all__ = ["Grouped", "Orders", "collapse_orders"]


@dataclass(frozen=True)
class Grouped:
    """Lines grouped by customer: customer c's lines are positions offsets[c]:offsets[c+1]."""

    ids: pl.Series                  # one per customer, in group order
    offsets: np.ndarray             # int64[n_customers + 1]
    perm: np.ndarray                # int32 or int64[n_lines]: input row of each grouped line
    ts: np.ndarray                  # int64[n_lines]: microseconds since epoch
    amount: np.ndarray              # float64[n_lines]
    order_key: np.ndarray | None    # int64[n_lines]; None without an order column (a line is an order)


@dataclass(frozen=True)
class Orders:
    """Orders per customer (CSR on the same customers), sorted by time."""

    offsets: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    channel: np.ndarray


def collapse_orders(g: Grouped, channel: np.ndarray | None = None) -> Orders:
    """Order-level CSR arrays; ``channel`` (grouped line codes) gives each order its first line's."""
    if channel is None:
        channel = np.full(g.ts.size, -1, np.int32)
    if g.order_key is None:
        return Orders(g.offsets, g.ts, g.amount, channel)
    # Lines are sorted by (customer, order, ts): an order starts where either changes,
    # and its first line carries its earliest time.
    new_customer = np.zeros(g.ts.size, bool)
    new_customer[g.offsets[:-1]] = True
    start = np.flatnonzero(new_customer | np.concatenate(([True], g.order_key[1:] != g.order_key[:-1])))
    o_cust = np.cumsum(new_customer)[start] - 1
    counts = np.bincount(o_cust, minlength=g.offsets.size - 1)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    # By time, ties by the input position of the order's first line.
    o_ts = g.ts[start]
    within = np.empty(start.size, np.int64)
    sort_within(offsets, o_ts, g.perm[start], within)
    amount = np.empty(start.size)
    segment_sums(g.amount, np.append(start, g.amount.size).astype(np.int64), amount)
    return Orders(offsets, o_ts[within], amount[within], channel[start][within])
