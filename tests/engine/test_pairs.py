"""unique_pairs against np.unique(axis=1), the plain way, on random pairs and edge cases."""

import numpy as np
import pytest

from segmint.engine.pairs import unique_pairs


@pytest.mark.parametrize(("n", "lo", "hi"), [(0, 0, 1), (1, -5, -4), (1000, -3, 4), (5000, -10**6, 10**6)])
def test_unique_pairs_equal_numpys_on_the_stacked_pairs(n, lo, hi):
    rng = np.random.default_rng(n)
    a, b = rng.integers(lo, hi, n), rng.integers(lo, hi, n)
    keys, inverse, counts = np.unique(np.stack([a, b]), axis=1, return_inverse=True, return_counts=True)
    (ua, ub), got_counts, got_inverse = unique_pairs(a, b, inverse=True)
    np.testing.assert_array_equal(np.stack([ua, ub]), keys)
    np.testing.assert_array_equal(got_counts, counts)
    np.testing.assert_array_equal(got_inverse, inverse.ravel())
    (ua2, ub2), counts2 = unique_pairs(a, b)
    np.testing.assert_array_equal(np.stack([ua2, ub2]), keys)
    np.testing.assert_array_equal(counts2, counts)


def test_pairs_whose_codes_would_overflow_are_refused():
    wide = np.array([0, 2**40], np.int64)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        unique_pairs(wide, np.array([0, 2**23], np.int64))
    (a, b), counts = unique_pairs(wide, np.array([0, 2**22 - 1], np.int64))   # just below: fine
    assert a.tolist() == [0, 2**40] and b.tolist() == [0, 2**22 - 1] and counts.tolist() == [1, 1]
