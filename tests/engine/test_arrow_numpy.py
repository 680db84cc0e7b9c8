"""Arrow arrays as NumPy from their buffers (engine.io.arrow_numpy) against pyarrow's own conversion."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from segmint.engine.io.arrow_numpy import array, flags, frame, take, values


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
                                        pa.uint32(), pa.uint64(), pa.float32(), pa.float64()])
def test_values_are_the_arrays_values_at_any_offset(arrow_type):
    rng = np.random.default_rng(3)
    array = pa.array(rng.integers(0, 100, 1000)).cast(arrow_type)
    for lo, n in ((0, 1000), (1, 998), (517, 3), (999, 1), (400, 0)):
        part = array.slice(lo, n)
        got = values(part)
        assert got.dtype == part.to_numpy().dtype and np.array_equal(got, part.to_numpy())


def test_values_fill_nulls_and_are_read_only():
    # Nulls become ``fill`` (pyarrow's fill_null), and every result is read-only, as to_numpy's zero-copy
    # arrays are: the Numba kernels are compiled (and cached by the warmup) for that array type.
    column = pa.array([4.0, None, -1.5, None, 2.0]).slice(1)
    got = values(column, np.nan)
    assert np.array_equal(got, [np.nan, -1.5, np.nan, 2.0], equal_nan=True) and not got.flags.writeable
    assert values(pa.array([7, None], pa.int64())).tolist() == [7, 0]
    assert not values(pa.array([1, 2], pa.int32())).flags.writeable
    assert not values(pa.array([], pa.int64())).flags.writeable


def test_array_is_the_numpy_array_in_arrow():
    numbers = np.arange(10, dtype=np.int64)[::-1][2:]
    got = array(numbers)
    assert got.type == pa.int64() and got.null_count == 0 and got.to_pylist() == numbers.tolist()
    table = pa.table({"x": pa.array(range(10))})
    assert table.take(array(np.array([3, 1], np.int64)))["x"].to_pylist() == [3, 1]
    # Booleans packed in bits (strided too), values in the other byte order read as values, no flattening.
    flags_ = np.array([True, False, True, True, False, False, True, False, True, True, False])
    for bools in (flags_, flags_[::-2], flags_[3:], flags_[:0]):
        assert array(bools).type == pa.bool_() and array(bools).to_pylist() == bools.tolist()
    assert array(np.array([1, -2], ">i8")).to_pylist() == [1, -2]
    with pytest.raises(ValueError, match="one-dimensional"):
        array(np.zeros((2, 2)))


def test_frame_makes_a_polars_frame_of_numpy_columns_and_series_in_order():
    import polars as pl

    got = frame({"a": np.array([1, 2], np.int8), "name": pl.Series(["x", "y"]), "b": np.array([0.5, np.nan]),
                 "flag": np.array([True, False])})
    assert got.columns == ["a", "name", "b", "flag"]
    assert got.dtypes == [pl.Int8, pl.String, pl.Float64, pl.Boolean]
    assert got.row(0) == (1, "x", 0.5, True) and np.isnan(got["b"][1]) and got["b"].null_count() == 0
    assert frame({}).shape == (0, 0) and frame({"s": pl.Series([1])}).columns == ["s"]


@pytest.mark.parametrize("offset", [0, 1, 7, 8, 13])
def test_flags_unpack_the_bits_at_any_offset(offset):
    rng = np.random.default_rng(offset)
    bits = rng.random(300) < 0.4
    part = pa.array(bits).slice(offset, 300 - 2 * offset)
    got = flags(part)
    assert got.dtype == bool and got.tolist() == bits[offset: 300 - offset].tolist()
    assert flags(pa.array([], pa.bool_())).size == 0
    with pytest.raises(ValueError, match="without nulls"):
        flags(pa.array([True, None]))


def test_the_map_does_not_import_pandas():
    # pyarrow's to_numpy imports pandas where installed (0.16 s a process); the map reads buffers instead.
    code = """
import sys, datetime as dt, polars as pl
from segmint.engine.config import RunConfig, Columns
from segmint.engine.features.table import features_of
when = dt.datetime(2024, 1, 1)
frame = pl.DataFrame({"customer_id": [1, 1, None], "ts": [when, None, when], "amount": [1.0, None, 2.0],
                      "order_id": [7, 8, 9], "channel": ["a", None, "b"], "category": ["x", "y", None]})
frame = frame.with_columns(pl.col("channel").cast(pl.Categorical))
features_of(frame, RunConfig(columns=Columns(order="order_id")), as_of=when, now=when, channels=None, mode="features")
print("pandas" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_take_takes_rows_of_views_as_of_any_other_column():
    import polars as pl

    table = pl.DataFrame({"id": [1, 2, 3, 4], "text": ["a", None, "a string longer than twelve", ""],
                          "raw": [b"x", b"", None, b"zz"]})
    views = table.to_arrow(compat_level=pl.CompatLevel.newest())
    assert views.schema.field("text").type == pa.string_view()
    at = np.array([3, 0, 2, 2])
    want = table[at.tolist()]
    got = take(views, at)
    assert pl.from_arrow(got).equals(want) and got.column_names == views.column_names
    assert take(table.to_arrow(), at).equals(table.to_arrow().take(pa.array(at)))
