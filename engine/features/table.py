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
from segmint.kernels.sequence import ORDER_FEATURES, line_features, order_features

__all__ = ["FeatureTable", "compute_features", "channel_columns", "LINE_FEATURES"]

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
    has_order = "order_id" in lines.columns
    if channels is None:
        channels = _fit_channels(lines, cfg.max_channels) if "channel" in lines.columns else ()
    keys = ["customer_id", *(["order_id"] if has_order else []), "ts", "amount",
            *[c for c in ("channel", "category") if c in lines.columns]]
    # Sorting on every column makes the row order, and so the float sums, unique.
    df = lines.sort(keys, nulls_last=True, maintain_order=True).with_columns(
        __channel=_codes(lines, "channel", channels),
        __category=(pl.col("category").rank("dense").cast(pl.Int32) - 1).fill_null(-1)
        if "category" in lines.columns else pl.lit(-1, pl.Int32),
    )
    cust_start = df.select(pl.col("customer_id").ne_missing(pl.col("customer_id").shift())
                           .arg_true()).to_series().to_numpy()
    ids = df["customer_id"].gather(cust_start)
    ts = df["ts"].dt.epoch("us").to_numpy()
    amount = df["amount"].to_numpy()
    channel = df["__channel"].to_numpy()
    line_offsets = np.append(cust_start, df.height).astype(np.int64)

    order_offsets, o_ts, o_amount, o_channel = _orders(df, line_offsets, ts, amount, channel, has_order)
    n = ids.len()
    order_out = np.empty((n, len(ORDER_FEATURES)), np.float64)
    shares = np.empty((n, len(channels)), np.float64)
    order_features(order_offsets, o_ts, o_amount, o_channel, _epoch_us(as_of), order_out, shares)
    line_out = np.empty((n, len(LINE_FEATURES)), np.float64)
    category = df["__category"].to_numpy()
    line_features(line_offsets, amount, category, int(category.max()) + 1, line_out)

    cols: dict[str, np.ndarray] = dict(zip(ORDER_FEATURES, order_out.T, strict=True))
    cols["refund_share"] = line_out[:, 0]
    if "category" in lines.columns:
        cols["category_count"] = line_out[:, 1]
        cols["category_entropy"] = line_out[:, 2]
    cols.update(zip(channel_columns(channels), shares.T, strict=True))
    table = pl.DataFrame({"customer_id": ids, **cols}).with_columns(
        *(pl.col(c).cast(pl.Int64) for c in _INTEGER if c in cols))
    if rfm_cuts is None:
        rfm_cuts = fit_rfm_cuts(table)
    table = table.with_columns(*rfm_columns(rfm_cuts, cfg.rfm_grid),
                               activity_status=activity_status(cfg.lifecycle))
    return FeatureTable(table=table, channels=tuple(channels), rfm_cuts=rfm_cuts)


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


def _fit_channels(lines: pl.DataFrame, cap: int) -> tuple[str, ...]:
    # The most common channels (ties by name), listed by name so columns are stable.
    top = (lines.group_by("channel").len().drop_nulls("channel")
           .sort(["len", "channel"], descending=[True, False]).head(cap))
    return tuple(sorted(top["channel"].to_list()))


def _codes(lines: pl.DataFrame, name: str, vocab: Sequence[str]) -> pl.Expr:
    if name not in lines.columns or not vocab:
        return pl.lit(-1, pl.Int32)
    return pl.col(name).replace_strict(list(vocab), list(range(len(vocab))),
                                       default=-1, return_dtype=pl.Int32)


def _orders(df: pl.DataFrame, line_offsets: np.ndarray, ts: np.ndarray, amount: np.ndarray,
            channel: np.ndarray, has_order: bool):
    """Order-level CSR arrays, orders sorted by (customer, time)."""
    if not has_order:
        return line_offsets, ts, amount, channel
    # Lines are sorted by (customer, order, ts): an order starts where either changes,
    # and its first line carries its earliest time.
    start = df.select((pl.col("customer_id").ne_missing(pl.col("customer_id").shift())
                       | pl.col("order_id").ne_missing(pl.col("order_id").shift())).arg_true()
                      ).to_series().to_numpy()
    o_amount = np.add.reduceat(amount, start)
    o_ts = ts[start]
    o_channel = channel[start]
    o_cust = np.searchsorted(line_offsets, start, side="right") - 1
    perm = np.lexsort((o_ts, o_cust))
    counts = np.bincount(o_cust, minlength=line_offsets.size - 1)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return offsets, o_ts[perm], o_amount[perm], o_channel[perm]


def _epoch_us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
