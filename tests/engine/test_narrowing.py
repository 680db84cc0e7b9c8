"""The partition's scratch columns: narrowed where they round-trip, read back bit for bit through an IPC file."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from segmint.engine.io import store
from segmint.engine.io.narrowing import narrow, widen

UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _table(rng: np.random.Generator, n: int, unit: str, whole: bool) -> pa.Table:
    """Columns of every kind the scratch holds; ``whole``: values that narrow (else one of each spoils it)."""
    mask = rng.random(n) < 0.1
    seconds = 1_700_000_000 + rng.integers(0, 10**8, n)
    ticks = seconds * UNITS[unit] + (0 if whole or unit == "s" else rng.integers(0, UNITS[unit], n))
    ids = rng.integers(-5, 3_000_000_000, n)
    amounts = rng.integers(-10**6, 10**6, n) / 100.0
    if not whole:
        ids[0], amounts[0] = 2**40, 0.125
    return pa.table({
        "customer_id": pa.array(ids, pa.int64(), mask=mask),
        "ts": pa.array(ticks, pa.timestamp(unit, "Europe/Paris" if unit == "ms" else None), mask=mask),
        "amount": pa.array(amounts, pa.float64(), mask=mask),
        "order_id": pa.array(rng.integers(0, 100, n), pa.int32()),
        "channel": pa.array(rng.choice(["web", "app"], n)).dictionary_encode().cast(
            pa.dictionary(pa.int8(), pa.string())),
        "note": pa.array(rng.choice(["a", "b", None], n)),
    })


def _round_trip(table: pa.Table, tmp_path) -> pa.Table:
    path = str(tmp_path / "part.arrow")
    store.write_ipc(narrow(table), path)
    return widen(store.read_ipc(path))


@pytest.mark.parametrize("unit", list(UNITS))
@pytest.mark.parametrize("whole", [True, False])
def test_scratch_reads_back_bit_for_bit_narrowed_where_it_can(tmp_path, unit, whole):
    table = _table(np.random.default_rng(len(unit)), 500, unit, whole)
    narrowed = narrow(table)
    kinds = dict(zip(narrowed.column_names, narrowed.schema.types, strict=True))
    assert kinds["customer_id"] == (pa.uint32() if whole else pa.int64())
    assert kinds["amount"] == (pa.int32() if whole else pa.float64())
    # Times off whole seconds span 10^8 s, past 2^32 of their own units: they stay as they are.
    assert kinds["ts"] == (pa.uint32() if whole or unit == "s" else table.schema.field("ts").type)
    assert kinds["order_id"] == pa.int32() and kinds["note"] == pa.string()   # other kinds as they are
    back = _round_trip(table, tmp_path)
    assert back.schema == table.schema and back.equals(table)
    for name in ("ts", "amount", "customer_id"):   # the values under a null too need not survive; the valid ones do
        valid = table.column(name).is_valid()
        left = table.column(name).filter(valid).combine_chunks()
        right = back.column(name).filter(valid).combine_chunks()
        assert left.buffers()[1].to_pybytes()[: left.nbytes] == right.buffers()[1].to_pybytes()[: right.nbytes]


def test_a_slice_narrows_and_widens_with_its_own_nulls(tmp_path):
    table = _table(np.random.default_rng(3), 300, "us", True)
    part = table.slice(37, 150)
    assert part.column("ts").chunk(0).offset == 37
    assert narrow(part).schema.field("ts").type == pa.uint32()
    assert _round_trip(part, tmp_path).equals(part)


def test_negative_zero_nan_and_columns_without_a_valid_value(tmp_path):
    table = pa.table({"amount": pa.array([-0.0, 0.0, 1.1, None]),
                      "nan": pa.array([1.5, float("nan")]).take([0, 1, 0, 0]),
                      "ts": pa.array([None] * 4, pa.timestamp("us")),
                      "at": pa.array([dt.datetime(2024, 5, 1, 12)] * 4, pa.timestamp("us"))})
    narrowed = narrow(table)
    assert narrowed.schema.types == [pa.int32(), pa.float64(), pa.uint32(), pa.uint32()]
    back = _round_trip(table, tmp_path)
    assert back.drop_columns(["nan"]).equals(table.drop_columns(["nan"]))   # NaN equals nothing, itself neither
    assert back.column("nan").chunk(0).buffers()[1] == table.column("nan").combine_chunks().buffers()[1]
    assert np.signbit(back.column("amount").chunk(0).to_numpy(zero_copy_only=False)[0])


def test_a_file_without_narrowed_columns_reads_as_written(tmp_path):
    table = pa.table({"note": ["a", "b"], "x": pa.array([1, 2], pa.int32())})
    assert narrow(table) is table or narrow(table).equals(table)
    assert widen(table) is table
