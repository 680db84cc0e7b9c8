"""The partition's scratch in fewer bytes: columns narrowed as a file is written, widened back as it is read,
bit for bit.

Scenario L's partition writes its whole input to scratch files, and the kernel's work on those bytes (copying
them into the page cache, clearing fresh pages for them, faulting them back in the map) was most of its time:
fewer bytes a line is the partition's time (bench/README, issue #19's rounds). On L, 34 -> 22 bytes a line took
its partition from 35-38 s to 26-27 s and its system time from 45 to 27 s (bench/README, thirtieth round). Each
column narrows where every value round-trips, in each file on its own:

- int64 (ids, order ids): unsigned 32-bit offsets from the file's least value;
- times: whole seconds from the least (whole units of the column's own where not all are whole seconds);
- float64 amounts: whole cents (int32), where each value is its cents / 100 bit for bit;
- dictionaries: the narrowest index type their dictionary fits (the map codes int8 and int16 indices as they are).

Anything else, and any column with a value that would not round-trip, is written as it is. A narrowed file's
schema metadata holds the schema it had and each narrowed column's encoding; a file without it is read as is.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmint.engine.io import arrow_numpy
from segmint.kernels.narrowing import from_cents, from_offsets, to_cents, to_offsets

__all__ = ["narrow", "widen"]

_ENCODINGS = b"segmint.narrowed"   # JSON: {column: [kind, base, scale]}
_SCHEMA = b"segmint.schema"        # the schema as written before narrowing, serialized (base64)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def narrow(table: pa.Table) -> pa.Table:
    """``table`` with each column that round-trips narrowed (module docstring)."""
    table = _narrow_indices(table)
    if len(set(table.column_names)) != table.num_columns:   # encodings are keyed by name
        return table
    encodings: dict[str, list] = {}
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        narrowed = _narrowed(column.chunk(0)) if column.num_chunks == 1 else None
        if narrowed is None:
            columns.append(column)
            continue
        array, encodings[field.name] = narrowed
        columns.append(array)
    if not encodings:
        return table
    metadata = {_ENCODINGS: json.dumps(encodings).encode(),
                _SCHEMA: base64.b64encode(table.schema.serialize().to_pybytes())}
    return pa.Table.from_arrays(columns, names=table.column_names, metadata=metadata)


def widen(table: pa.Table) -> pa.Table:
    """The table ``narrow`` was given, from what it made of it."""
    metadata = table.schema.metadata or {}
    if _ENCODINGS not in metadata:
        return table
    encodings = json.loads(metadata[_ENCODINGS])
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(metadata[_SCHEMA])))
    columns = []
    for field, column in zip(schema, table.columns, strict=True):
        encoding = encodings.get(field.name)
        columns.append(column if encoding is None else
                       pa.chunked_array([_widened(chunk, field.type, encoding) for chunk in column.chunks],
                                        field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _narrowed(array: pa.Array) -> tuple[pa.Array, list] | None:
    """The array in 32 bits and its encoding, or None where it does not round-trip (or is not of a kind here)."""
    kind = array.type
    if not (pa.types.is_int64(kind) or pa.types.is_timestamp(kind) or pa.types.is_float64(kind)) or not len(array):
        return None
    array = _offset_zero(array)
    valid = arrow_numpy.flags(pc.is_valid(array)) if array.null_count else np.zeros(0, np.bool_)
    if pa.types.is_float64(kind):
        cents = np.empty(len(array), np.int32)
        if not to_cents(arrow_numpy.values(array), valid, cents):
            return None
        return _with_validity(array, pa.int32(), cents), ["cents", 0, 1]
    values = arrow_numpy.values(array.view(pa.int64()))
    offsets = np.empty(len(array), np.uint32)
    for scale in (dict.fromkeys([_PER_SECOND[kind.unit], 1]) if pa.types.is_timestamp(kind) else [1]):
        ok, base = to_offsets(values, valid, scale, offsets)
        if ok:
            return _with_validity(array, pa.uint32(), offsets), ["offset", int(base), scale]
    return None


def _widened(array: pa.Array, kind: pa.DataType, encoding: list) -> pa.Array:
    name, base, scale = encoding
    array = _offset_zero(array)
    if name == "cents":
        out = np.empty(len(array), np.float64)
        from_cents(arrow_numpy.values(array), out)
    else:
        out = np.empty(len(array), np.int64)
        from_offsets(arrow_numpy.values(array), np.int64(base), np.int64(scale), out)
    return _with_validity(array, kind, out)


def _with_validity(like: pa.Array, kind: pa.DataType, values: np.ndarray) -> pa.Array:
    """An array of ``kind`` over ``values``, with the nulls of ``like`` (whose offset is 0)."""
    validity = like.buffers()[0] if like.null_count else None
    return pa.Array.from_buffers(kind, len(values), [validity, pa.py_buffer(values)], like.null_count)


def _offset_zero(array: pa.Array) -> pa.Array:
    """``array`` with its buffers starting at its first row (a slice's do not)."""
    return pa.concat_arrays([array]) if array.offset else array


def _narrow_indices(table: pa.Table) -> pa.Table:
    """Dictionary columns with the narrowest index type their dictionary fits (int8, int16): a channel or
    category index was 4 of the 40 bytes a line of scratch took on a local disk, whose writes bound the
    partition once the kernel's dirty-page limit is reached (scenario L: 40 -> 34 bytes a line; partition
    26.3-29.4 -> 22.6-23.0 s, system time 38.4 -> 28.9-30.3 s). The map codes these index types as they are."""
    for i, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type) or table.column(i).num_chunks != 1:
            continue
        size = len(table.column(i).chunk(0).dictionary)
        index = next((t for t in (pa.int8(), pa.int16()) if size <= 1 << (t.bit_width - 1)), None)
        if index is not None and index.bit_width < field.type.index_type.bit_width:
            table = table.set_column(i, field.name, table.column(i).cast(pa.dictionary(index, field.type.value_type)))
    return table
