"""Turn the mapped source rows into canonical order lines, quarantining what cannot be used.

Nothing is dropped silently: each unusable row goes to the rejects table with
its reason, and ``rows_in == rows_used + sum(rejected.values())``. Reasons, in
the order they are tested (a row gets the first that applies):

- ``null_customer_id``
- ``null_timestamp``: the time cell is empty
- ``unparseable_timestamp``: the time does not parse (ISO 8601, or ``--time-format``)
- ``unparseable_amount``: an amount (or quantity, price) cell holds text that is not a number
- ``non_finite_amount``: amount (or quantity x price) is null, NaN or infinite
- ``future_timestamp``: without ``--as-of``, a time later than the moment the run started
- ``after_as_of``: the time is later than the as-of instant
- ``duplicate``: only with ``--dedupe-on``; every repeat after the first
  occurrence (in input order) of a row on exactly those columns
- ``amount_overflow``: every row of a customer whose absolute amounts sum beyond
  the float range (their totals cannot be computed)
- ``returns_only``: every row of a customer without a purchase: each of their
  orders (lines, without an order column) has a negative net amount

Rows identical on every mapped column are kept (they can be separate purchases,
and columns segmint does not read may tell them apart); their number is reported
as ``repeats_on_mapped_columns``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from segmint.engine import exact
from segmint.engine.config import Columns, EventSource, RunConfig, parse_as_of
from segmint.engine.errors import InputContractError
from segmint.engine.io.ids import customer_expr
from segmint.engine.io.times import timestamp_expr

__all__ = ["REASONS", "EVENT_REASONS", "CleanResult", "EventClean", "RowStats", "clean", "clean_events",
           "row_stats", "repeated_rows", "reason_column"]

REASONS = ("null_customer_id", "null_timestamp", "unparseable_timestamp", "unparseable_amount",
           "non_finite_amount", "future_timestamp", "after_as_of", "duplicate", "amount_overflow", "returns_only")
EVENT_REASONS = ("null_customer_id", "null_timestamp", "unparseable_timestamp", "null_event_type",
                 "future_timestamp", "after_as_of")
# A customer's rows can overflow only if one absolute amount exceeds float max / 2^40 rows.
_HUGE = 1e290


@dataclass(frozen=True)
class RowStats:
    """What the run needs to know of all rows before cleaning any bucket; adds up across chunks."""

    latest: dt.datetime | None        # latest time of a row with a valid id, time and amount
    channels: dict[str, int]          # lines per channel among those rows

    @staticmethod
    def merge(parts: list[RowStats]) -> RowStats:
        latest = max((p.latest for p in parts if p.latest is not None), default=None)
        channels: dict[str, int] = {}
        for p in parts:
            for name, n in p.channels.items():
                channels[name] = channels.get(name, 0) + n
        return RowStats(latest, channels)


@dataclass(frozen=True)
class CleanResult:
    """Canonical lines, quarantined rows and the counts that reconcile them."""

    lines: pl.DataFrame           # customer_id, ts (datetime[us]), amount, [order_id, channel, category]
    rejects: pl.DataFrame         # the mapped source columns as read, plus the reason column
    as_of: dt.datetime
    rows_in: int
    rejected: dict[str, int]      # every reason, zero included
    rejected_amount: dict[str, list[float]]  # per reason: exact partials of the finite rejected amounts
    repeats: int                  # rows identical to an earlier row on every mapped column
    stats: RowStats | None        # when the as-of was derived from these rows

    @property
    def rows_used(self) -> int:
        return self.lines.height


def clean(raw: pl.DataFrame, cfg: RunConfig, *, as_of: dt.datetime | None, now: dt.datetime) -> CleanResult:
    """Split ``raw`` (the mapped source columns) into usable lines and rejects.

    ``as_of`` is the run's as-of instant; None derives it from these rows (with
    ``stats``, as ``row_stats`` would), which is right only when ``raw`` holds the whole
    input. ``now`` is the moment the run started: without ``cfg.as_of``, later rows
    are ``future_timestamp``.
    """
    c = cfg.columns
    df = _with_basic_reason(raw, raw.schema, c, future_after=None if cfg.as_of else now)
    stats = None
    if as_of is None and cfg.as_of is not None:
        as_of = parse_as_of(cfg.as_of)
    if as_of is None:
        stats = _stats(df, c)
        as_of = stats.latest or now
    df = _mark(df, pl.col("__ts") > as_of, "after_as_of")
    if cfg.dedupe_on:
        first = pl.struct(*cfg.dedupe_on, pl.col("__reason").is_null()).is_first_distinct()
        df = _mark(df, ~first, "duplicate")
    df = _customer_checks(df, c)
    reason = reason_column(raw.columns)
    rejects = df.filter(pl.col("__reason").is_not_null())
    counts = dict(rejects.group_by("__reason").len().iter_rows())
    codes = rejects["__reason"].cast(pl.Enum(REASONS)).to_physical().to_numpy()
    # Every finite amount counts: a sum beyond the float range (amount_overflow rows, by definition) is
    # +-inf in the partials, which run.json reports as null, never as a total that leaves rows out.
    finite = np.isfinite(rejects["__amount"].fill_null(np.nan).to_numpy())
    amounts = exact.partials(codes[finite], rejects["__amount"].to_numpy()[finite], len(REASONS))
    lines = df.filter(pl.col("__reason").is_null()).select(
        pl.col("__cid").alias("customer_id"),
        pl.col("__ts").alias("ts"),
        pl.col("__amount").alias("amount"),
        *_optional(c.order, "order_id", keep_type=True),
        *_optional(c.channel, "channel"),
        *_optional(c.category, "category"),
    )
    return CleanResult(
        lines=lines,
        rejects=rejects.select(*raw.columns, pl.col("__reason").alias(reason)),
        as_of=as_of,
        rows_in=df.height,
        rejected={r: int(counts.get(r, 0)) for r in REASONS},
        rejected_amount=dict(zip(REASONS, amounts, strict=True)),
        repeats=repeated_rows(raw),
        stats=stats,
    )


def row_stats(raw: pl.DataFrame, cfg: RunConfig, *, now: dt.datetime) -> RowStats:
    """The as-of candidate and channel counts of ``raw``, over rows without a basic reject reason
    (valid customer, time and amount; not in the future when no as-of is given)."""
    return _stats(_with_basic_reason(raw, raw.schema, cfg.columns, future_after=None if cfg.as_of else now),
                  cfg.columns)


def _stats(df: pl.DataFrame, c: Columns) -> RowStats:
    valid = df.filter(pl.col("__reason").is_null())
    channels = {}
    if c.channel is not None:
        counts = valid.group_by(pl.col(c.channel).cast(pl.String).alias("c")).len().drop_nulls("c")
        channels = {str(k): int(v) for k, v in counts.iter_rows()}
    return RowStats(valid["__ts"].max(), channels)


def reason_column(source_columns: list[str]) -> str:
    """``reason``, or ``reject_reason`` when a source column already has that name."""
    for name in ("reason", "reject_reason", "segmint_reject_reason"):
        if name not in source_columns:
            return name
    msg = "the input has columns named reason, reject_reason and segmint_reject_reason; rename one"
    raise InputContractError(msg)


@dataclass(frozen=True)
class EventClean:
    events: pl.DataFrame       # customer_id, ts, event_type (str), [session_id]
    rejects: pl.DataFrame      # the mapped source columns as read, plus the reason column
    rows_in: int
    rejected: dict[str, int]


def clean_events(raw: pl.DataFrame, src: EventSource, as_of: dt.datetime, *,
                 future_after: dt.datetime | None) -> EventClean:
    """Quarantine unusable event rows (EVENT_REASONS, first that applies) and canonicalise the rest.

    The as-of instant is the transactions' one, so events and purchases share one clock.
    """
    df = raw.with_columns(__cid=customer_expr(raw.schema, src.customer),
                          __ts=timestamp_expr(src.time, raw.schema[src.time], src.time_format))
    reason = (
        pl.when(pl.col("__cid").is_null()).then(pl.lit("null_customer_id"))
        .when(pl.col(src.time).is_null()).then(pl.lit("null_timestamp"))
        .when(pl.col("__ts").is_null()).then(pl.lit("unparseable_timestamp"))
        .when(pl.col(src.event_type).is_null()).then(pl.lit("null_event_type"))
        .when(pl.lit(future_after is not None) & (pl.col("__ts") > (future_after or as_of)))
        .then(pl.lit("future_timestamp"))
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
        rejects=df.filter(pl.col("__reason").is_not_null()).select(
            *raw.columns, pl.col("__reason").alias(reason_column(raw.columns))),
        rows_in=df.height,
        rejected={r: int(counts.get(r, 0)) for r in EVENT_REASONS},
    )


def repeated_rows(raw: pl.DataFrame) -> int:
    """Rows that repeat an earlier row on every (mapped) column, exactly.

    Rows are hashed first; only rows whose hash occurs twice or more are
    compared exactly, so the cost is one hash and one sort of 64-bit values.
    (The hash is used within this call only; it is never stored.)
    """
    hashes = raw.select(pl.struct(pl.all()).hash().alias("h"))["h"]
    values = hashes.sort().to_numpy()
    repeated = np.unique(values[1:][values[1:] == values[:-1]])
    if repeated.size == 0:
        return 0
    candidates = raw.filter(hashes.is_in(pl.Series(repeated).implode()))
    return candidates.height - candidates.n_unique()


def _with_basic_reason(raw: pl.DataFrame, schema: pl.Schema, c: Columns, *,
                       future_after: dt.datetime | None) -> pl.DataFrame:
    """Canonical __cid, __ts, __amount and the reasons that need no as-of."""
    frame = raw.with_columns(
        __cid=customer_expr(schema, c.customer),
        __ts=timestamp_expr(c.time, schema[c.time], c.time_format),
        __amount=_amount(schema, c),
    )
    future = (pl.col("__ts") > future_after) if future_after is not None else pl.lit(False)
    return frame.with_columns(__reason=(
        pl.when(pl.col("__cid").is_null()).then(pl.lit("null_customer_id"))
        .when(pl.col(c.time).is_null()).then(pl.lit("null_timestamp"))
        .when(pl.col("__ts").is_null()).then(pl.lit("unparseable_timestamp"))
        .when(_unparseable_amount(schema, c)).then(pl.lit("unparseable_amount"))
        .when(~pl.col("__amount").is_finite().fill_null(False)).then(pl.lit("non_finite_amount"))
        .when(future).then(pl.lit("future_timestamp"))
    ))


def _mark(df: pl.DataFrame, condition: pl.Expr, reason: str) -> pl.DataFrame:
    return df.with_columns(__reason=pl.when(pl.col("__reason").is_null() & condition)
                           .then(pl.lit(reason)).otherwise(pl.col("__reason")))


def _customer_checks(df: pl.DataFrame, c: Columns) -> pl.DataFrame:
    """amount_overflow and returns_only, decided per customer over their remaining rows.

    Only customers with a negative or huge amount can fail either, so only their rows are
    grouped. An order is a purchase when its exact net amount is >= 0 (as in the features):
    a Polars sum decides every order whose net is clearly away from zero; the few that net
    to about zero (lines that cancel) are summed exactly.
    """
    ok = pl.col("__reason").is_null()
    suspects = df.filter(ok & ((pl.col("__amount") < 0) | (pl.col("__amount").abs() > _HUGE)))["__cid"].unique()
    if suspects.len() == 0:
        return df
    rows = df.with_row_index("__row").filter(ok & pl.col("__cid").is_in(suspects.implode()))
    # An order is (customer, order id); a line without an order id (or without an order column)
    # is an order of its own, keyed by its row.
    keys = [pl.col(c.order).alias("__order"), pl.when(pl.col(c.order).is_null()).then(pl.col("__row")).alias("__line")] \
        if c.order else [pl.col("__row").alias("__line")]
    rows = rows.select("__cid", "__amount", *keys)
    names = ["__cid", *[k.meta.output_name() for k in keys]]
    orders = rows.group_by(names).agg(pl.col("__amount").sum().alias("net"),
                                      pl.col("__amount").abs().sum().alias("gross"))
    near_zero = pl.col("gross").is_finite() & (pl.col("net").abs() <= 1e-9 * pl.col("gross"))
    close = orders.filter(near_zero)
    if close.height:
        lines = rows.join(close.select(names), on=names, nulls_equal=True).group_by(names).agg("__amount")
        exact_net = lines.select(*names, pl.Series("net", [math.fsum(v) for v in lines["__amount"].to_list()],
                                                   dtype=pl.Float64))
        close = close.drop("net").join(exact_net, on=names, nulls_equal=True).select(orders.columns)
    orders = pl.concat([orders.filter(~near_zero), close])
    per_customer = orders.group_by("__cid").agg(pl.col("gross").sum().is_finite().alias("finite"),
                                                (pl.col("net") >= 0).any().alias("buys"))
    overflow = per_customer.filter(~pl.col("finite"))["__cid"]
    returns_only = per_customer.filter(pl.col("finite") & ~pl.col("buys"))["__cid"]
    df = _mark(df, pl.col("__cid").is_in(overflow.implode()), "amount_overflow")
    return _mark(df, pl.col("__cid").is_in(returns_only.implode()), "returns_only")


def _amount(schema: pl.Schema, c: Columns) -> pl.Expr:
    if c.amount is not None:
        return _number(schema, c.amount)
    return _number(schema, c.quantity) * _number(schema, c.price)


def _number(schema: pl.Schema, name: str) -> pl.Expr:
    col = pl.col(name)
    if schema[name] == pl.String:  # CSV cells are read as text: parse them here, quarantine what fails
        return col.str.strip_chars().cast(pl.Float64, strict=False)
    return col.cast(pl.Float64)


def _unparseable_amount(schema: pl.Schema, c: Columns) -> pl.Expr:
    names = [c.amount] if c.amount is not None else [c.quantity, c.price]
    text = [n for n in names if schema[n] == pl.String]
    if not text:
        return pl.lit(False)
    return pl.any_horizontal([pl.col(n).is_not_null() & _number(schema, n).is_null() for n in text])


def _optional(source: str | None, name: str, *, keep_type: bool = False) -> list[pl.Expr]:
    if source is None:
        return []
    col = pl.col(source)
    return [(col if keep_type else col.cast(pl.String)).alias(name)]
