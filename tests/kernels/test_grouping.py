"""The counting sort of rows by customer against NumPy's stable argsort, on random inputs and edge cases."""

import numpy as np
import pytest

from segmint.kernels.grouping import group_rows


@pytest.mark.parametrize("n, n_groups", [(0, 0), (1, 1), (5, 1), (2_000, 300), (2_000, 2_500), (5_000, 3)])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_group_rows_is_a_stable_argsort(n, n_groups, dtype):
    rng = np.random.default_rng(n + n_groups)
    group = rng.integers(0, max(n_groups, 1), n).astype(dtype)
    perm = np.empty(n, np.int64)
    offsets = np.empty(n_groups + 1, np.int64)
    group_rows(group, n_groups, perm, offsets)
    np.testing.assert_array_equal(perm, np.argsort(group, kind="stable"))
    np.testing.assert_array_equal(offsets, np.concatenate(([0], np.cumsum(np.bincount(group, minlength=n_groups)))))


def test_empty_groups_get_empty_ranges():
    perm = np.empty(4, np.int64)
    offsets = np.empty(5, np.int64)
    group_rows(np.array([3, 0, 3, 0], np.int32), 4, perm, offsets)
    np.testing.assert_array_equal(offsets, [0, 2, 2, 2, 4])
    np.testing.assert_array_equal(perm, [1, 3, 0, 2])
