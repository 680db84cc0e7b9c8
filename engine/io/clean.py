"""Turn the mapped source rows into canonical order lines, quarantining what cannot be used.

Nothing is dropped silently: each unusable row goes to the rejects table with
its reason, and ``rows_in == rows_used + sum(rejected.values())``. Reasons, in
the order they are tested (a row gets the first that applies):

- ``null_customer_id``
- ``null_timestamp``: the time cell is empty
- ``unparseable_timestamp``: the time cell does not parse with ``--time-format``
- ``non_finite_amount``: amount (or quantity x price) is null, NaN or infinite
- ``after_as_of``: the time is later than the as-of instant
- ``duplicate``: only with ``--dedupe-on``; every repeat after the first
  occurrence (in input order) of a row on exactly those columns

Identical lines are kept by default (they can be separate purchases); their
number is reported as ``repeated_lines``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.engine.config import Columns, EventSource, RunConfig, parse_as_of
from segmint.engine.errors import InputContractError

__all__ = ["REASONS", "EVENT_REASONS", "CleanResult", "EventClean", "clean", "clean_events", "repeated_lines",
           "latest_valid_ts"]

REASONS = ("null_customer_id", "null_timestamp", "unparseable_timestamp",
           "non_finite_amount", "after_as_of", "duplicate")
EVENT_REASONS = ("null_customer_id", "null_timestamp", "unparseable_timestamp", "null_event_type",
                 "after_as_of")


@dataclass(frozen=True)
class CleanResult:
    """Canonical lines, quarantined rows and the counts that reconcile them."""

    lines: pl.DataFrame        # customer_id, ts (datetime[us]), amount, [order_id, channel, category]
    rejects: pl.DataFrame      # the mapped source columns as read, plus ``reason``
    as_of: dt.datetime
    columns: Columns           # the mapping as resolved against the input
    rows_in: int
    rejected: dict[str, int]   # every reason, zero included
    repeated_lines: int

    @property
    def rows_used(self) -> int:
        return self.lines.height


def clean(raw: pl.DataFrame, cfg: RunConfig, *, as_of: dt.datetime | None = None,
          allow_empty: bool = False) -> CleanResult:
    """Split ``raw`` (the mapped source columns) into usable lines and rejects.

    ``as_of`` overrides ``cfg.as_of`` (bucketed runs pass the one computed over all
    the input); ``allow_empty`` lets a bucket hold only rejects (the run checks the total).
    """
    c = cfg.columns
    df = _with_basic_reason(raw, raw.schema, cfg)
    if as_of is None:
        as_of = _resolve_as_of(df, cfg.as_of)
    df = df.with_columns(__reason=pl.when(pl.col("__reason").is_null() & (pl.col("__ts") > as_of))
                         .then(pl.lit("after_as_of")).otherwise(pl.col("__reason")))
    if cfg.dedupe_on:
        first = pl.struct(*cfg.dedupe_on, pl.col("__reason").is_null()).is_first_distinct()
        df = df.with_columns(__reason=pl.when(pl.col("__reason").is_null() & ~first)
                             .then(pl.lit("duplicate")).otherwise(pl.col("__reason")))
    counts = dict(df.group_by("__reason").len().drop_nulls("__reason").iter_rows())
    lines = df.filter(pl.col("__reason").is_null()).select(
        pl.col("__cid").alias("customer_id"),
        pl.col("__ts").alias("ts"),
        pl.col("__amount").alias("amount"),
        *_optional(c.order, "order_id", keep_type=True),
        *_optional(c.channel, "channel"),
        *_optional(c.category, "category"),
    )
    if lines.height == 0 and not allow_empty:
        msg = (f"no usable rows: all {df.height} rows were rejected "
               f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}); check the column mapping")
        raise InputContractError(msg)
    return CleanResult(
        lines=lines,
        rejects=df.filter(pl.col("__reason").is_not_null())
                  .select(*raw.columns, pl.col("__reason").alias("reason")),
        as_of=as_of,
        columns=c,
        rows_in=df.height,
        rejected={r: int(counts.get(r, 0)) for r in REASONS},
        repeated_lines=repeated_lines(raw),
    )


@dataclass(frozen=True)
class EventClean:
    events: pl.DataFrame       # customer_id, ts, event_type (str), [session_id]
    rejects: pl.DataFrame      # the mapped source columns as read, plus ``reason``
    rows_in: int
    rejected: dict[str, int]


def clean_events(raw: pl.DataFrame, src: EventSource, as_of: dt.datetime) -> EventClean:
    """Quarantine unusable event rows (EVENT_REASONS, first that applies) and canonicalise the rest.

    The as-of instant is the transactions' one, so events and purchases share one clock.
    """
    df = raw.with_columns(__cid=_customer(raw.schema, src.customer),
                          __ts=_timestamp(raw.schema, src.time, src.time_format))
    reason = (
        pl.when(pl.col("__cid").is_null()).then(pl.lit("null_customer_id"))
        .when(pl.col(src.time).is_null()).then(pl.lit("null_timestamp"))
        .when(pl.col("__ts").is_null()).then(pl.lit("unparseable_timestamp"))
        .when(pl.col(src.event_type).is_null()).then(pl.lit("null_event_type"))
        .when(pl.col("__ts") > as_of).then(pl.lit("after_as_of"))
    )
    df = df.with_columns(__reason=reason)
    counts = dict(df.group_by("__reason").len().drop_nulls("__reason").iter_rows())
    events = df.filter(pl.col("__reason").is_null()).select(
        pl.col("__cid").alias("customer_id"),
        pl.col("__ts").alias("ts"),
        pl.col(src.event_type).cast(pl.String).str.to_lowercase().alias("event_type"),
        *_optional(src.session, "session_id"),
    )
    return EventClean(
        events=events,
        rejects=df.filter(pl.col("__reason").is_not_null()).select(*raw.columns, pl.col("__reason").alias("reason")),
        rows_in=df.height,
        rejected={r: int(counts.get(r, 0)) for r in EVENT_REASONS},
    )


def latest_valid_ts(lf: pl.LazyFrame, cfg: RunConfig) -> dt.datetime | None:
    """The latest timestamp among rows with no basic reject reason (one streaming pass)."""
    return (_with_basic_reason(lf, lf.collect_schema(), cfg).filter(pl.col("__reason").is_null())
            .select(pl.col("__ts").max()).collect().item())


def _with_basic_reason(frame, schema: pl.Schema, cfg: RunConfig):
    """Canonical __cid, __ts, __amount and the reasons that need no as-of (DataFrame or LazyFrame)."""
    c = cfg.columns
    frame = frame.with_columns(
        __cid=_customer(schema, c.customer),
        __ts=_timestamp(schema, c.time, c.time_format),
        __amount=_amount(cfg),
    )
    return frame.with_columns(__reason=(
        pl.when(pl.col("__cid").is_null()).then(pl.lit("null_customer_id"))
        .when(pl.col(c.time).is_null()).then(pl.lit("null_timestamp"))
        .when(pl.col("__ts").is_null()).then(pl.lit("unparseable_timestamp"))
        .when(~pl.col("__amount").is_finite().fill_null(False)).then(pl.lit("non_finite_amount"))
    ))


def repeated_lines(raw: pl.DataFrame) -> int:
    """Rows that repeat an earlier row on every column (exact).

    Rows are hashed first; only rows whose hash occurs twice or more are
    compared exactly, so the cost is one hash and one sort of 64-bit values.
    (The hash is used within this call only; it is never stored.)
    """
    hashes = raw.select(pl.struct(pl.all()).hash().alias("h"))["h"]
    ordered = hashes.sort()
    values = ordered.to_numpy()
    repeated = np.unique(values[1:][values[1:] == values[:-1]])
    if repeated.size == 0:
        return 0
    candidates = raw.filter(hashes.is_in(pl.Series(repeated)))
    return candidates.height - candidates.n_unique()


def _resolve_as_of(df: pl.DataFrame, as_of: str | None) -> dt.datetime:
    if as_of is not None:
        return parse_as_of(as_of)
    latest = df.filter(pl.col("__reason").is_null())["__ts"].max()
    if latest is None:
        return dt.datetime.max  # nothing valid: clean() reports it with the counts
    return latest


def _customer(schema: pl.Schema, name: str) -> pl.Expr:
    dtype = schema[name]
    col = pl.col(name)
    if dtype == pl.String or dtype.is_integer():
        return col
    return col.cast(pl.String)


def _timestamp(schema: pl.Schema, name: str, fmt: str | None) -> pl.Expr:
    dtype = schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    text = col.cast(pl.String).str.strip_chars()
    if fmt is None:
        return text.str.to_datetime(strict=False, time_unit="us")
    return text.str.to_datetime(fmt, strict=False, time_unit="us")


def _amount(cfg: RunConfig) -> pl.Expr:
    c = cfg.columns
    if c.amount is not None:
        return pl.col(c.amount).cast(pl.Float64)
    return pl.col(c.quantity).cast(pl.Float64) * pl.col(c.price).cast(pl.Float64)


def _optional(source: str | None, name: str, *, keep_type: bool = False) -> list[pl.Expr]:
    if source is None:
        return []
    col = pl.col(source)
    return [(col if keep_type else col.cast(pl.String)).alias(name)]
