"""The per-customer feature table (definitions: README, "Features").

Polars sorts the lines and collapses them into orders; the Numba kernels in
``segmint.kernels.sequence`` reduce each customer in a fixed order, so float
sums, and therefore every output, are identical from run to run (a Polars
group_by sum is not: its summation order follows thread scheduling).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.engine.config import FeatureConfig
from segmint.engine.features.lifecycle import activity_status
from segmint.engine.features.rfm import RfmCuts, fit_rfm_cuts, rfm_columns
from segmint.kernels.grouping import group_rows, sort_segments, take
from segmint.kernels.sequence import ORDER_FEATURES, line_features, order_features, sort_within

__all__ = ["FeatureTable", "compute_features", "base_features", "add_scores", "channel_counts", "top_channels",
           "channel_columns", "LINE_FEATURES"]

LINE_FEATURES = ("refund_share", "category_count", "category_entropy")
_INTEGER = ("frequency", "lt_frequency", "category_count")


@dataclass(frozen=True)
class FeatureTable:
    """Features of every customer (sorted by customer_id) and what fixed them."""

    table: pl.DataFrame
    channels: tuple[str, ...]     # channel vocabulary, in share-column order
    rfm_cuts: RfmCuts


def compute_features(lines: pl.DataFrame, as_of: dt.datetime, cfg: FeatureConfig, *,
                     channels: Sequence[str] | None = None,
                     rfm_cuts: RfmCuts | None = None) -> FeatureTable:
    """Per-customer features from clean lines.

    Parameters
    ----------
    lines : customer_id, ts (datetime[us]), amount, optional order_id, channel, category
    as_of : the as-of instant (naive UTC)
    cfg : feature settings (lifecycle thresholds, RFM grid, channel cap)
    channels, rfm_cuts : fixed by a saved model when scoring new customers;
        fitted on ``lines`` when None.
    """
    if channels is None:
        channels = top_channels(channel_counts(lines), cfg.max_channels)
    table = base_features(lines, as_of, channels)
    if rfm_cuts is None:
        rfm_cuts = fit_rfm_cuts(table)
    return FeatureTable(table=add_scores(table, rfm_cuts, cfg), channels=tuple(channels), rfm_cuts=rfm_cuts)


def base_features(lines: pl.DataFrame, as_of: dt.datetime, channels: Sequence[str]) -> pl.DataFrame:
    """Everything that depends on a customer's own lines only (no population cut points), by customer_id."""
    has_order = "order_id" in lines.columns
    ts = lines["ts"].dt.epoch("us").to_numpy()
    order_key = _order_key(lines["order_id"]) if has_order else None
    perm, line_offsets = _customer_order(lines["customer_id"], order_key if has_order else ts, ts)
    ids = lines["customer_id"].gather(perm[line_offsets[:-1]])
    ts = _take(ts, perm)
    amount = _take(lines["amount"].to_numpy(), perm)
    channel = _take(_codes(lines, "channel", channels), perm)
    category = _take(_codes(lines, "category", _vocabulary(lines, "category")), perm)
    order_key = _take(order_key, perm) if has_order else None

    order_offsets, o_ts, o_amount, o_channel = _orders(order_key, line_offsets, ts, amount, channel)
    n = ids.len()
    order_out = np.empty((n, len(ORDER_FEATURES)), np.float64)
    shares = np.empty((n, len(channels)), np.float64)
    order_features(order_offsets, o_ts, o_amount, o_channel, _epoch_us(as_of), order_out, shares)
    line_out = np.empty((n, len(LINE_FEATURES)), np.float64)
    line_features(line_offsets, amount, category, int(category.max(initial=-1)) + 1, line_out)

    cols: dict[str, np.ndarray] = dict(zip(ORDER_FEATURES, order_out.T, strict=True))
    cols["refund_share"] = line_out[:, 0]
    if "category" in lines.columns:
        cols["category_count"] = line_out[:, 1]
        cols["category_entropy"] = line_out[:, 2]
    cols.update(zip(channel_columns(channels), shares.T, strict=True))
    table = pl.DataFrame({"customer_id": ids, **cols}).with_columns(
        *(pl.col(c).cast(pl.Int64) for c in _INTEGER if c in cols))
    if not lines.schema["customer_id"].is_integer():
        table = table.sort("customer_id")  # string ids were grouped by code, not by value
    return table


def add_scores(table: pl.DataFrame, cuts: RfmCuts, cfg: FeatureConfig) -> pl.DataFrame:
    """RFM scores and segments on the population's cut points, and activity status."""
    return table.with_columns(*rfm_columns(cuts, cfg.rfm_grid), activity_status=activity_status(cfg.lifecycle))


def channel_counts(lines: pl.DataFrame) -> pl.DataFrame:
    """Lines per channel (channel, len); empty without a channel column. Counts add across buckets."""
    if "channel" not in lines.columns:
        return pl.DataFrame(schema={"channel": pl.String, "len": pl.UInt32})
    return lines.group_by("channel").len().drop_nulls("channel")


def top_channels(counts: pl.DataFrame, cap: int) -> tuple[str, ...]:
    """The ``cap`` most common channels (ties by name), listed by name so columns are stable."""
    summed = counts.group_by("channel").agg(pl.col("len").sum())
    top = summed.sort(["len", "channel"], descending=[True, False]).head(cap)
    return tuple(sorted(top["channel"].to_list()))


def channel_columns(channels: Sequence[str]) -> list[str]:
    """Feature names of the channel shares, e.g. ``channel_share_web`` (made unique)."""
    names: list[str] = []
    for c in channels:
        base = f"channel_share_{re.sub(r'[^0-9a-zA-Z]+', '_', c).strip('_').lower() or 'blank'}"
        name, i = base, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


def _codes(lines: pl.DataFrame, name: str, vocab: Sequence[str]) -> np.ndarray:
    """int32 position of each row's value in ``vocab``; -1 for null, a value outside it, or no column."""
    if name not in lines.columns or not vocab:
        return np.full(lines.height, -1, np.int32)
    # A non-strict cast makes values outside the vocabulary null, like the nulls themselves.
    code = pl.col(name).cast(pl.Enum(list(vocab)), strict=False).to_physical().cast(pl.Int32).fill_null(-1)
    return lines.select(code).to_series().to_numpy()


def _vocabulary(lines: pl.DataFrame, name: str) -> list[str]:
    if name not in lines.columns:
        return []
    return lines[name].drop_nulls().unique().sort().to_list()


def _orders(order_key: np.ndarray | None, line_offsets: np.ndarray, ts: np.ndarray, amount: np.ndarray,
            channel: np.ndarray):
    """Order-level CSR arrays, orders sorted by (customer, time)."""
    if order_key is None:
        return line_offsets, ts, amount, channel
    # Lines are sorted by (customer, order, ts): an order starts where either changes,
    # and its first line carries its earliest time.
    new_customer = np.zeros(ts.size, bool)
    new_customer[line_offsets[:-1]] = True
    start = np.flatnonzero(new_customer | np.concatenate(([True], order_key[1:] != order_key[:-1])))
    o_cust = np.cumsum(new_customer)[start] - 1
    counts = np.bincount(o_cust, minlength=line_offsets.size - 1)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    o_ts = ts[start]
    perm = np.empty(start.size, np.int64)
    sort_within(offsets, o_ts, perm)
    return offsets, o_ts[perm], np.add.reduceat(amount, start)[perm], channel[start][perm]


def _customer_order(customer_id: pl.Series, major: np.ndarray, minor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by customer (in id order), then by (major, minor) within each customer: the
    permutation of a stable lexsort, in linear time, and the customers' CSR offsets into it.
    Ties keep their input order, so the row order, and with it every float sum, is the same on
    every run."""
    group, n_customers = _dense_ranks(_int_key(customer_id))
    perm = np.empty(group.size, np.int64)
    offsets = np.empty(n_customers + 1, np.int64)
    group_rows(group, n_customers, perm, offsets)
    sort_segments(offsets, perm, major, minor)
    return perm, offsets


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


def _take(src: np.ndarray, perm: np.ndarray) -> np.ndarray:
    out = np.empty(perm.size, src.dtype)
    take(src, perm, out)
    return out


def _int_key(col: pl.Series) -> np.ndarray:
    """An int64 sort key that groups equal values: the value itself for integers, else a
    categorical code (grouping only; callers restore value order where it matters)."""
    if col.dtype.is_integer():
        return col.cast(pl.Int64).to_numpy()
    return col.cast(pl.String).cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()


def _order_key(col: pl.Series) -> np.ndarray:
    """Like _int_key, but a line without an order id is an order of its own (a fresh key above all others)."""
    missing = col.is_null().to_numpy()
    key = _int_key(col.fill_null(0 if col.dtype.is_integer() else "")).copy()
    if missing.any():
        top = int(key[~missing].max()) if (~missing).any() else 0
        key[missing] = top + 1 + np.flatnonzero(missing)
    return key


def _epoch_us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
