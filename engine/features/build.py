"""A bucket's raw rows to clean lines, quarantined rows and per-customer features, in one pass of kernels.

``map_lines`` reads the bucket chunk by chunk (Arrow tables of the mapped columns as read). Whichever
thread read a chunk makes its values (engine.io.canonical) and writes them, with their row-level
reasons, into the bucket's line records at the chunk's place (kernels/lines.py); the caller then gives
the chunk its codes (customers, channels, categories: first seen, first coded; text order ids an id per
run of equal strings, engine.codes.TextIds), chunk after chunk, and keeps only the records (the chunk
itself is dropped, but for its rejected rows). Then, for the whole bucket: customers are ranked by id and
their rows grouped by a counting sort, each customer's rows put in line order, and one parallel pass per
customer finds repeats, duplicates, returns-only and overflowing customers, collapses orders and computes
every feature. Rows rejected per customer are read again from their chunks, by position: there are few.

The results do not depend on how the input was split into chunks or buckets (customers are
ordered by id, lines by their order id, time and input position), nor on the thread count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from segmint.engine import exact
from segmint.engine.codes import TextIds, inverse
from segmint.engine.config import Columns, FeatureConfig, LifecycleConfig, RunConfig, parse_as_of
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.features.lifecycle import activity_status
from segmint.engine.features.orders import Grouped
from segmint.engine.io import arrow_numpy
from segmint.engine.io.canonical import (Encoders, LineCodes, LineValues, check_number_format, is_typed, line_codes,
                                        line_values)
from segmint.engine.io.clean import REASONS
from segmint.engine.runtime import FEW_ROWS, in_order, release_free_memory, when_asked
from segmint.kernels.grouping import group_rows, perm_dtype
from segmint.kernels.lines import (CODES, DEDUPE_AMOUNT, DEDUPE_ASKED, DEDUPE_CATEGORY, DEDUPE_CHANNEL, DEDUPE_ORDER,
                                   DEDUPE_RAW, DEDUPE_TIME, DUPLICATE, EMPTY, LINE, OK, UNPARSEABLE_AMOUNT, chunk_tally,
                                   customer_pass, fill_values, place_codes, text_keys)
from segmint.kernels.sequence import ORDER_FEATURES

__all__ = ["MappedLines", "FeatureArrays", "customer_status", "map_lines", "MOST_BUCKET_ROWS", "tables_read", "Read",
           "records_reused", "REASON_NAMES", "LINE_FEATURES", "channel_columns", "top_channels"]

# Reason code k (kernels/lines.py) is REASON_NAMES[k - 1].
REASON_NAMES = REASONS
LINE_FEATURES = ("refund_share", "category_count", "category_entropy")
_INTEGER = ("frequency", "lt_frequency", "category_count")
_NEVER = np.iinfo(np.int64).max
# The most rows one map takes: a line's customer code, order code and order id are int32 (half the bytes of
# int64 on every bucket that fits), and a bucket's distinct orders or text order ids can be as many as its rows.
MOST_BUCKET_ROWS = int(np.iinfo(np.int32).max)
_PER_CUSTOMER = DUPLICATE   # reasons from duplicate on are decided per customer (kernels/lines.py's order)
# Opens a bucket's chunks, ``made(table, at)`` applied to each on the thread that read it (``at``: the position of its
# first row among the bucket's rows), and gives what it made, in the chunks' order (engine.io.sources.stream).
Read = Callable[[Callable[[pa.Table, int], Any]], Iterator[Any]]


@dataclass(frozen=True)
class FeatureArrays:
    """A feature table as arrays, for callers that make no table of them (``Model.predict``)."""

    ids: pl.Series                    # customer_id, in id order
    columns: dict[str, np.ndarray]    # each feature's values, in the table's order (activity_status aside)


@dataclass
class MappedLines:
    """What a bucket's rows came to."""

    table: pl.DataFrame | None        # features by customer_id (mode "features")
    arrays: FeatureArrays | None      # the same features as arrays (mode "arrays")
    grouped: Grouped | None           # the clean lines grouped by customer (mode "cohorts")
    rejects: pl.DataFrame             # the rejected rows as read, and the reason column
    set_aside: pl.Series | None       # customers rejected whole (``_rejected_whole``; mode "features")
    rejected: dict[str, int]          # rows per reason, every reason
    rejected_amount: dict[str, list[float]]  # per reason: exact partials of the finite rejected amounts
    rows_in: int
    rows_used: int
    rows_after_as_of: int             # rows of a valid time after a given --as-of, whatever their reason
    repeats: int
    customers: int
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None
    latest: dt.datetime | None        # latest time of a row with no row-level reason (the as-of candidate)
    channel_counts: dict[str, int]    # lines per channel among those rows
    as_of: dt.datetime
    channels: tuple[str, ...]         # the channel vocabulary of the shares
    read_seconds: float               # waiting for chunks to be read and their values made


def map_lines(read: Read, rows: int, schema: dict[str, pl.DataType], cfg: RunConfig, *,
              as_of: dt.datetime | None, now: dt.datetime, channels: Sequence[str] | None, mode: str,
              reread: Callable[[np.ndarray], pa.Table], reason_column: str, as_of_given: bool = False) -> MappedLines:
    """Map the ``rows`` rows ``read`` gives (tables of the source columns of ``schema``, as read): each chunk's
    values and their line records are made on the thread that read it, its codes here, chunk after chunk.

    ``as_of``: the run's as-of; None derives it from these rows (right when they are the whole input).
    ``channels``: the channel vocabulary; None takes the most common channels of these rows.
    ``mode``: "features", "arrays" (the features as ``FeatureArrays`` alone), "cohorts" (clean lines grouped) or
    "clean" (counts and rejects only).
    ``reread(positions)``: the rows at those positions (numbered across the chunks), as read.
    ``as_of_given``: ``as_of`` was given by the caller (``Model.predict``'s), as --as-of is: rows after it are
    counted apart (``rows_after_as_of``) whatever their reason.
    """
    if rows > MOST_BUCKET_ROWS:
        # Past it the codes would wrap around, and lines would be given to other customers and orders, exit 0.
        msg = (f"one bucket holds {rows:,} rows, more than the {MOST_BUCKET_ROWS:,} a bucket can hold (its lines' "
               f"codes are 32-bit); rerun with more --buckets")
        raise ConfigError(msg)
    c = cfg.columns
    if as_of is None and cfg.as_of is not None:
        as_of = parse_as_of(cfg.as_of)
    enc = Encoders.for_schema(schema, c)
    typed = is_typed(schema, c)
    given = as_of_given or cfg.as_of is not None
    lines = _read(read, rows, c, typed, enc, cfg.dedupe_on, _NEVER if cfg.as_of else _us(now),
                  _us(as_of) if as_of is not None else _NEVER, given=given)
    if rows >= FEW_ROWS:   # the chunks' buffers, which the allocators keep: the bucket's peak is still to come
        release_free_memory()
    if as_of is None:   # derived: no row can then be after it (it is the latest usable one)
        as_of = _datetime(lines.latest) if lines.latest is not None else now
    channel_counts = lines.channel_counts(enc)
    if channels is None:
        channels = top_channels(channel_counts, cfg.features.max_channels)
    n_customers = enc.customers.n
    by_rank = enc.customers.order()   # the code of each customer, customers in id order
    offsets = np.empty(n_customers + 2, np.int64)
    perm = np.empty(rows, perm_dtype(rows))
    group_rows(lines.customer, _group_of_code(by_rank), n_customers + 1, perm, offsets)
    lines.customer = None
    rec = lines.records
    # Column-major: each feature column is contiguous, for the table built from them. Two rows and two share
    # columns at least: column-major arrays of one customer (or none), or of one channel, are row-major too, a
    # layout Numba compiled customer_pass for again (a cold `segmint warmup` about 20 s); spares are not read.
    held = max(n_customers, 2)
    features = np.empty((held, len(ORDER_FEATURES)), np.float64, order="F")
    shares = np.empty((held, max(len(channels), 2)), np.float64, order="F")
    line_out = np.empty((held, len(LINE_FEATURES)), np.float64, order="F")
    status = np.empty(n_customers, np.uint8)
    repeats = np.zeros(n_customers + 1, np.int64)
    span = np.empty((n_customers, 2), np.int64)
    dedupe = _dedupe_fields(cfg, typed)
    customer_pass(offsets, perm, rec, lines.codes, *_text_orders(enc.orders), lines.has_order,
                  _channel_columns(enc, channels), np.append(enc.categories.ranks(), np.int32(-1)),
                  lines.raw if lines.raw is not None else np.zeros(1, np.uint64),
                  lines.dedupe_key if lines.dedupe_key is not None else np.zeros(1, np.uint64), dedupe,
                  _us(as_of), features, shares, line_out, status, repeats, span)
    kept = status == OK
    later = _decided_per_customer(offsets, perm, status, rec["reason"], dedupe)
    lines.count_rejects(rec["reason"][later], rec["amount"][later])
    table = arrays = grouped = set_aside = None
    if mode in ("features", "arrays"):
        arrays = FeatureArrays(enc.customer_ids(by_rank[kept]),
                               _feature_columns(kept, features[:n_customers], shares[:n_customers, :len(channels)],
                                                line_out[:n_customers], channels, lines.has_category))
    if mode == "features":
        table = _feature_table(arrays, cfg.features)
        after = _us(as_of) if given else None
        set_aside = enc.customer_ids(by_rank[_rejected_whole(offsets, perm, status, rec, after)])
    elif mode == "cohorts":
        grouped = _grouped(offsets, perm, rec, enc, by_rank, lines.has_order)
    rejected = int(lines.rejected[1:].sum())
    rejects = _rejects(lines.early, later, rec["reason"], reread, schema, reason_column)
    _give_records_back()
    return MappedLines(
        table=table, arrays=arrays if mode == "arrays" else None, grouped=grouped, rejects=rejects, set_aside=set_aside,
        rejected=dict(zip(REASON_NAMES, lines.rejected[1:].tolist(), strict=True)),
        rejected_amount=dict(zip(REASON_NAMES, lines.rejected_amount, strict=True)),
        rows_in=rows, rows_used=rows - rejected, rows_after_as_of=lines.after_as_of, repeats=int(repeats.sum()),
        customers=int(kept.sum()),
        first_ts=_datetime(int(span[kept, 0].min())) if kept.any() else None,
        last_ts=_datetime(int(span[kept, 1].max())) if kept.any() else None,
        latest=_datetime(lines.latest) if lines.latest is not None else None, channel_counts=channel_counts,
        as_of=as_of, channels=tuple(channels), read_seconds=lines.read_seconds)


def tables_read(tables: Sequence[pa.Table], helper: bool = False) -> Read:
    """Tables held in memory as a ``Read``: each made on the caller's thread or, with ``helper``, on a helper
    thread and the caller's (``in_order``)."""
    starts = np.concatenate(([0], np.cumsum([t.num_rows for t in tables]))).tolist()

    def read(made: Callable[[pa.Table, int], Any]) -> Iterator[Any]:
        if not helper:
            return (made(t, at) for t, at in zip(tables, starts, strict=False))
        return in_order((when_asked(made, t, at) for t, at in zip(tables, starts, strict=False)), ahead=1)

    return read


@contextlib.contextmanager
def records_reused() -> Iterator[None]:
    """While it lasts, a ``map_lines`` call of this thread hands its line records on to the next one, which
    takes them if they are large enough: for buckets mapped one after another (the local executor runs its
    jobs in the caller's thread; another run in another thread keeps its own). A bucket's records are
    otherwise fresh memory (40 bytes a line with its codes: 370 MB for 7.7 M lines) that the kernel must
    fault in and zero again for every bucket (L's buckets of 7.7 M lines, alternately: 0.76-0.96 -> 0.69-0.92
    s; L's map 23.9-24.1 -> 22.9-23.1 s, its peak 0.79-0.81 -> 0.85 GB). Dropped when it ends, so the stages
    after do not hold them."""
    _REUSE.spare = _Spare()
    try:
        yield
    finally:
        del _REUSE.spare


def top_channels(counts: dict[str, int], cap: int) -> tuple[str, ...]:
    """The ``cap`` most common channels (ties by name), listed by name so columns are stable."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:cap]
    return tuple(sorted(name for name, _ in top))


def customer_status(columns: dict[str, np.ndarray], cfg: LifecycleConfig) -> pl.Series:
    """``activity_status`` of customers of these features' arrays."""
    return activity_status(columns["recency_days"], columns["ipt_mean_days"], columns["lt_frequency"],
                           columns["tenure_days"], cfg)


def channel_columns(channels: Sequence[str]) -> list[str]:
    """Feature names of the channel shares, e.g. ``channel_share_web`` (made unique)."""
    import re

    names: list[str] = []
    for ch in channels:
        base = f"channel_share_{re.sub(r'[^0-9a-zA-Z]+', '_', ch).strip('_').lower() or 'blank'}"
        name, i = base, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


_ROW_BYTES = LINE.itemsize + CODES.itemsize


class _Spare:
    """The memory of the line records and codes one ``map_lines`` call left for the next (``records_reused``),
    and that lent out."""

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None
        self.lent: np.ndarray | None = None


# This thread's spare records, while records_reused lasts.
_REUSE = threading.local()


def _take_records(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Records and codes for ``rows`` lines, in one piece of memory: the spare one when large enough, else new
    (the spare freed first)."""
    need = rows * _ROW_BYTES
    holder = getattr(_REUSE, "spare", None)
    if holder is None:
        buffer = _line_aligned(need)
    else:
        buffer, holder.buffer = holder.buffer, None
        if buffer is None or buffer.size < need:
            del buffer
            buffer = _line_aligned(need)
        holder.lent = buffer
    split = rows * LINE.itemsize
    return buffer[:split].view(LINE), buffer[split:need].view(CODES)


def _line_aligned(size: int) -> np.ndarray:
    """``size`` bytes starting at a cache line, so that no 32-byte record spans two (the allocator's large
    blocks start 16 bytes into a page)."""
    block = np.empty(size + 64, np.uint8)
    skip = -block.ctypes.data % 64
    return block[skip: skip + size]


def _give_records_back() -> None:
    """The records and codes ``_take_records`` lent are read no more: kept for the next call while
    records_reused lasts. Every field of a line is written before it is read (fill_values, place_codes): nothing
    of one bucket shows in the next."""
    holder = getattr(_REUSE, "spare", None)
    if holder is not None:
        holder.buffer, holder.lent = holder.lent, None


class _Lines:
    """The bucket's rows in input order (records, customer codes, raw identities), and what the
    chunk pass learnt of them: row-level rejects, the latest usable time, channel counts."""

    def __init__(self, rows: int, columns: Columns, typed: bool, dedupe: bool, future_us: int, as_of_us: int,
                 given_as_of: bool) -> None:
        self.records, self.codes = _take_records(rows)
        self.future_us, self.as_of_us, self.given_as_of = future_us, as_of_us, given_as_of
        self.columns = columns
        self.customer: np.ndarray | None = np.empty(rows, np.int32)
        # Rows parsed from text keep their identity as read (canonical's ``raw``), and --dedupe-on's.
        self.raw: np.ndarray | None = np.empty(rows, np.uint64) if not typed else None
        self.dedupe_key: np.ndarray | None = np.empty(rows, np.uint64) if not typed and dedupe else None
        self.has_order, self.has_category = columns.order is not None, columns.category is not None
        self.latest: int | None = None
        self.rejected = np.zeros(len(REASON_NAMES) + 1, np.int64)
        self.after_as_of = 0     # rows of a valid time after a given --as-of, whatever their reason
        self.rejected_amount: list[list[float]] = [[] for _ in REASON_NAMES]
        self.early: list[tuple[np.ndarray, pa.Table]] = []
        self.read_seconds = 0.0
        self._channels = np.zeros(0, np.int64)

    def fill(self, at: int, values: LineValues) -> np.ndarray:
        """Write a chunk's values at ``at`` (on the thread that read it: each chunk its own rows); its rows'
        reasons, which the records hold too."""
        n = values.rows
        if at + n > self.records.size:
            msg = (f"the input holds more rows than when the run planned ({self.records.size}): it changed while "
                   f"being read; rerun")
            raise InputContractError(msg)
        rec = self.records
        none64, nobool = np.zeros(0, np.int64), np.zeros(0, np.bool_)
        reason = np.empty(n, np.uint8)
        fill_values(at, values.no_id, values.ts, values.ts_state, values.amount, values.amount_bad,
                    values.amount_null, values.order if values.order is not None else none64,
                    values.order_missing if values.order is not None else nobool, self.future_us, self.as_of_us,
                    rec["ts"], rec["ts_state"], rec["amount"], rec["amount_bad"], rec["amount_null"], rec["order"],
                    rec["order_missing"], rec["reason"], reason)
        if self.raw is not None:
            self.raw[at: at + n] = values.raw
        if self.dedupe_key is not None:
            self.dedupe_key[at: at + n] = values.dedupe_key
        return reason

    def add(self, at: int, table: pa.Table, values: LineValues, reason: np.ndarray, codes: LineCodes,
            n_channels: int) -> None:
        """Write a chunk's codes at ``at``, its values filled (``reason``: its rows' reasons, as ``fill`` gave
        them); ``n_channels``: the channel codes given so far."""
        rec = self.records
        none32, none64, nobool = np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.bool_)
        place_codes(at, codes.customer, codes.order if codes.order is not None else none64,
                    codes.order_missing if codes.order is not None else nobool,
                    codes.channel if codes.channel is not None else none32,
                    codes.category if codes.category is not None else none32,
                    self.customer, rec["order"], rec["order_missing"], self.codes["channel"], self.codes["category"])
        if n_channels > self._channels.size:
            self._channels = np.concatenate([self._channels, np.zeros(n_channels - self._channels.size, np.int64)])
        usable, top, bad_rows = chunk_tally(reason, values.ts, codes.channel if codes.channel is not None else none32,
                                            self._channels)
        if usable:
            self.latest = top if self.latest is None else max(self.latest, top)
        if bad_rows:
            bad = np.flatnonzero(reason)
            rows = arrow_numpy.take(table, bad)
            self.early.append((bad + at, rows))
            self.count_rejects(reason[bad], values.amount[bad])
            # A row rejected for an earlier reason (a null id or amount) can be after a given as-of too: out of the
            # reject share as well (it entered it: 26% rejected where 10% of the rows up to the as-of were). Not
            # after one derived from the rows, which several buckets are given: future rows are bad data there.
            later = (values.ts_state[bad] == 0) & (values.ts[bad] > self.as_of_us) & self.given_as_of
            self.after_as_of += int(later.sum())
            # Amounts as a locale writes them, of rows rejected for them alone (a back-test's later rows aside).
            amounts = np.flatnonzero((reason[bad] == UNPARSEABLE_AMOUNT) & ~later)
            if amounts.size:
                check_number_format(rows.take(arrow_numpy.array(amounts)), self.columns)

    def count_rejects(self, reason: np.ndarray, amount: np.ndarray) -> None:
        self.rejected += np.bincount(reason, minlength=self.rejected.size)
        finite = np.isfinite(amount)
        parts = exact.partials(reason[finite].astype(np.int64) - 1, amount[finite], len(REASON_NAMES))
        for i, more in enumerate(parts):
            self.rejected_amount[i] = self.rejected_amount[i] + more

    def channel_counts(self, enc: Encoders) -> dict[str, int]:
        if not self._channels.size:
            return {}
        names = enc.channels.values().to_pylist()
        return {names[i]: int(n) for i, n in enumerate(self._channels) if n}


def _read(read: Read, rows: int, c: Columns, typed: bool, enc: Encoders, dedupe_on: Sequence[str], future_us: int,
          as_of_us: int, *, given: bool) -> _Lines:
    """Every chunk's values and reasons, written into records sized for ``rows`` on the thread that read it, then
    its codes here, in order; the rejected rows of each chunk kept as read, with their positions. ``given``: the
    as-of is --as-of's."""
    out = _Lines(rows, c, typed, bool(dedupe_on), future_us, as_of_us, given)

    def made(table: pa.Table, at: int) -> tuple[pa.Table, LineValues, np.ndarray, int]:
        values = line_values(table, c, typed, enc, dedupe_on)
        return table, values, out.fill(at, values), at

    expected = 0
    # Closed on any exit: a map that fails stops the reading threads then, not once its traceback is dropped.
    with contextlib.closing(read(made)) as items:
        while True:
            start = time.perf_counter()
            item = next(items, None)
            out.read_seconds += time.perf_counter() - start
            if item is None:
                break
            table, values, reason, at = item
            if at != expected:   # a chunk before it gave other rows than planned
                msg = (f"the input holds {'fewer' if at > expected else 'more'} rows than the run planned for: it "
                       f"changed while being read; rerun")
                raise InputContractError(msg)
            out.add(at, table, values, reason, line_codes(values, c, typed, enc), enc.channels.n)
            expected += values.rows
            del table, values, reason, item
    if expected != rows:
        msg = f"the input holds {expected} rows, not the {rows} the run planned for: it changed while being read; rerun"
        raise InputContractError(msg)
    return out


def _decided_per_customer(offsets: np.ndarray, perm: np.ndarray, status: np.ndarray, reason: np.ndarray,
                          dedupe: int) -> np.ndarray:
    """The rows, ascending, that customer_pass gave a reason: duplicates (--dedupe-on), and without it the rows
    of customers it did not keep alone (their usable rows take the customer's status). The latter are read
    through those customers' groups, not by a scan of every row's reason, strided through the records (bench M:
    0.09 s)."""
    if dedupe:
        return np.flatnonzero(reason >= _PER_CUSTOMER)
    rows, _ = _rows_of(offsets, perm, np.flatnonzero(status != OK))
    return np.sort(rows[reason[rows] >= _PER_CUSTOMER])


def _rejected_whole(offsets: np.ndarray, perm: np.ndarray, status: np.ndarray, rec: np.ndarray,
                    after: int | None) -> np.ndarray:
    """Which customers are in no output for their rows' sake, so neither in the funnel whatever their events: every
    customer customer_pass did not keep (returns only, amounts past the float range, every row rejected: a customer
    of null amounts alone was listed in funnel/ as one who never bought, exit 0), but one whose rows are all after a
    given as-of (``after``, in microseconds; None where the as-of was not given, when no usable row is after it):
    those rows are not yet the customer's there, and one who first bought after a back-test's as-of has not
    bought at it."""
    aside = status != OK
    if after is None:
        return aside
    empty = np.flatnonzero(status == EMPTY)
    rows, sizes = _rows_of(offsets, perm, empty)
    if rows.size:
        later = (rec["ts_state"][rows] == 0) & (rec["ts"][rows] > after)
        # Every customer has a row: each group's run starts where the sizes before it end.
        aside[empty[np.add.reduceat((~later).astype(np.int64), np.cumsum(sizes) - sizes) == 0]] = False
    return aside


def _rows_of(offsets: np.ndarray, perm: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows (int64) of ``groups``, group after group, and each group's row count."""
    starts, sizes = offsets[groups], offsets[groups + 1] - offsets[groups]
    # Each group's slice of perm, concatenated: position k of the result is start + (k - where its slice begins).
    within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return perm[np.repeat(starts, sizes) + within].astype(np.int64), sizes


def _text_orders(orders: TextIds | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """customer_pass's text order ids: each id's ``text_keys``, offsets and bytes (none for integer ids)."""
    if orders is None:
        return np.zeros((0, 2), np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    offsets, data = orders.buffers()
    keys = np.empty((orders.n, 2), np.uint64)
    text_keys(offsets, data, keys)
    return keys, offsets, data


def _group_of_code(by_rank: np.ndarray) -> np.ndarray:
    """The group of each customer code (int32): its customer's rank by id; a missing id (code -1) takes the
    appended last entry, the group after every customer's."""
    return np.append(inverse(by_rank), np.int32(by_rank.size))


def _channel_columns(enc: Encoders, channels: Sequence[str]) -> np.ndarray:
    """Each channel code's share column (-1: not among ``channels``)."""
    position = {name: i for i, name in enumerate(channels)}
    names = enc.channels.values().to_pylist()
    return np.array([position.get(name, -1) for name in names], np.int32) if names else np.zeros(1, np.int32)


def _dedupe_fields(cfg: RunConfig, typed: bool) -> int:
    """The DEDUPE_* bits of --dedupe-on (the customer is always compared): its columns as read. Where rows
    need no parsing (typed), the parsed values are the values as read and are compared field by field;
    elsewhere the named cells' hash as read (``dedupe_key``: quantity and price stay two columns)."""
    if not cfg.dedupe_on:
        return 0
    if not typed:
        return DEDUPE_ASKED | DEDUPE_RAW
    c = cfg.columns
    roles = {c.time: DEDUPE_TIME, c.amount: DEDUPE_AMOUNT, c.order: DEDUPE_ORDER, c.channel: DEDUPE_CHANNEL,
             c.category: DEDUPE_CATEGORY}
    bits = DEDUPE_ASKED
    for name in cfg.dedupe_on:
        bits |= roles.get(name, 0) if name != c.customer else 0
    return bits


def _feature_columns(kept: np.ndarray, features: np.ndarray, shares: np.ndarray, line_out: np.ndarray,
                     channels: Sequence[str], has_category: bool) -> dict[str, np.ndarray]:
    everyone = bool(kept.all())
    pick = (lambda column: column) if everyone else (lambda column: column[kept])  # noqa: E731
    cols: dict[str, np.ndarray] = {name: pick(features[:, j]) for j, name in enumerate(ORDER_FEATURES)}
    cols["refund_share"] = pick(line_out[:, 0])
    if has_category:
        cols["category_count"] = pick(line_out[:, 1])
        cols["category_entropy"] = pick(line_out[:, 2])
    cols.update((name, pick(shares[:, j])) for j, name in enumerate(channel_columns(channels)))
    cols.update((name, cols[name].astype(np.int64)) for name in _INTEGER if name in cols)  # whole numbers
    return cols


def _feature_table(arrays: FeatureArrays, cfg: FeatureConfig) -> pl.DataFrame:
    return arrow_numpy.frame({"customer_id": arrays.ids, **arrays.columns,
                              "activity_status": customer_status(arrays.columns, cfg.lifecycle)})


def _grouped(offsets: np.ndarray, perm: np.ndarray, rec: np.ndarray, enc: Encoders, by_rank: np.ndarray,
             has_order: bool) -> Grouped:
    """The usable lines of customers with any, grouped by customer (in id order), in line order."""
    keep = rec["reason"][perm] == OK
    before = np.concatenate(([0], np.cumsum(keep)))
    counts = (before[offsets[1:]] - before[offsets[:-1]])[:-1]   # the last group: rows without an id
    rows = perm[keep]
    offsets = np.concatenate(([0], np.cumsum(counts[counts > 0]))).astype(np.int64)
    lines = rec[rows]
    key = None
    if has_order:  # a key that changes exactly where an order does: a line without an order id is one
        order, missing = lines["order"], lines["order_missing"]
        starts = np.ones(order.size, bool)
        starts[1:] = missing[1:] | missing[:-1] | _other_orders(order[1:], order[:-1], enc.orders)
        key = np.cumsum(starts)
    return Grouped(ids=enc.customer_ids(by_rank[counts > 0]), offsets=offsets, perm=rows,
                   ts=lines["ts"].copy(), amount=lines["amount"].copy(), order_key=key)


def _other_orders(a: np.ndarray, b: np.ndarray, orders: TextIds | None) -> np.ndarray:
    """Whether order id a[i] is another order than b[i] (where both lines have one): integer ids by value, text ones
    by their strings, which two ids may share (``TextIds``)."""
    other = a != b
    if orders is None:
        return other
    at = np.flatnonzero(other & (a >= 0) & (b >= 0))
    strings = orders.values()
    same = pc.equal(strings.take(arrow_numpy.array(a[at])), strings.take(arrow_numpy.array(b[at])))
    other[at] = ~arrow_numpy.flags(same)
    return other


def _rejects(early: list[tuple[np.ndarray, pa.Table]], later: np.ndarray, reason: np.ndarray,
             reread: Callable[[np.ndarray], pa.Table], schema: dict[str, pl.DataType], column: str) -> pl.DataFrame:
    """The rejected rows as read, in input order, with their reason; rows rejected per customer read again."""
    parts = list(early)
    if later.size:
        parts.append((later, reread(later)))
    if not parts:
        return _no_rejects(tuple(schema.items()), column).clone()
    source = pl.Schema(schema)
    positions = np.concatenate([p for p, _ in parts])
    frame = pl.concat([pl.from_arrow(t).cast(source) for _, t in parts], how="vertical")
    order = np.argsort(positions, kind="stable")
    names = np.array(REASON_NAMES, dtype=object)[reason[positions[order]] - 1]
    return frame[order].with_columns(pl.Series(column, names, dtype=pl.String))


@functools.lru_cache(maxsize=16)
def _no_rejects(schema: tuple[tuple[str, pl.DataType], ...], column: str) -> pl.DataFrame:
    """No rejected row, in the columns ``_rejects`` gives; made once per schema (0.13 ms a call: a tenth of scoring
    one customer's features)."""
    return pl.DataFrame(schema={**dict(schema), column: pl.String})


def _us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))


def _datetime(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)
