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
from segmint.engine.features.orders import collapse_orders, group_lines, take
from segmint.kernels.sequence import ORDER_FEATURES, line_features, order_features

__all__ = ["FeatureTable", "compute_features", "customer_features", "base_features", "add_rfm", "channel_counts",
           "top_channels", "channel_columns", "LINE_FEATURES"]

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
    """Per-customer features of clean lines held in memory (the pipeline does the same bucket by bucket).

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
    table = customer_features(lines, as_of, channels, cfg)
    if rfm_cuts is None:
        rfm_cuts = fit_rfm_cuts(table)
    return FeatureTable(table=add_rfm(table, rfm_cuts, cfg), channels=tuple(channels), rfm_cuts=rfm_cuts)


def customer_features(lines: pl.DataFrame, as_of: dt.datetime, channels: Sequence[str],
                      cfg: FeatureConfig) -> pl.DataFrame:
    """Everything that depends on a customer's own lines only (no population cut points), by
    customer_id: the order and line features, channel shares and activity status."""
    return base_features(lines, as_of, channels).with_columns(activity_status=activity_status(cfg.lifecycle))


def base_features(lines: pl.DataFrame, as_of: dt.datetime, channels: Sequence[str]) -> pl.DataFrame:
    """The order and line features and channel shares of every customer, by customer_id."""
    g = group_lines(lines)
    channel = take(_codes(lines, "channel", channels), g.perm)
    category = take(_codes(lines, "category", _vocabulary(lines, "category")), g.perm)
    o = collapse_orders(g, channel)
    n = g.ids.len()
    order_out = np.empty((n, len(ORDER_FEATURES)), np.float64)
    shares = np.empty((n, len(channels)), np.float64)
    order_features(o.offsets, o.ts, o.amount, o.channel, _epoch_us(as_of), order_out, shares)
    line_out = np.empty((n, len(LINE_FEATURES)), np.float64)
    line_features(g.offsets, g.amount, category, line_out)

    cols: dict[str, np.ndarray] = dict(zip(ORDER_FEATURES, order_out.T, strict=True))
    cols["refund_share"] = line_out[:, 0]
    if "category" in lines.columns:
        cols["category_count"] = line_out[:, 1]
        cols["category_entropy"] = line_out[:, 2]
    cols.update(zip(channel_columns(channels), shares.T, strict=True))
    table = pl.DataFrame({"customer_id": g.ids, **cols}).with_columns(
        *(pl.col(c).cast(pl.Int64) for c in _INTEGER if c in cols))
    if not (lines.schema["customer_id"].is_integer()):
        table = table.sort("customer_id")  # string ids were grouped by code, not by value
    return table


def add_rfm(table: pl.DataFrame, cuts: RfmCuts, cfg: FeatureConfig) -> pl.DataFrame:
    """RFM scores and segments on the population's cut points."""
    return table.with_columns(*rfm_columns(cuts, cfg.rfm_grid))


def channel_counts(lines: pl.DataFrame) -> dict[str, int]:
    """Lines per channel; empty without a channel column. Counts add across buckets."""
    if "channel" not in lines.columns:
        return {}
    return {str(k): int(v) for k, v in lines.group_by("channel").len().drop_nulls("channel").iter_rows()}


def top_channels(counts: dict[str, int], cap: int) -> tuple[str, ...]:
    """The ``cap`` most common channels (ties by name), listed by name so columns are stable."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:cap]
    return tuple(sorted(name for name, _ in top))


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


def _epoch_us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
