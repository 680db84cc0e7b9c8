"""Arrow arrays as NumPy arrays, read from their buffers.

pyarrow's ``Array.to_numpy`` imports pandas wherever pandas is installed (0.16 s, once per
process: every command's first chunk paid it), although the map only needs the buffers.
``values`` views a numeric array's values buffer; ``flags`` unpacks a boolean array's bits;
``array`` goes the other way (``pa.array`` of a NumPy array imports pandas as well), and ``frame`` makes
a Polars DataFrame of NumPy columns that way. ``take`` takes rows of tables that hold Polars' string views.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["values", "flags", "array", "frame", "take"]

_DTYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
           pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
           pa.float32(): np.float32, pa.float64(): np.float64}


def values(array: pa.Array, fill: float = 0) -> np.ndarray:
    """The values of a fixed-width numeric array, read-only: without a copy where it has no nulls, else a
    copy with ``fill`` at the nulls (pyarrow's fill_null takes a pyarrow scalar, whose making imports pandas
    too). Read-only whatever the buffer, as ``to_numpy`` gives them: Numba compiles a kernel once per
    array type, and a writable array would be another type than the one the warmup cached."""
    dtype = np.dtype(_DTYPES[array.type])
    if len(array) == 0:
        out = np.zeros(0, dtype)
    else:
        out = np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)
        if array.null_count:
            out = np.where(flags(pc.is_valid(array)), out, dtype.type(fill))
    out.flags.writeable = False
    return out


def flags(array: pa.Array) -> np.ndarray:
    """A boolean array without nulls as NumPy bools."""
    if array.null_count:
        msg = "flags() takes a boolean array without nulls"
        raise ValueError(msg)
    if len(array) == 0:
        return np.zeros(0, bool)
    bits = np.frombuffer(array.buffers()[1], np.uint8)
    return np.unpackbits(bits, count=array.offset + len(array), bitorder="little")[array.offset:].view(bool)


def array(numbers: np.ndarray) -> pa.Array:
    """A one-dimensional NumPy numeric (or boolean) array as an Arrow array, over the same memory but for booleans
    (Arrow packs them in bits) and values not in the machine's byte order."""
    if numbers.ndim != 1:
        msg = f"an Arrow array is made of a one-dimensional array, not of shape {numbers.shape}"
        raise ValueError(msg)
    if not numbers.dtype.isnative:
        numbers = numbers.astype(numbers.dtype.newbyteorder("="))
    if numbers.dtype == np.bool_:
        bits = np.packbits(numbers, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), numbers.size, [None, pa.py_buffer(bits)])
    numbers = np.ascontiguousarray(numbers)
    return pa.Array.from_buffers(pa.from_numpy_dtype(numbers.dtype), numbers.size, [None, pa.py_buffer(numbers)])


def frame(columns: Mapping[str, np.ndarray | pl.Series]) -> pl.DataFrame:
    """Columns (of one length) as a Polars DataFrame, in their order: NumPy ones of their types through one Arrow
    table (Polars made each NumPy column a Series for 20-30 us, whatever its length: scoring one customer built 40
    of them), Polars Series as they are, named by their keys."""
    arrays = {name: v for name, v in columns.items() if isinstance(v, np.ndarray)}
    table = pl.from_arrow(pa.Table.from_arrays([array(v) for v in arrays.values()], names=list(arrays)))
    assert isinstance(table, pl.DataFrame)
    if len(arrays) == len(columns):
        return table
    return pl.DataFrame([table[name] if name in arrays else v.alias(name) for name, v in columns.items()])


def take(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """The rows of ``table`` at ``positions`` (integers); columns of text or binary views, for which Arrow's take has
    no kernel ('array_take has no kernel ... string_view'), taken by Polars, as Arrow's large strings or binaries."""
    indices = array(positions.astype(np.int64, copy=False))
    if not any(_is_view(column.type) for column in table.columns):
        return table.take(indices)
    columns = [_polars_take(column, indices) if _is_view(column.type) else column.take(indices)
               for column in table.columns]
    return pa.Table.from_arrays(columns, names=table.column_names)


def _is_view(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string_view(arrow_type) or pa.types.is_binary_view(arrow_type)


def _polars_take(column: pa.ChunkedArray, indices: pa.Array) -> pa.Array:
    series = pl.from_arrow(column)
    assert isinstance(series, pl.Series)
    return series.gather(pl.from_arrow(indices)).to_arrow()
