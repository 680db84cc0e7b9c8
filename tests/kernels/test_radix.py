"""The radix sort and the sort chooser against np.sort, bit for bit."""

import numpy as np
import pytest

from segmint.engine import sorting
from segmint.kernels.radix import radix_sort


def _cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5000, 40_000))
    tiny = np.finfo(np.float64).tiny
    biggest = np.finfo(np.float64).max
    yield "uniform", rng.random(n) * 1000
    yield "signed", rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    yield "counts", rng.integers(0, 60, n).astype(np.float64)   # most digits shared: passes skipped
    yield "cents", np.round(rng.lognormal(3, 1, n), 2)
    yield "ties", rng.choice([-3.5, 0.25, 7.0, 1e9], n)
    yield "constant", np.full(n, -2.75)                           # no pass at all
    yield "sorted", np.sort(rng.standard_normal(n))
    yield "reversed", np.sort(rng.standard_normal(n))[::-1].copy()
    yield "extremes", rng.choice([-biggest, biggest, -tiny, tiny, tiny / 8, -tiny / 8, 1.0, -1.0], n)
    yield "subnormals", (rng.random(n) - 0.5) * tiny
    yield "positive zeros", np.where(rng.random(n) < 0.3, 0.0, rng.standard_normal(n))
    yield "negative zeros", np.where(rng.random(n) < 0.3, -0.0, rng.standard_normal(n))
    yield "one", np.array([rng.standard_normal()])
    yield "empty", np.zeros(0)
    # Passes run and skipped in every number: one digit varying (each digit in turn: an odd number of passes, the
    # result then in the scratch), and all keys but one sharing a digit.
    yield "one pass", np.array([8.0, 2.0, 16.0, 4.0] * (n // 4))
    base = np.float64(rng.uniform(1, 2)).view(np.uint64)
    for digit in range(6):   # of the top digit, bits 55-60 only: an exponent of all ones is no finite value
        bits = rng.integers(0, 1 << (11 if digit < 5 else 6), n).astype(np.uint64)
        yield f"digit {digit} only", (base ^ (bits << np.uint64(11 * digit))).view(np.float64)
    almost = np.full(n, 3.0)
    almost[int(rng.integers(n))] = np.nextafter(3.0, 4.0)
    yield "all but one alike", almost
    yield "three passes", rng.integers(0, 1 << 30, n).astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_the_radix_sort_is_numpys_sort(seed):
    for name, values in _cases(seed):
        out = np.full(values.size, np.nan)
        assert radix_sort(values, out, np.empty(values.size, np.uint64)), name
        assert out.tobytes() == np.sort(values).tobytes(), name


@pytest.mark.parametrize("odd", [-0.0, np.inf - np.inf, np.nan, np.inf, -np.inf])
def test_both_signs_of_zero_and_non_finite_values_are_left_to_numpy(odd):
    # x86's NaN from inf - inf has its sign bit set: as a key it would come first, where NumPy puts NaN last.
    values = np.array([1.0, 0.0, 3.0, odd, -2.0])
    out = np.full(values.size, 7.0)
    assert not radix_sort(values, out, np.empty(values.size, np.uint64))
    assert (out == 7.0).all()   # not written


@pytest.mark.parametrize("radix", [True, False])
def test_sorted_floats_is_numpys_sort_whichever_sort_runs(monkeypatch, radix):
    monkeypatch.setattr(sorting, "_radix_faster", radix)
    rng = np.random.default_rng(7)
    mixed = np.where(rng.random(9000) < 0.2, rng.choice([0.0, -0.0], 9000), rng.standard_normal(9000))
    read_only = rng.standard_normal(9000)
    read_only.flags.writeable = False
    with_nan = rng.standard_normal(9000)
    with_nan[[5, 500]] = [np.inf - np.inf, np.inf]
    for _, values in [*_cases(11), ("both zeros", mixed), ("strided", rng.standard_normal(20_000)[::2]),
                      ("read-only", read_only), ("non-finite", with_nan), ("float32", rng.random(9000, np.float32)),
                      ("int64", rng.integers(-50, 50, 9000))]:
        got = sorting.sorted_floats(values)
        assert got.dtype == values.dtype and got.tobytes() == np.sort(values).tobytes()


def test_the_choice_is_measured_once(monkeypatch):
    monkeypatch.setattr(sorting, "_radix_faster", None)
    timed = []
    monkeypatch.setattr(sorting, "_best_time", lambda sort, values: timed.append(sort) or len(timed))
    first = sorting._radix_is_faster()
    assert len(timed) == 2 and sorting._radix_is_faster() == first and len(timed) == 2
    assert first is True   # the radix sort's time (1) against NumPy's (2): 1 <= 0.8 * 2


def _sorted_keys(values):
    # The keys the order statistics read, from NumPy: a float64's bits with the sign bit set, or all flipped.
    bits = np.asarray(values, np.float64).view(np.uint64)
    return np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63))


@pytest.mark.parametrize("seed", range(4))
def test_the_value_of_a_rank_is_that_of_numpys_sort(seed):
    from segmint.kernels.radix import value_of_rank

    rng = np.random.default_rng(seed)
    for name, values in _cases(seed):
        if not values.size:
            continue
        keys = _sorted_keys(values)
        before = keys.copy()
        want = np.sort(values)
        for rank in {0, keys.size - 1, *rng.integers(0, keys.size, 5).tolist()}:
            got = value_of_rank(keys, rank, np.empty(keys.size, np.uint64))
            assert np.float64(got).tobytes() == want[rank].tobytes(), name
        assert (keys == before).all(), name   # left as they are


def test_top_digits_are_counted_and_gathered_per_digit_in_order_of_the_values():
    from segmint.kernels.radix import DIGITS, count_top_digits, keys_with_top_digits

    rng = np.random.default_rng(3)
    floats = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-5, 9, 3000), [np.nan, -np.nan, 0.0]])
    ints = rng.integers(-(1 << 62), 1 << 62, 3000)
    for values in (floats, ints, rng.integers(0, 40, 3000)):
        counts = np.zeros(DIGITS, np.int64)
        assert count_top_digits(values, counts) == np.isnan(values.astype(np.float64)).sum()
        finite = values[~np.isnan(values.astype(np.float64))]
        keys = _sorted_keys(finite)
        top = (keys >> np.uint64(48)).astype(np.int64)
        assert (counts == np.bincount(top, minlength=DIGITS)).all()
        wanted = np.zeros(DIGITS, np.bool_)
        wanted[rng.choice(np.unique(top), 3)] = True
        kept = np.where(wanted, counts, 0)
        begins = np.cumsum(kept) - kept
        out = np.zeros(kept.sum(), np.uint64)
        starts = begins.copy()
        # Two calls (two chunks of the values): the second goes on where the first stopped.
        half = values.size // 2
        keys_with_top_digits(values[:half], wanted, out, starts)
        keys_with_top_digits(values[half:], wanted, out, starts)
        for d in np.flatnonzero(wanted):
            assert out[begins[d]: begins[d] + counts[d]].tolist() == keys[top == d].tolist()
        assert (starts[wanted] == begins[wanted] + counts[wanted]).all()
