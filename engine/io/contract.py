"""The data contract of each input table, checked once before any work.

Violations raise ``InputContractError`` (exit 3) with one line that names the
column and the fix; a text time column in a form segmint will not guess raises
``ConfigError`` (exit 2) naming the ``--time-format`` to give.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from segmint.engine.config import Columns, CustomerSource, EventSource
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.io.ids import canonical_id_type, check_customer_type
from segmint.engine.io.sources import (Listing, Source, column_list, list_inputs, no_header_fix, read_chunk,
                                       resolve)
from segmint.engine.io.times import (EPOCH_FORMATS, ISO, TIME_SAMPLE, check_epoch_unit, check_text_times,
                                     check_time_column, pattern, readable_epochs, spread_sample)

__all__ = ["OPTIONAL_ROLES", "transactions", "check_frame", "check_readable_types", "events", "customers",
           "check_same_ids"]

# Roles that are used when their column exists; an absent column under its
# default name simply unmaps the role (the features that need it are skipped).
OPTIONAL_ROLES = ("order", "channel", "category")
_FLAGS = {"customer": "--customer-col", "time": "--time-col", "amount": "--amount-col",
          "quantity": "--quantity-col", "price": "--price-col", "order": "--order-col",
          "channel": "--channel-col", "category": "--category-col"}


def transactions(inputs: Sequence[str | Path], columns: Columns, options: tuple[tuple[str, str], ...] = (), *,
                 model: bool = False, footers: dict[str, Any] | None = None) -> tuple[Source, Columns]:
    """The transactions source and the mapping resolved against it: a default-named optional role whose
    column no file has is unmapped. ``model``: ``columns`` is a saved model's mapping, every column of which
    its features came from, so none is unmapped and each must be in every file. ``footers``: ``list_inputs``'."""
    listing = list_inputs(inputs, "transactions", options, footers)
    if model:
        _check_model_columns(listing, columns)
    defaults = Columns()
    # Not the first file's schema alone: a role its file lacked was unmapped for every file, and the
    # features that need it (orders, channel shares) silently came out of the others' rows without it.
    columns = dataclasses.replace(columns, **{
        role: None for role in OPTIONAL_ROLES
        if not model and getattr(columns, role) == getattr(defaults, role)
        and all(getattr(columns, role) not in schema for schema in listing.schemas)})
    wanted = {}
    for role, flag in _FLAGS.items():
        name = getattr(columns, role)
        if name is not None:
            wanted.setdefault(name, flag)
    source = resolve(listing, wanted, "transactions")
    _check_roles(source, columns)
    return source, columns


def check_frame(frame: pl.DataFrame, columns: Columns) -> None:
    """The checks of ``transactions`` on rows held in memory (``Model.predict``'s): times in a form segmint
    would guess, or integers without a format, were rows of no customer there, and the result came back
    empty without a word. Amounts may be text, as a JSON payload's are (parsed as a CSV's cells); the time
    format is named as ``predict`` takes it."""
    mapped = columns.source_columns()   # only those, as a file's other columns are not read
    schema = frame.schema
    _check_roles(Source(label="the transactions given", paths=("the transactions given",), csv=False,
                        columns=tuple(mapped), schema={c: schema[c] for c in mapped}, chunks=(), options=()),
                 columns, spread_sample(frame), text_numbers=True, flag="time_format=")


def _check_roles(source: Source, columns: Columns, head: pl.DataFrame | None = None, *, text_numbers: bool = False,
                 flag: str = "--time-format") -> None:
    """Each mapped column's type, and a text time column's form; ``head``: the first rows, where held in memory
    (else read from the source's first chunks); ``text_numbers``: amounts may be text columns."""
    where = source.chunks[0].path if source.chunks else source.label
    check_readable_types(source.schema, [getattr(columns, role) for role in _FLAGS], where)
    check_customer_type(source.schema[columns.customer], columns.customer, where)
    _check_time(source, columns.time, columns.time_format, flag, head)
    for role in ("amount", "quantity", "price"):
        name = getattr(columns, role)
        dtype = source.schema.get(name) if name is not None else None
        if dtype is not None and not (dtype.is_numeric() or source.csv or (text_numbers and dtype == pl.String)):
            msg = (f"column {name!r} in {where} is {source.schema[name]}; segmint needs a number; cast it or map "
                   f"another column")
            raise InputContractError(msg)
    _check_decimals(source, where)
    for role in OPTIONAL_ROLES:
        name = getattr(columns, role)
        if name is not None and source.schema[name].is_nested():   # a KeyError deep in the map, exit 1
            msg = (f"column {name!r} in {where} is {source.schema[name]}; segmint needs one text or number per "
                   f"line; flatten it or map another column")
            raise InputContractError(msg)


def check_readable_types(schema: Mapping[str, pl.DataType], names: Iterable[str | None], where: str) -> None:
    """Columns ``names`` (None: not mapped) of types no reader of segmint takes, as a frame given in memory may hold:
    they stopped the map, or writing the frame for a run, with Arrow's or Polars' own error (exit 1)."""
    for name in names:
        dtype = schema.get(name) if name is not None else None
        if dtype == pl.Object:
            msg = (f"column {name!r} in {where} holds Python objects; segmint needs text, numbers or times: convert "
                   f"it (to text, for instance) or map another column")
            raise InputContractError(msg)
        if dtype in (pl.Int128, pl.UInt128):
            msg = (f"column {name!r} in {where} is {dtype}; segmint reads integers of up to 64 bits: cast it to "
                   f"Int64 (or to text, for ids) or map another column")
            raise InputContractError(msg)


def _check_decimals(source: Source, where: str | None = None) -> None:
    """Decimals wider than 38 digits: Polars panicked computing on them (a traceback, exit 1)."""
    for name, dtype in source.schema.items():
        if isinstance(dtype, pl.Decimal) and (dtype.precision or 0) > 38:
            # A widened column's type is its widest file's, not necessarily the first's.
            place = where or (source.label if name in source.widened else source.chunks[0].path)
            msg = (f"column {name!r} in {place} is {dtype}, wider than the 38 digits "
                   f"segmint computes with; cast it to decimal(38) or float64")
            raise InputContractError(msg)


def _check_model_columns(listing: Listing, columns: Columns) -> None:
    for (path, _), schema in zip(listing.found, listing.schemas, strict=True):
        for role, flag in _FLAGS.items():
            name = getattr(columns, role)
            if name is not None and name not in schema:
                msg = (f"column {name!r} not found in {path}: the model was trained with it as its {flag} column; "
                       f"give transactions with that column "
                       f"({no_header_fix(schema, listing.csv) or 'available: ' + column_list(schema.names())})")
                raise InputContractError(msg)


def events(src: EventSource, options: tuple[tuple[str, str], ...] = ()) -> Source:
    label = "the events input"
    source = resolve(list_inputs(src.paths, label, options), src.columns(), label)
    check_customer_type(source.schema[src.customer], src.customer, source.chunks[0].path)
    _check_time(source, src.time, src.time_format, "--event-time-format")
    _check_decimals(source)
    return source


def customers(src: CustomerSource, options: tuple[tuple[str, str], ...] = ()) -> Source:
    wanted = {src.customer: "--customers-id-col", **{a: "--customer-attrs" for a in src.attributes}}
    label = "the customers table"
    source = resolve(list_inputs(src.paths, label, options), wanted, label)
    check_customer_type(source.schema[src.customer], src.customer, source.chunks[0].path)
    _check_decimals(source)
    for name in src.attributes:
        dtype = source.schema[name]
        # A list, struct or duration failed the run after its every stage, exit 1 (segment_mix's cast to text).
        if not (dtype.is_numeric() or dtype in (pl.String, pl.Categorical, pl.Boolean, pl.Date, pl.Time, pl.Null)
                or isinstance(dtype, pl.Datetime | pl.Enum)):
            msg = (f"attribute {name!r} in {source.chunks[0].path} is {dtype}; segmint needs one text, number, "
                   f"date or flag per customer: convert it or leave it out of --customer-attrs")
            raise InputContractError(msg)
    return source


def check_same_ids(tx: Source, tx_col: str, other: Source, other_col: str, flag: str) -> None:
    """Ids of a side table must have the transactions' canonical type, or nothing would join."""
    want, got = canonical_id_type(tx.schema[tx_col]), canonical_id_type(other.schema[other_col])
    if want != got:
        # A CSV file's cells are text: no column of it maps to integer ids.
        fix = (f"write {other.label} as Parquet with {want} ids (a CSV file's ids are text)" if other.csv else
               f"write its ids as text, or the transactions as Parquet with {got} ids (a CSV file's ids are text)"
               if tx.csv else f"map id columns of the same type ({flag})")
        msg = f"{other.label} has {got} customer ids but the transactions have {want}; {fix}"
        raise InputContractError(msg)


def _check_time(source: Source, name: str, fmt: str | None, flag: str, head: pl.DataFrame | None = None) -> None:
    fmt = pattern(fmt)
    dtype = source.schema[name]
    where = source.chunks[0].path if source.chunks else source.label
    if dtype.is_integer() and fmt is None:
        msg = (f"column {name!r} is {dtype}, not a datetime; give {flag} (e.g. %Y%m%d, or epoch_s for "
               f"Unix seconds) to parse it, or convert it")
        raise InputContractError(msg)
    number = dtype.is_float() or isinstance(dtype, pl.Decimal)   # Unix times, as pandas writes them with a NaN
    if number and fmt not in EPOCH_FORMATS:
        msg = (f"column {name!r} in {where} is {dtype}, not a datetime; give {flag} epoch_s (or epoch_ms, "
               f"epoch_us, epoch_ns) where it holds Unix times, or convert it")
        raise InputContractError(msg)
    if not (dtype.is_integer() or number or dtype == pl.String or isinstance(dtype, pl.Datetime | pl.Date)):
        msg = (f"column {name!r} in {where} is {dtype}; segmint needs a datetime, date, or string with a "
               f"time format; cast it or map another column")
        raise InputContractError(msg)
    if dtype == pl.String and fmt is None:
        if head is None:
            first = source.chunks[0]
            head = read_chunk(dataclasses.replace(source, columns=(name,)),
                              dataclasses.replace(first, rows=min(first.rows, TIME_SAMPLE)))
        check_text_times(head[name].to_list(), name, flag)
    if fmt is not None and fmt not in EPOCH_FORMATS and "%" not in fmt:
        msg = (f"{flag} {fmt!r} is not a strftime pattern (e.g. %Y-%m-%d %H:%M), {ISO} (ISO 8601, as without one) "
               f"or one of {', '.join(EPOCH_FORMATS)}")
        raise ConfigError(msg)
    if fmt is not None and "%Z" in fmt:
        # Polars' %Z matches any text, or none, and gives the time without its zone: read as UTC, exit 0.
        msg = (f"{flag} {fmt!r} holds %Z, a zone name, which is read as any text and dropped (every time taken as "
               f"UTC); use %z for offsets (+0200), or convert named zones to offsets first")
        raise ConfigError(msg)
    if fmt in EPOCH_FORMATS:
        _check_epoch_unit(source, name, fmt, flag, head)
    elif fmt is not None and head is not None:   # rows in memory, where the map's check names --time-format
        check_time_column(head, name, fmt, flag)


def _check_epoch_unit(source: Source, name: str, fmt: str, flag: str, head: pl.DataFrame | None) -> None:
    """``check_epoch_unit`` on the first chunks with readable times, up to ``TIME_SAMPLE`` rows each (the map
    judges every chunk it parses again: engine.io.canonical)."""
    values = _epoch_sample(source, name) if head is None else readable_epochs(head.select(name), name)
    if values is not None:
        check_epoch_unit(values, name, fmt, flag)


def _epoch_sample(source: Source, name: str) -> pl.DataFrame | None:
    """The readable values of the first chunks that have any (a first file of nulls or an empty one said
    nothing, and the rest went unchecked); None where the first 16 chunks have none."""
    for chunk in source.chunks[:16]:
        head = read_chunk(dataclasses.replace(source, columns=(name,)),
                          dataclasses.replace(chunk, rows=min(chunk.rows, TIME_SAMPLE)))
        readable = readable_epochs(head, name)
        if readable is not None:
            return readable
    return None
