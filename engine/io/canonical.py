"""A chunk of transaction rows as canonical arrays: the columns the map's kernels read.

``Encoders`` holds a bucket's dense codes (engine.codes): customer ids, text order ids,
channels and categories get one code per distinct value across the bucket's chunks, in
first-seen order. One chunk (an Arrow table of the mapped columns as read) comes to two parts:

- ``line_values``, made on whichever thread read the chunk (no state): ``ts``, microseconds since
  epoch, with ``ts_state`` 0, TS_MISSING (empty cell) or TS_BAD (does not parse, or outside years 1
  to 9999); ``amount`` (NaN when missing), ``amount_bad`` (text that is not a number) and
  ``amount_null``; integer order ids and ``order_missing``; integer customer ids as keys, and the
  rows without an id;
- ``line_codes``, given chunk after chunk in order: the customer's int32 code (-1: no id), text
  order ids' codes, ``channel`` and ``category`` codes (-1: none);
- ``raw``: where values were parsed from text (CSV cells, text times, quantity x price, float
  ids...), a 64-bit hash of each row as read, so that repeats are rows identical as read, not
  merely as parsed; None when the parsed values are the values as read (typed Parquet).

Typed columns (integer or text ids, timestamps in s/ms/us or dates, numeric amounts, integer
or text order ids, text or dictionary channels and categories) go straight from Arrow to NumPy.
Anything else is parsed by Polars with the contract's expressions (engine.io.ids, engine.io.times)
first; the result is the same arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from segmint.engine.codes import IntCodes, TextCodes, TextIds
from segmint.engine.config import Columns
from segmint.engine.errors import InputContractError
from segmint.engine.io.arrow_numpy import array, flags, values
from segmint.engine.io.clean import empty_cell
from segmint.engine.io.ids import check_integral_ids, customer_expr
from segmint.engine.io.times import FIRST_US, LAST_US, pattern, timestamp_expr
from segmint.kernels.codes import dictionary_codes
from segmint.kernels.lines import TS_BAD, TS_MISSING, chunk_tally, row_reasons, times_us

__all__ = ["check_number_format", "LineValues", "LineCodes", "Encoders", "line_values", "line_codes", "is_typed",
           "usable_tally", "blank"]

_UNITS_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_RAW_SEED = 0x5E6
# Dictionary index types coded as they are (``_text_codes``); warmup compiles dictionary_codes for each.
_INDEX_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.uint32())


@dataclass
class LineValues:
    """What of a chunk's rows needs no code (``line_values``): it is made on whichever thread read the chunk."""

    coded: pa.Table                        # the columns ``line_codes`` codes (parsed where rows are)
    ids: np.ndarray | None                 # int64 keys of integer customer ids (None: text ids)
    no_id: np.ndarray                      # rows without a customer id (null; blank text)
    ts: np.ndarray
    ts_state: np.ndarray
    amount: np.ndarray
    amount_bad: np.ndarray
    amount_null: np.ndarray
    order: np.ndarray | None               # integer order ids (text ones are coded)
    order_missing: np.ndarray | None       # integer order ids: null; text ones: blank (null ones code to -1)
    raw: np.ndarray | None
    dedupe_key: np.ndarray | None = None   # --dedupe-on's columns as read, hashed (parsed input only)

    @property
    def rows(self) -> int:
        return self.ts.size


@dataclass
class LineCodes:
    """A chunk's codes (``line_codes``), given in the order the chunks come."""

    customer: np.ndarray                   # int32, -1: no id
    order: np.ndarray | None               # text order ids' codes (int64), where the ids are text
    order_missing: np.ndarray | None
    channel: np.ndarray | None
    category: np.ndarray | None


@dataclass
class Encoders:
    """One bucket's codes. ``customers`` is IntCodes for integer ids (UInt64 ids as order-preserving
    int64 keys), TextCodes for text; channels and categories are TextCodes, text order ids TextIds (an id per
    run of equal strings, not per distinct string: see TextIds)."""

    customers: IntCodes | TextCodes
    unsigned: bool                      # customer ids are UInt64
    orders: TextIds | None              # text order ids (integer ids are their own key)
    channels: TextCodes = field(default_factory=TextCodes)
    categories: TextCodes = field(default_factory=TextCodes)

    @staticmethod
    def for_schema(schema: dict[str, pl.DataType], columns: Columns) -> Encoders:
        cid = schema[columns.customer]
        text_id = not (cid.is_integer() or cid.is_float() or isinstance(cid, pl.Decimal))
        order = schema.get(columns.order) if columns.order is not None else None
        return Encoders(TextCodes() if text_id else IntCodes(), cid == pl.UInt64,
                        TextIds() if order is not None and not order.is_integer() else None)

    def customer_ids(self, codes: np.ndarray) -> pl.Series:
        """The customer id of each code in ``codes``, in the canonical type."""
        if isinstance(self.customers, TextCodes):
            return pl.Series("customer_id", self.customers.values().take(array(codes)), dtype=pl.String)
        keys = self.customers.values()[codes]
        # Through Arrow: a Series of NumPy values took 25-30 us however short (twice per call scoring one customer).
        return pl.Series("customer_id", array(keys.view(np.uint64) ^ np.uint64(1 << 63) if self.unsigned else keys))


def is_typed(schema: dict[str, pl.DataType], columns: Columns) -> bool:
    """Whether rows of this schema need no parsing (module docstring): then ``raw`` is None."""
    if columns.amount is None or pattern(columns.time_format) is not None:
        return False
    cid, ts, amount = schema[columns.customer], schema[columns.time], schema[columns.amount]
    typed_id = cid.is_integer() or cid in (pl.String, pl.Categorical) or isinstance(cid, pl.Enum)
    typed_ts = (isinstance(ts, pl.Datetime) and ts.time_unit != "ns") or ts == pl.Date
    typed_amount = amount.is_integer() or amount.is_float()
    optional = [schema[c] for c in (columns.order, columns.channel, columns.category) if c is not None]
    typed_rest = all(t.is_integer() or t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum) for t in optional)
    return typed_id and typed_ts and typed_amount and typed_rest


def line_values(table: pa.Table, columns: Columns, typed: bool, enc: Encoders,
                dedupe_on: Sequence[str] = ()) -> LineValues:
    """The values of one chunk's rows (``table``: the mapped columns as read; ids already pseudonymised when the
    run asks for it, so that nothing downstream sees a raw id): every thing but the codes, so that any thread
    may make them. Of ``enc`` only which kinds of codes it holds is read. ``dedupe_on``: --dedupe-on's columns,
    hashed as read where values are parsed (``dedupe_key``)."""
    if not typed:
        table = _parsed(table, columns, dedupe_on)
    n = table.num_rows
    names = _coded_names(columns, typed)
    cid = table.column(names["customer"])
    if isinstance(enc.customers, TextCodes):
        ids, no_id = None, _nulls(cid) | blank(cid)
    else:
        ids, no_id = _ints(cid)
    ts, ts_state = _times(table.column(columns.time)) if typed else _parsed_times(table)
    amount, amount_null = _floats(table.column(columns.amount if typed else "__amount"))
    amount_bad = np.zeros(n, bool) if typed else flags(_one_chunk(table.column("__amount_bad")))
    order = order_missing = None
    if columns.order is not None:
        if enc.orders is not None:
            order_missing = blank(table.column(names["order"]))
        else:
            order, order_missing = _ints(table.column(names["order"]))
    raw = None if typed else values(_one_chunk(table.column("__raw")))
    dedupe_key = values(_one_chunk(table.column("__dedupe"))) if not typed and dedupe_on else None
    coded = table.select([name for name in names.values() if name is not None])
    return LineValues(coded, ids, no_id, ts, ts_state, amount, amount_bad, amount_null, order, order_missing, raw,
                      dedupe_key)


def line_codes(values: LineValues, columns: Columns, typed: bool, enc: Encoders) -> LineCodes:
    """The codes of a chunk's rows, which ``enc`` gives in first-seen order: chunks must come in order."""
    names = _coded_names(columns, typed)
    table = values.coded
    if values.ids is None:
        customer = _text_codes(enc.customers, table.column(names["customer"]))
        customer[values.no_id] = -1
    else:
        customer = enc.customers.encode(values.ids, values.no_id)
    order = order_missing = None
    if enc.orders is not None and columns.order is not None:
        order = _text_codes(enc.orders, table.column(names["order"])).astype(np.int64)
        order_missing = (order < 0) | values.order_missing
    channel = _text_codes(enc.channels, table.column(names["channel"])) if columns.channel is not None else None
    category = _text_codes(enc.categories, table.column(names["category"])) if columns.category is not None else None
    return LineCodes(customer, order, order_missing, channel, category)


def usable_tally(table: pa.Table, columns: Columns, typed: bool, future_us: int,
                 as_of_us: int) -> tuple[int | None, dict[str, int]]:
    """Of the rows with no row-level reason: the latest time (microseconds; None when there is no such
    row) and the lines per channel: what a partition job tells the run. ``as_of_us``: a given --as-of
    (the int64 maximum when these rows decide it)."""
    if not typed:
        table = _parsed(table, columns)
    cid = table.column(columns.customer if typed else "__cid")
    missing = _nulls(cid) | blank(cid)
    ts, ts_state = _times(table.column(columns.time)) if typed else _parsed_times(table)
    amount, _ = _floats(table.column(columns.amount if typed else "__amount"))
    amount_bad = np.zeros(missing.size, bool) if typed else flags(_one_chunk(table.column("__amount_bad")))
    reason = np.empty(missing.size, np.uint8)
    row_reasons(np.where(missing, -1, 0).astype(np.int32), ts, ts_state, amount, amount_bad, future_us,
                as_of_us, reason)
    names = TextCodes()
    codes = _text_codes(names, table.column(columns.channel if typed else "__channel")) \
        if columns.channel is not None else np.zeros(0, np.int32)
    tally = np.zeros(names.n, np.int64)
    # One pass, as the map's chunks are tallied: a mask, a masked bincount and a masked max took a job of
    # 7.2 M rows of L 0.15 s in all here, the one pass 0.11 s.
    usable, latest, _ = chunk_tally(reason, ts, codes, tally)
    counts = {name: int(n) for name, n in zip(names.values().to_pylist(), tally, strict=True) if n}
    return (int(latest) if usable else None), counts


def _coded_names(columns: Columns, typed: bool) -> dict[str, str | None]:
    """The column of each coded role: as read where rows need no parsing, else the parsed one."""
    if typed:
        return {"customer": columns.customer, "order": columns.order, "channel": columns.channel,
                "category": columns.category}
    return {"customer": "__cid", "order": "__order" if columns.order is not None else None,
            "channel": "__channel" if columns.channel is not None else None,
            "category": "__category" if columns.category is not None else None}


def _ints(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int64 keys of an integer column (UInt64 shifted by 2^63, which keeps their order) and its nulls."""
    array = _one_chunk(array)
    missing = _nulls(array)
    if array.type == pa.uint64():
        return values(array).view(np.int64) ^ np.int64(-(1 << 63)), missing
    if array.type != pa.int64():
        array = array.cast(pa.int64())
    return values(array), missing


def _floats(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where null) and the nulls (a null and a NaN are two values as read). Integers are
    the nearest float64, as Polars casts them where rows are parsed: Arrow's safe cast refused those beyond
    2^53 that have none exactly (exit 1, 'unexpected ArrowInvalid')."""
    array = _one_chunk(array)
    missing = _nulls(array)
    if array.type != pa.float64():
        array = array.cast(pa.float64(), safe=not pa.types.is_integer(array.type))
    return values(array, np.nan), missing


def _times(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since epoch of a timestamp (s, ms, us; any zone: Arrow stores UTC) or date column;
    a time outside years 1 to 9999 is TS_BAD and keeps its raw value (rows are compared as read)."""
    array = _one_chunk(array)
    missing = _nulls(array)
    if pa.types.is_date(array.type):
        raw = array.cast(pa.date32()).cast(pa.int32())
        per = 86_400_000_000
    elif array.type.unit == "ns":
        # INT96 (Spark) times read as ns where the file's schema says us or ms, which made the column typed
        # (exit 1, KeyError 'ns'): to microseconds as the parsing path casts ns (is_typed), UTC kept.
        naive = pl.from_arrow(array.cast(pa.timestamp("ns")))
        assert isinstance(naive, pl.Series)
        raw = naive.cast(pl.Datetime("us")).to_physical().to_arrow()
        per = 1
    else:
        raw = array.view(pa.int64())   # the same buffers: a cast took 0.07 ms of scoring one customer
        per = _UNITS_US[array.type.unit]
    ts = np.empty(len(raw), np.int64)
    state = np.empty(len(raw), np.uint8)
    times_us(values(raw), missing, per, FIRST_US, LAST_US, ts, state)
    return ts, state


def _one_chunk(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One array of a column; text and binary chunks are combined with 64-bit offsets: Arrow's 32-bit
    ``string`` (as pyarrow writes Parquet) cannot hold more than 2 GiB of text in one array, which a
    scratch file or a row group may hold in several chunks."""
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks == 1:
            return array.chunk(0)
        wide = {pa.string(): pa.large_string(), pa.binary(): pa.large_binary()}.get(array.type)
        return (array.cast(wide) if wide is not None else array).combine_chunks()
    return array


def _parsed_times(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    parsed = table.column("__ts")
    missing = flags(_one_chunk(table.column("__ts_missing")))
    bad = ~missing & _nulls(parsed)
    times = values(_one_chunk(parsed.cast(pa.int64())))
    state = np.where(missing, TS_MISSING, np.where(bad, TS_BAD, 0)).astype(np.uint8)
    return times, state


def _as_read(schema: pl.Schema, names: Sequence[str], ids: Sequence[str]) -> list[pl.Expr]:
    """The columns as read, for a row's identity: categorical values by their text (their codes depend on
    the chunk's dictionary); a missing id of ``ids`` (the customer and order columns: null, blank text or a
    float NaN) as a null, as typed Parquet compares them. A null and a "" order id were two values here only
    (a Parquet file of ns times, as pandas writes them): --dedupe-on kept both rows, exit 0."""
    out = []
    for n in names:
        col = pl.col(n).cast(pl.String) if isinstance(schema[n], (pl.Categorical, pl.Enum)) else pl.col(n)
        if n in ids:
            col = pl.when(empty_cell(schema, n)).then(None).otherwise(col).alias(n)
        out.append(col)
    return out


def _order_expr(schema: pl.Schema, name: str) -> pl.Expr:
    """Integer order ids as they are; others as text, a float NaN missing (not the text "NaN", which would
    make every such line of a customer one order)."""
    col = pl.col(name)
    if schema[name].is_integer():
        return col
    if schema[name].is_float():
        col = pl.when(col.is_nan()).then(None).otherwise(col)
    return col.cast(pl.String)


def _text_codes(codes: TextCodes | TextIds, array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Codes (or ids) of a text column, chunk by chunk (codes are given in first-seen order either way, and
    combining the chunks would copy every string); a dictionary column's values are coded once, its
    indices mapped (but for ids)."""
    if isinstance(array, pa.ChunkedArray):
        if array.num_chunks != 1:
            return np.concatenate([_text_codes(codes, chunk) for chunk in array.chunks]) if array.num_chunks \
                else np.zeros(0, np.int32)
        array = array.chunk(0)
    if pa.types.is_dictionary(array.type) and isinstance(codes, TextIds):
        # Ids are per run of equal strings, not per value: every batch Arrow reads of a row group holds the whole
        # group's dictionary, which ids for its values would store again batch after batch (a review: 23 M strings
        # stored for 1 M order ids in 3 M rows). The rows' strings, as any other text column's.
        array = array.dictionary_decode()
    if pa.types.is_dictionary(array.type):
        lookup = codes.encode(array.dictionary.cast(pa.large_string()))
        # int32 (Parquet's), uint32 (Polars' Categorical), int8 and int16 (the partition's scratch) as they are:
        # a cast would copy every row's index.
        indices = array.indices if array.indices.type in _INDEX_TYPES else array.indices.cast(pa.int32())
        missing = _nulls(indices) if indices.null_count else np.zeros(0, bool)
        out = np.empty(len(indices), np.int32)
        dictionary_codes(values(indices), missing, lookup, out)
        return out
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
            or pa.types.is_string_view(array.type)):
        array = array.cast(pa.large_string())
    return codes.encode(array)


def blank(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Where a text id is blank (empty, or ASCII whitespace only): no id, as an empty CSV cell (read as null) is.
    A Parquet "" was a customer of its own, and an order id "" made one order of every such line of a customer;
    " " did the same, in CSV too."""
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
            or pa.types.is_string_view(array.type) or pa.types.is_dictionary(array.type)):
        return np.zeros(len(array), bool)
    if isinstance(array, pa.ChunkedArray):
        return np.concatenate([blank(chunk) for chunk in array.chunks]) if array.num_chunks \
            else np.zeros(0, bool)
    if pa.types.is_dictionary(array.type):
        empty = blank(array.dictionary)
        if not empty.any():
            return np.zeros(len(array), bool)
        return empty[pc.fill_null(array.indices, 0).to_numpy()] & ~_nulls(array.indices)
    if pa.types.is_string_view(array.type):   # binary_length has no kernel for views
        array = array.cast(pa.large_string())
    spaces = pc.or_(pc.equal(pc.binary_length(array), 0), pc.ascii_is_space(array))
    return pc.fill_null(spaces, False).to_numpy(zero_copy_only=False)


def _nulls(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    # A dictionary's null count is its indices'; a null among its values is missing too (is_null sees both).
    if array.null_count == 0 and not pa.types.is_dictionary(array.type):
        return np.zeros(len(array), bool)
    return flags(_one_chunk(pc.is_null(array)))


def _parsed(table: pa.Table, columns: Columns, dedupe_on: Sequence[str] = ()) -> pa.Table:
    """Rows parsed with the contract's expressions, the raw identity of each row and, with ``dedupe_on``,
    that of its --dedupe-on columns."""
    raw = pl.from_arrow(table)
    assert isinstance(raw, pl.DataFrame)
    check_integral_ids(raw, columns.customer)
    schema = raw.schema
    order = columns.order
    ids = [c for c in (columns.customer, order) if c is not None]
    exprs = [
        customer_expr(schema, columns.customer).alias("__cid"),
        timestamp_expr(columns.time, schema[columns.time], columns.time_format).dt.epoch("us").alias("__ts"),
        empty_cell(schema, columns.time).alias("__ts_missing"),
        _amount(schema, columns).alias("__amount"),
        _unparseable_amount(schema, columns).alias("__amount_bad"),
        pl.struct(_as_read(schema, schema.names(), ids)).hash(_RAW_SEED).alias("__raw"),
    ]
    if dedupe_on:
        exprs.append(pl.struct(_as_read(schema, dedupe_on, ids)).hash(_RAW_SEED).alias("__dedupe"))
    if order is not None:
        exprs.append(_order_expr(schema, order).alias("__order"))
    for name, alias in ((columns.channel, "__channel"), (columns.category, "__category")):
        if name is not None:
            exprs.append(pl.col(name).cast(pl.String).alias(alias))
    return raw.select(exprs).to_arrow()


# 1,234.50 / 1.234,50 / 1 234,50 / 12,50: numbers as a locale writes them.
_LOCALE_NUMBER = r"^[+-]?(\d{1,3}([,. \u00a0\u202f']\d{3})+([.,]\d+)?|\d+,\d+)$"


def check_number_format(rows: pa.Table, c: Columns) -> None:
    """Stop where ``rows`` (rows as read whose reason is unparseable_amount) write their numbers with a thousands
    separator or a decimal comma: each was unparseable_amount alone, so an export writing "1,234.50" lost every
    order of 1,000 or more (36% of the rows, 90% of the money, under the reject share: exit 0)."""
    raw = pl.from_arrow(rows)
    assert isinstance(raw, pl.DataFrame)
    for name in [n for n in (c.amount, c.quantity, c.price) if n is not None and raw.schema[n] == pl.String]:
        written = raw[name].str.strip_chars()
        found = written.filter(written.str.contains(_LOCALE_NUMBER)).head(1).to_list()
        if found:
            msg = (f"column {name!r} writes numbers such as {found[0]!r}, with a thousands separator or a decimal "
                   f"comma, which are not read as numbers (each such row would be unparseable_amount): write plain "
                   f"numbers, '.' before the decimals and no separator (1234.50)")
            raise InputContractError(msg)


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
    # A blank cell (spaces) is an empty one, null as a CSV reads "": non_finite_amount, not unparseable text.
    return pl.any_horizontal([pl.col(n).str.strip_chars().ne("").fill_null(False) & _number(schema, n).is_null()
                              for n in text])
