"""Lazy scan of the input and the column contract.

``scan`` accepts Parquet or CSV files, directories (hive-partitioned too) and
globs, and reads only the mapped columns. Types are checked against the data
contract before any work; violations raise ``InputContractError`` with one
line that names the column and the fix.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from segmint.engine.config import Columns
from segmint.engine.errors import InputContractError

__all__ = ["scan", "read_input", "read_columns", "check_customer", "check_time", "OPTIONAL_ROLES"]

# Roles that are used when their column exists; an absent column under its
# default name simply unmaps the role (the features that need it are skipped).
OPTIONAL_ROLES = ("order", "channel", "category")

# role -> the flag that maps it, for error messages
_FLAGS = {"customer": "--customer-col", "time": "--time-col", "amount": "--amount-col",
          "quantity": "--quantity-col", "price": "--price-col", "order": "--order-col",
          "channel": "--channel-col", "category": "--category-col"}


def scan(inputs: Sequence[str | Path], columns: Columns) -> tuple[pl.LazyFrame, Columns]:
    """Lazy frame of the mapped source columns of every input, and the mapping resolved
    against the input schema (optional roles at their default names unmapped if absent)."""
    if not inputs:
        msg = "no input given; pass one or more Parquet/CSV files, directories or globs"
        raise InputContractError(msg)
    scanned = [_scan_one(str(p)) for p in inputs]
    columns = _resolve(scanned[0][1], columns)
    frames = []
    for (lf, schema), path in zip(scanned, inputs, strict=True):
        _check(schema, columns, str(path))
        frames.append(lf.select(*columns.source_columns()))
    lf = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
    return lf, columns


def read_input(inputs: Sequence[str | Path], columns: Columns) -> tuple[pl.DataFrame, Columns]:
    """Collect ``scan``'s frame, turning read failures into contract errors."""
    lf, columns = scan(inputs, columns)
    return _collect(lf, inputs), columns


def read_columns(inputs: Sequence[str | Path], wanted: dict[str, str]) -> pl.DataFrame:
    """Read only the ``wanted`` columns (name -> the flag that maps it) of a side table
    such as events or customers; a missing column is a contract error naming the flag."""
    if not inputs:
        msg = "no input given for a side table; pass a file, directory or glob"
        raise InputContractError(msg)
    frames = []
    for path in inputs:
        lf, schema = _scan_one(str(path))
        for name, flag in wanted.items():
            if name not in schema:
                raise InputContractError(_missing(name, flag, str(path), schema))
        frames.append(lf.select(*wanted))
    return _collect(frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed"), inputs)


def check_customer(schema: pl.Schema, name: str, path: str) -> None:
    cust = schema[name]
    if not (cust.is_integer() or cust in (pl.String, pl.Categorical) or isinstance(cust, pl.Enum)):
        _type_error(name, cust, "an integer or string customer id", path)


def check_time(schema: pl.Schema, name: str, time_format: str | None, path: str, flag: str) -> None:
    ts = schema[name]
    if ts.is_integer() and time_format is None:
        msg = f"column {name!r} is {ts}, not a datetime; give {flag} (e.g. %Y%m%d) to parse it, or convert it"
        raise InputContractError(msg)
    if not (ts.is_integer() or ts == pl.String or isinstance(ts, pl.Datetime | pl.Date)):
        _type_error(name, ts, "a datetime, date, or string with a time format", path)


def _collect(lf: pl.LazyFrame, inputs: Sequence[str | Path]) -> pl.DataFrame:
    try:
        df = lf.collect()
    except pl.exceptions.PolarsError as exc:
        msg = f"cannot read input {list(map(str, inputs))}: {_first_line(exc)}"
        raise InputContractError(msg) from None
    if df.height == 0:
        msg = f"input {list(map(str, inputs))} has no rows; check the path or the filter that produced it"
        raise InputContractError(msg)
    return df


def _scan_one(path: str) -> tuple[pl.LazyFrame, pl.Schema]:
    files = _expand(path)
    is_csv = all(f.suffix.lower() == ".csv" for f in files)
    try:
        if is_csv:
            lf = pl.scan_csv([str(f) for f in files], infer_schema_length=10_000)
        else:
            source = path if Path(path).is_dir() else [str(f) for f in files]
            lf = pl.scan_parquet(source, hive_partitioning=Path(path).is_dir() or None)
        schema = lf.collect_schema()
    except pl.exceptions.PolarsError as exc:
        msg = f"cannot read {path}: {_first_line(exc)}"
        raise InputContractError(msg) from None
    return lf, schema


def _resolve(schema: pl.Schema, columns: Columns) -> Columns:
    defaults = Columns()
    unmapped = {role: None for role in OPTIONAL_ROLES
                if getattr(columns, role) == getattr(defaults, role) and getattr(columns, role) not in schema}
    return dataclasses.replace(columns, **unmapped)


def _expand(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".parquet", ".csv")
                       and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts))
    elif any(ch in path for ch in "*?["):
        files = sorted(Path(f) for f in globlib.glob(path, recursive=True))
    else:
        files = [p] if p.exists() else []
    if not files:
        msg = f"input not found or empty: {path}; give a Parquet/CSV file, a directory or a glob"
        raise InputContractError(msg)
    return files


def _check(schema: pl.Schema, columns: Columns, path: str) -> None:
    for role, flag in _FLAGS.items():
        name = getattr(columns, role)
        if name is not None and name not in schema:
            raise InputContractError(_missing(name, flag, path, schema))
    check_customer(schema, columns.customer, path)
    check_time(schema, columns.time, columns.time_format, path, "--time-format")
    for role in ("amount", "quantity", "price"):
        name = getattr(columns, role)
        if name is not None and not (schema[name].is_numeric()):
            _type_error(name, schema[name], "a number", path)


def _missing(name: str, flag: str, path: str, schema: pl.Schema) -> str:
    return (f"column {name!r} ({flag}) not found in {path}; "
            f"available: {', '.join(schema.names())}; map the right column with {flag}")


def _type_error(name: str, dtype: pl.DataType, want: str, path: str) -> None:
    msg = f"column {name!r} in {path} is {dtype}; segmint needs {want}; cast it or map another column"
    raise InputContractError(msg)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
