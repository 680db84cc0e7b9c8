"""Customer ids in canonical form: Int64, UInt64 (ids beyond int64) or String.

Integer ids keep their value; text ids (CSV cells always: ``007`` and ``7`` are two
customers) keep their text; categorical ids become their text. Float ids, common
after a round trip through pandas, are accepted when every one is integral (they
become Int64); a fractional id is a contract violation, never rounded. NaN is a
missing id. Decimal ids are cast exactly (not through Float64, which holds integers up to 2^53 only).
"""

from __future__ import annotations

import polars as pl

from segmint.engine.errors import InputContractError

__all__ = ["customer_expr", "check_customer_type", "check_integral_ids", "canonical_id_type"]


def canonical_id_type(dtype: pl.DataType) -> pl.DataType:
    """The type a customer column of ``dtype`` has once canonical."""
    if dtype == pl.UInt64:
        return pl.UInt64
    if dtype.is_integer() or dtype.is_float() or isinstance(dtype, pl.Decimal):
        return pl.Int64
    return pl.String


def customer_expr(schema: pl.Schema, name: str) -> pl.Expr:
    """The canonical id of column ``name`` (null where missing); run ``check_integral_ids`` first for floats."""
    dtype = schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Decimal):  # exact: through Float64 ids above 2^53 would merge or change
        return col.cast(pl.Int64, strict=False)
    if dtype.is_float():
        col = col.cast(pl.Float64)
        return pl.when(col.is_nan()).then(None).otherwise(col).cast(pl.Int64, strict=False)
    return col.cast(canonical_id_type(dtype))


def check_customer_type(dtype: pl.DataType, name: str, path: str) -> None:
    """Contract: integer, float (integral values), string or categorical ids."""
    if not (dtype.is_numeric() or dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)):
        msg = (f"column {name!r} in {path} is {dtype}; segmint needs an integer or string customer id; "
               f"cast it or map another column")
        raise InputContractError(msg)


def check_integral_ids(frame: pl.DataFrame, name: str, side_table: str = "") -> None:
    """Float ids must all be integral and within int64; otherwise stop (exit 3), counting them. ``side_table``:
    the events or customers input's label, named (a text id there would not join the transactions')."""
    dtype = frame.schema[name]
    if isinstance(dtype, pl.Decimal):
        whole = pl.col(name).cast(pl.Int64, strict=False)   # null beyond int64; truncated when fractional
        bad = frame.filter(pl.col(name).is_not_null() & (whole.is_null() | (whole.cast(dtype) != pl.col(name))))[name]
    elif dtype.is_float():
        col = pl.col(name).cast(pl.Float64)
        bad = frame.filter(col.is_not_null() & ~col.is_nan()
                           & ((col != col.floor()) | (col.abs() >= 2.0**63)))[name]
    else:
        return
    if bad.len():
        # No example: an id is personal data, and error lines end up in logs.
        where, fix = (f" of {side_table}", "fix the column") if side_table else ("", "fix the column or map a text id")
        # Counted in the chunk being read when it stops (131,072 of 153,196): not the input's count.
        msg = (f"customer id column {name!r}{where} is {dtype} and ids are not whole numbers (or beyond 2^63; "
               f"{bad.len():,} in the part read before stopping); ids are never rounded: {fix}")
        raise InputContractError(msg)
