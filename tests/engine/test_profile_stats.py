"""Profile statistics read from one sort give NumPy's median and linear quantiles to the bit."""

import numpy as np
import pytest

from segmint.engine.profile import sorted_stats


def _numpy(v: np.ndarray) -> tuple[float, float, float]:
    return (float(np.median(v)), *np.quantile(v, [0.1, 0.9]).tolist())


def _bits(values: tuple[float, ...]) -> bytes:
    return np.asarray(values, np.float64).tobytes()   # -0.0 and 0.0 differ here, as in a Parquet file


@pytest.mark.parametrize("n", [*range(1, 25), 99, 100, 1001, 65_537])
def test_sorted_stats_match_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    samples = [
        rng.normal(size=n) * 10.0 ** rng.integers(-5, 8),
        rng.integers(0, 4, n).astype(np.float64),                                  # ties
        np.round(rng.exponential(30.0, n)),                                        # day counts
        rng.choice(np.array([-0.0, -1e308, 1e308, 5e-324, 1.0]), n),                # a signed zero, extremes
        np.full(n, -0.0),
    ]
    for v in samples:
        assert _bits(sorted_stats(np.sort(v))) == _bits(_numpy(v)), v[:10]


def test_sorted_stats_with_both_zeros_are_numpys_numbers():
    # -0.0 == 0.0: a sort and NumPy's partition may leave either at an index, so only the number is NumPy's.
    rng = np.random.default_rng(7)
    for n in range(1, 200):
        v = rng.choice(np.array([-0.0, 0.0, -2.0, 3.0]), n)
        assert sorted_stats(np.sort(v)) == _numpy(v)
