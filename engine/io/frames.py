"""Rows handed over in memory (a pandas DataFrame, a pyarrow Table, a dict of columns) as a Polars DataFrame.

A conversion that fails (an object column mixing numbers and text, duplicate column names, a time zone
Polars does not take) raised the converting library's own error; it is an ``InputContractError`` (exit 3)
naming what to fix, as the same rows in a file would be.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from segmint.engine.errors import InputContractError
from segmint.engine.io.sources import first_line

__all__ = ["polars_frame"]


def polars_frame(data: Any, what: str = "the transactions given") -> pl.DataFrame:
    """``data`` as a Polars DataFrame (a LazyFrame collected)."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return _converted(data.collect, what)
    kind = f"{type(data).__module__}.{type(data).__name__}"
    if kind.startswith("pandas.") and type(data).__name__ == "DataFrame":
        return _converted(lambda: pl.from_pandas(data), what)
    return _converted(lambda: pl.DataFrame(data), what)


def _converted(convert: Any, what: str) -> pl.DataFrame:
    try:
        return convert()
    except Exception as exc:  # noqa: BLE001 - pandas, pyarrow and Polars each raise their own
        msg = (f"{what} cannot be read as a table ({type(exc).__name__}: {first_line(exc)}); give each column one "
               f"type (ids all text or all integers, amounts numbers, times datetimes with an IANA zone or none) and "
               f"unique column names")
        raise InputContractError(msg) from None
