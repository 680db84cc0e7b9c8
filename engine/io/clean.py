"""What cleaning decides: the reject reasons, the run-wide row statistics, and the events' cleaning.

Transactions are cleaned by the map's kernels (engine.features.build, kernels/lines.py).
Nothing is dropped silently: each unusable row goes to the rejects table with
its reason, and ``rows_in == rows_used + sum(rejected.values())``. Reasons, in
the order they are tested (a row gets the first that applies):

- ``null_customer_id``
- ``null_timestamp``: the time cell is empty
- ``unparseable_timestamp``: the time does not parse (ISO 8601, or ``--time-format``)
- ``unparseable_amount``: an amount (or quantity, price) cell holds text that is not a number
- ``non_finite_amount``: amount (or quantity x price) is null, NaN or infinite
- ``ancient_timestamp``: a time before 1901-01-01: a placeholder for an unknown date (0001-01-01,
  1753-01-01, 1899-12-30, 1900-01-01 are common ones), not a purchase; used, it gave its customer a
  tenure of centuries and ``cohorts`` a column for every month since
- ``future_timestamp``: without ``--as-of``, a time later than the moment the run started
- ``after_as_of``: the time is later than the as-of instant
- ``duplicate``: only with ``--dedupe-on``; every usable row after the first (in input
  order) with the same values, as parsed, in exactly those columns
- ``amount_overflow``: every row of a customer whose absolute amounts sum beyond
  the float range (their totals cannot be computed)
- ``returns_only``: every row of a customer without a purchase: each of their
  orders (lines, without an order column) has a negative net amount

Rows identical on every mapped column as read are kept (they can be separate purchases,
and columns segmint does not read may tell them apart); their number is reported
as ``repeats_on_mapped_columns``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction

import polars as pl

from segmint.engine.config import EventSource
from segmint.engine.errors import InputContractError
from segmint.engine.io.ids import customer_expr
from segmint.engine.io.times import timestamp_expr
from segmint.kernels.lines import EARLIEST_US

__all__ = ["REASONS", "EVENT_REASONS", "EventClean", "RowStats", "clean_events", "reason_column", "empty_cell",
           "above_share", "ASCII_SPACE"]

REASONS = ("null_customer_id", "null_timestamp", "unparseable_timestamp", "unparseable_amount",
           "non_finite_amount", "ancient_timestamp", "future_timestamp", "after_as_of", "duplicate", "amount_overflow",
           "returns_only")
EVENT_REASONS = ("null_customer_id", "null_timestamp", "unparseable_timestamp", "null_event_type",
                 "ancient_timestamp", "future_timestamp", "after_as_of")
ASCII_SPACE = " \t\n\r\v\f"   # what a blank id may hold: Arrow's ascii_is_space
EARLIEST = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=EARLIEST_US)   # ancient_timestamp before


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
    # An empty text is an empty cell, as for transactions (engine.io.canonical): a Parquet "" id was a customer.
    reason = (
        pl.when(empty_cell(df.schema, "__cid")).then(pl.lit("null_customer_id"))
        .when(empty_cell(df.schema, src.time)).then(pl.lit("null_timestamp"))
        .when(pl.col("__ts").is_null()).then(pl.lit("unparseable_timestamp"))
        .when(empty_cell(df.schema, src.event_type)).then(pl.lit("null_event_type"))
        .when(pl.col("__ts") < EARLIEST).then(pl.lit("ancient_timestamp"))
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
        # A blank session is an empty cell too: a Parquet "" was one session for every day (a CSV's, read as
        # null, one per day).
        *([pl.when(empty_cell(df.schema, src.session)).then(None).otherwise(pl.col(src.session).cast(pl.String))
           .alias("session_id")] if src.session is not None else []),
    )
    return EventClean(
        events=events,
        rejects=df.filter(pl.col("__reason").is_not_null()).select(
            *raw.columns, pl.col("__reason").alias(reason_column(raw.columns))),
        rows_in=df.height,
        rejected={r: int(counts.get(r, 0)) for r in EVENT_REASONS},
    )


def above_share(rejected: int, judged: int, limit: float) -> bool:
    """Whether ``rejected`` of ``judged`` rows is more than the share ``limit`` (--max-reject-share), the limit
    read as the decimal it is written as: 3 of 10 is not above 0.3 (1 - 7/10 is 0.30000000000000004 in floats,
    which stopped assign where predict, comparing otherwise, went on)."""
    return rejected > Fraction(repr(float(limit))) * judged


def empty_cell(schema: pl.Schema, name: str) -> pl.Expr:
    """A null cell, a blank text (empty, or ASCII whitespace only: a CSV's empty cell is read as null, and
    Parquet keeps ""; engine.io.canonical's ``blank`` for transactions) or a float NaN (pandas' missing value:
    Unix times or ids of an integer column holding one are written as floats)."""
    col = pl.col(name)
    if schema[name] == pl.String or isinstance(schema[name], (pl.Categorical, pl.Enum)):
        return col.is_null() | (col.cast(pl.String).str.strip_chars(ASCII_SPACE) == "")
    if schema[name].is_float():
        return col.is_null() | col.is_nan()
    return col.is_null()

