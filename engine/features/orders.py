"""Lines grouped by customer and collapsed into orders, in an order that never depends on the split.

Lines are grouped by customer (a counting sort on dense customer ranks) and sorted
within each customer by (order id, time), ties in input order; an order's time is its
earliest line's and its amount the exact (correctly rounded) sum of its lines, so an
order whose lines cancel nets to exactly 0 and its sign never depends on line order. Orders are then
sorted by time within each customer, ties by the input position of their first line.
Every float sum therefore runs in an order fixed by each customer's own rows: the
same whether the input is processed whole or bucket by bucket (buckets keep input
order). Order ids are ranked by value, never by categorical codes, whose numbering
depends on what else a process has seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.kernels.grouping import group_rows, sort_segments
from segmint.kernels.exact_sum import segment_sums
from segmint.kernels.grouping import take as take_kernel
from segmint.kernels.sequence import sort_within

__all__ = ["Grouped", "Orders", "group_lines", "collapse_orders", "take"]


@dataclass(frozen=True)
class Grouped:
    """Lines grouped by customer: customer c's lines are positions offsets[c]:offsets[c+1]."""

    ids: pl.Series                  # one per customer, in group order
    offsets: np.ndarray             # int64[n_customers + 1]
    perm: np.ndarray                # int64[n_lines]: input row of each grouped line
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


def group_lines(lines: pl.DataFrame) -> Grouped:
    """Group ``lines`` (customer_id, ts, amount, optional order_id) by customer."""
    has_order = "order_id" in lines.columns
    ts = lines["ts"].dt.epoch("us").to_numpy()
    order_key = _order_key(lines["order_id"]) if has_order else None
    group, n_customers = _dense_ranks(_int_key(lines["customer_id"]))
    perm = np.empty(group.size, np.int64)
    offsets = np.empty(n_customers + 1, np.int64)
    group_rows(group, n_customers, perm, offsets)
    sort_segments(offsets, perm, order_key if has_order else ts, ts)
    return Grouped(ids=lines["customer_id"].gather(perm[offsets[:-1]]), offsets=offsets, perm=perm,
                   ts=take(ts, perm), amount=take(lines["amount"].to_numpy(), perm),
                   order_key=take(order_key, perm) if has_order else None)


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


def take(src: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """src[perm], gathered on every core."""
    out = np.empty(perm.size, src.dtype)
    take_kernel(src, perm, out)
    return out


def _dense_ranks(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each key among the distinct keys (0-based, in value order), and their count."""
    if key.size and int(key.max()) - int(key.min()) < 4 * key.size:
        # Keys in a compact range (surrogate ids): a lookup table, no sort.
        shifted = key - key.min()
        present = np.zeros(int(shifted.max()) + 1, bool)
        present[shifted] = True
        return (np.cumsum(present) - 1)[shifted], int(present.sum())
    distinct, inverse = np.unique(key, return_inverse=True)
    return inverse.astype(np.int64), distinct.size


def _int_key(col: pl.Series) -> np.ndarray:
    """An int64 key that groups equal customer ids: the value for integers (UInt64 shifted by
    2^63, which keeps their order), else a categorical code (grouping only: the feature table
    is sorted by id afterwards)."""
    if col.dtype == pl.UInt64:
        return (col.to_numpy() ^ np.uint64(1 << 63)).view(np.int64)
    if col.dtype.is_integer():
        return col.cast(pl.Int64).to_numpy()
    return col.cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()


def _order_key(col: pl.Series) -> np.ndarray:
    """An int64 key in order-id value order; a line without an order id is an order of its own
    (a fresh key above all others)."""
    missing = col.is_null().to_numpy()
    if col.dtype.is_integer() and not (
            missing.any() and int(col.max() or 0) > np.iinfo(np.int64).max - col.len() - 1):
        key = _int_key(col.fill_null(0)).copy()
    else:  # text (or integers with no room above the largest): dense ranks by value
        key = col.cast(pl.String).rank("dense").fill_null(0).cast(pl.Int64).to_numpy().copy()
    if missing.any():
        top = int(key[~missing].max()) if (~missing).any() else 0
        key[missing] = top + 1 + np.flatnonzero(missing)
    return key
