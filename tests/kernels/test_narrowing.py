"""The scratch narrowing kernels against plain Python on random inputs and at their edges."""

import math
import struct

import numpy as np
import pytest

from segmint.kernels.narrowing import from_cents, from_offsets, to_cents, to_offsets

U32 = 2**32 - 1


def offsets_ref(values, valid, scale):
    """(ok, base, offsets) of ``to_offsets``, in Python integers."""
    kept = [int(v) for v, ok in zip(values, valid, strict=True) if ok]
    base = min(kept) if kept else 0
    if any((v - base) % scale or (v - base) // scale > U32 for v in kept):
        return False, None, None
    return True, base, [(int(v) - base) // scale if ok else 0 for v, ok in zip(values, valid, strict=True)]


def cents_ref(values, valid):
    """(ok, cents) of ``to_cents``: a value is kept where some int32 c other than the least has c / 100 equal to
    it bit for bit; -0.0 is the least int32."""
    out = []
    for x, ok in zip(values, valid, strict=True):
        if not ok:
            out.append(0)
            continue
        if x == 0 and math.copysign(1.0, x) < 0:
            out.append(-2**31)
            continue
        if not math.isfinite(x) or abs(x * 100) > 2**31:
            return False, None
        c = round(x * 100)
        if not (-2**31 < c < 2**31) or struct.pack("<d", c / 100) != struct.pack("<d", x):
            return False, None
        out.append(c)
    return True, out


def _valid(rng, n, nulls):
    return rng.random(n) >= 0.2 if nulls else np.ones(n, bool)


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("scale", [1, 1_000, 1_000_000, 1_000_000_000])
@pytest.mark.parametrize("seed", range(4))
def test_offsets_match_the_reference_and_round_trip(seed, scale, nulls):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    base = int(rng.integers(-2**62 // 4, 2**62 // 4))
    span = [10, U32, U32 + 1][seed % 3]     # fits, the widest that fits, one step past
    steps = rng.integers(0, span + 1, n, dtype=np.int64)
    steps[0], steps[-1] = 0, span            # the ends themselves
    values = base + steps * scale
    if seed == 3 and scale > 1:
        values[n // 2] += 1                  # one value off the grid
    valid = _valid(rng, n, nulls)
    ok, want_base, want = offsets_ref(values, valid, scale)
    out = np.empty(n, np.uint32)
    got_ok, got_base = to_offsets(values, valid if nulls else np.zeros(0, bool), scale, out)
    assert got_ok == ok
    if ok:
        assert got_base == want_base and out.tolist() == want
        back = np.empty(n, np.int64)
        from_offsets(out, got_base, np.int64(scale), back)
        assert (back[valid] == values[valid]).all()


def test_offsets_at_the_ends_of_int64_and_with_nothing_valid():
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    out = np.empty(2, np.uint32)
    assert not to_offsets(np.array([lo, hi]), np.zeros(0, bool), 1, out)[0]    # a span past int64's own
    ok, base = to_offsets(np.array([hi - U32, hi]), np.zeros(0, bool), 1, out)
    assert ok and base == hi - U32 and out.tolist() == [0, U32]
    ok, base = to_offsets(np.array([lo, lo + U32]), np.zeros(0, bool), 1, out)
    assert ok and base == lo and out.tolist() == [0, U32]
    ok, base = to_offsets(np.array([7, 9]), np.zeros(2, bool), 1, out)           # every row null
    assert ok and base == 0 and out.tolist() == [0, 0]
    assert to_offsets(np.zeros(0, np.int64), np.zeros(0, bool), 1_000, np.empty(0, np.uint32)) == (True, 0)


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_cents_match_the_reference_and_round_trip_bit_for_bit(seed, nulls):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    values = rng.integers(-2**31 + 1, 2**31, n) / 100.0 if seed % 2 else np.round(rng.normal(0, 50, n), 2)
    spoil = [None, np.nan, -0.0, 0.125, np.inf, 2**31 / 100, -(2**31 - 1) / 100, 1e-320, 0.1 + 0.2, None][seed]
    if spoil is not None:
        values[rng.integers(0, n)] = spoil
    valid = _valid(rng, n, nulls)
    ok, want = cents_ref(values, valid)
    out = np.empty(n, np.int32)
    assert to_cents(values, valid if nulls else np.zeros(0, bool), out) == ok
    if ok:
        assert out.tolist() == want
        back = np.empty(n)
        from_cents(out, back)
        assert (back.view(np.int64)[valid] == values.view(np.int64)[valid]).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 0.001, 1.005, 2**31 / 100, -(2**31) / 100, 5e-324])
def test_a_value_that_is_not_whole_cents_keeps_the_column_wide(value):
    values = np.array([1.25, value, 3.5])
    assert not to_cents(values, np.zeros(0, bool), np.empty(3, np.int32))
    assert to_cents(values, np.array([True, False, True]), np.empty(3, np.int32))   # unless it is null


def test_negative_zero_and_the_widest_cents_round_trip():
    values = np.array([-0.0, 0.0, (2**31 - 1) / 100, -(2**31 - 1) / 100, 0.01, -0.01])
    out, back = np.empty(6, np.int32), np.empty(6)
    assert to_cents(values, np.zeros(0, bool), out)
    from_cents(out, back)
    assert back.view(np.int64).tolist() == values.view(np.int64).tolist()
