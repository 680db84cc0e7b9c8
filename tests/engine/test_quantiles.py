"""Linear quantiles from radix keys against np.quantile, bit for bit."""

import warnings

import numpy as np
import polars as pl
import pytest

from segmint.engine.quantiles import linear_quantiles

_QUANTILES = (0.2, 0.4, 0.6, 0.8)


def _chunked(values: np.ndarray, chunks: int) -> pl.Series:
    parts = [p for p in np.array_split(values, chunks) if p.size] or [values]
    return pl.concat([pl.Series("v", p) for p in parts], rechunk=False)


def _numpy(values: np.ndarray, quantiles=_QUANTILES) -> tuple[float, ...]:
    with warnings.catch_warnings():   # NumPy's interpolation between infinities warns
        warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(float(q) for q in np.quantile(values.astype(np.float64), quantiles))


def _cases(rng, n):
    biggest = np.finfo(np.float64).max
    yield rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, n)
    yield rng.gamma(2.0, 50.0, n)
    yield np.round(rng.exponential(30.0, n))                         # whole days
    yield rng.integers(1, 6, n)                                      # counts, Int64: ties across every cut
    yield rng.integers(-(1 << 62), 1 << 62, n)                       # integers beyond float64's 2^53
    yield rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64)  # beyond int64's range
    yield rng.integers(-100, 100, n).astype(np.int16)
    yield rng.integers(0, 255, n).astype(np.uint8)
    yield rng.random(n) < 0.3                                        # booleans, as NumPy's astype makes them
    yield (rng.standard_normal(n) * 1e30).astype(np.float32)
    yield 100.0 + rng.random(n)                                      # every value in one top digit
    yield rng.choice(np.array([-biggest, biggest, np.inf, -np.inf, 5e-324, -5e-324, 1.0, 2.0]), n)
    yield np.full(n, -2.5)


@pytest.mark.parametrize("n", [*range(1, 30), 99, 1000, 65_537])
@pytest.mark.parametrize("chunks", [1, 3])
def test_linear_quantiles_are_numpys_to_the_bit(n, chunks):
    rng = np.random.default_rng(n * 7 + chunks)
    for values in _cases(rng, n):
        got = linear_quantiles(_chunked(values, chunks), _QUANTILES)
        want = _numpy(values)
        if np.isnan(want).any():   # NaN's bits are NumPy's arithmetic's own
            assert np.array_equal(got, want, equal_nan=True), (values[:8], got, want)
        else:
            assert np.array(got).tobytes() == np.array(want).tobytes(), (values[:8], got, want)


def test_other_quantiles_and_the_ends_are_numpys():
    rng = np.random.default_rng(11)
    values = rng.gamma(2.0, 50.0, 10_001)
    quantiles = (0.0, 0.001, 0.1, 0.5, 0.9, 0.999, 1.0)
    assert np.array(linear_quantiles(_chunked(values, 5), quantiles)).tobytes() == \
        np.array(_numpy(values, quantiles)).tobytes()


def test_both_signs_of_zero_give_numpys_numbers():
    # -0.0 == 0.0: which of them NumPy's partition leaves at an index is its own; the numbers are equal.
    rng = np.random.default_rng(5)
    for n in range(1, 120):
        values = rng.choice(np.array([-0.0, 0.0, -2.0, 3.0]), n)
        assert linear_quantiles(_chunked(values, 2), _QUANTILES) == _numpy(values)


def test_a_nan_makes_every_quantile_nan_as_in_numpy():
    values = np.array([3.0, 1.0, np.nan, 2.0, 5.0])
    assert all(np.isnan(linear_quantiles(_chunked(values, 2), _QUANTILES)))
    assert all(np.isnan(_numpy(values)))


def test_nulls_and_an_empty_column_are_numpys_too():
    with_null = pl.Series("v", [3.0, None, 1.0, 2.0])
    assert all(np.isnan(linear_quantiles(with_null, _QUANTILES)))   # a null is NaN to NumPy
    with pytest.raises(IndexError):
        linear_quantiles(pl.Series("v", [], pl.Float64), _QUANTILES)


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan")])
def test_a_quantile_outside_zero_to_one_is_refused_as_numpy_refuses_it(q):
    values = np.arange(10.0)
    with pytest.raises(ValueError):
        np.quantile(values, [0.5, q])
    with pytest.raises(ValueError):
        linear_quantiles(pl.Series("v", values), (0.5, q))
