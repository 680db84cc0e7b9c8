"""The counting sort of rows by customer against NumPy's stable argsort, on random inputs and edge cases."""

import numpy as np
import pytest

from segmint.kernels.grouping import group_rows, perm_dtype


@pytest.mark.parametrize("n, n_groups", [(0, 0), (1, 1), (5, 1), (2_000, 300), (2_000, 2_500), (5_000, 3)])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_group_rows_is_a_stable_argsort(n, n_groups, dtype):
    rng = np.random.default_rng(n + n_groups)
    # Keys are codes in any order, -1 for a missing one; rank maps each to its group (the last entry: -1's).
    rank = np.append(rng.permutation(max(n_groups - 1, 0)), max(n_groups - 1, 0)).astype(dtype)
    key = rng.integers(-1, max(n_groups - 1, 1), n).astype(dtype) if n_groups > 1 else np.full(n, -1, dtype)
    group = rank[key]
    perm = np.empty(n, dtype)
    offsets = np.empty(n_groups + 1, np.int64)
    group_rows(key, rank, n_groups, perm, offsets)
    np.testing.assert_array_equal(perm, np.argsort(group, kind="stable"))
    np.testing.assert_array_equal(offsets, np.concatenate(([0], np.cumsum(np.bincount(group, minlength=n_groups)))))


def test_empty_groups_get_empty_ranges():
    perm = np.empty(4, np.int32)
    offsets = np.empty(5, np.int64)
    group_rows(np.array([3, 0, 3, 0], np.int32), np.arange(4, dtype=np.int32), 4, perm, offsets)
    np.testing.assert_array_equal(offsets, [0, 2, 2, 2, 4])
    np.testing.assert_array_equal(perm, [1, 3, 0, 2])


def test_row_numbers_are_int32_while_they_fit():
    assert perm_dtype(0) == np.int32 and perm_dtype(2**31 - 1) == np.int32
    assert perm_dtype(2**31) == np.int64


@pytest.mark.parametrize("n_groups, runs", [(1, 4), (7, 4), (5_000, 4), (50_000, 1)])
def test_runs_give_the_serial_order_and_their_counts_stay_under_a_byte_a_row(n_groups, runs, monkeypatch):
    """Past two runs' worth of rows the sort cuts them into one run per thread, but never into more runs
    than rows / (8 x groups) (300 k rows in 50 k groups: one run): on one thread and on four, the
    permutation and offsets of NumPy's stable argsort."""
    import segmint.kernels.grouping as grouping

    rng = np.random.default_rng(n_groups)
    n = 300_001
    rank = rng.permutation(n_groups).astype(np.int32)
    key = rng.integers(0, n_groups, n).astype(np.int32)
    key[rng.random(n) < 0.01] = -1      # the last entry of rank: its group gets rows from every run
    group = rank[key]
    parallel, counted = grouping._count_runs, []
    monkeypatch.setattr(grouping, "_count_runs", lambda k, r, at: (counted.append(at.shape[0]), parallel(k, r, at)))
    for threads in (1, 4):
        perm, offsets = np.empty(n, np.int32), np.empty(n_groups + 1, np.int64)
        group_rows(key, rank, n_groups, perm, offsets, threads=threads)
        np.testing.assert_array_equal(perm, np.argsort(group, kind="stable"))
        np.testing.assert_array_equal(offsets, np.concatenate(([0], np.cumsum(np.bincount(group,
                                                                                         minlength=n_groups)))))
    assert counted == ([runs] if runs > 1 else [])
