"""Grouping kernels against NumPy's stable lexsort, on random inputs and edge cases."""

import numpy as np
import pytest

from segmint.kernels.grouping import group_rows, sort_segments, take


def grouped(group: np.ndarray, major: np.ndarray, minor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_groups = int(group.max(initial=-1)) + 1
    perm = np.empty(group.size, np.int64)
    offsets = np.empty(n_groups + 1, np.int64)
    group_rows(group, n_groups, perm, offsets)
    sort_segments(offsets, perm, major, minor)
    return perm, offsets


@pytest.mark.parametrize("n, n_groups, key_range", [
    (0, 0, 1), (1, 1, 1), (5, 1, 1),          # empty, one row, identical keys
    (2_000, 300, 4), (2_000, 40, 1_000),      # many ties; few, large groups
    (5_000, 3, 50),                           # groups far above the insertion-sort size
])
def test_group_then_sort_equals_stable_lexsort(n, n_groups, key_range):
    rng = np.random.default_rng(n + n_groups + key_range)
    group = rng.integers(0, max(n_groups, 1), n).astype(np.int64)
    major = rng.integers(0, key_range, n).astype(np.int64)
    minor = rng.integers(-key_range, key_range, n).astype(np.int64)
    perm, offsets = grouped(group, major, minor)
    np.testing.assert_array_equal(perm, np.lexsort((minor, major, group)))
    np.testing.assert_array_equal(offsets, np.concatenate(([0], np.cumsum(np.bincount(group, minlength=offsets.size - 1)))))


def test_empty_groups_get_empty_ranges():
    group = np.array([3, 0, 3, 0], np.int64)
    perm, offsets = grouped(group, np.zeros(4, np.int64), np.array([9, 8, 1, 2], np.int64))
    np.testing.assert_array_equal(offsets, [0, 2, 2, 2, 4])
    np.testing.assert_array_equal(perm, [3, 1, 2, 0])  # by minor key within each group


def test_already_ordered_rows_keep_their_order():
    group = np.repeat(np.arange(4, dtype=np.int64), 100)
    major = np.tile(np.repeat(np.arange(10, dtype=np.int64), 10), 4)
    perm, _ = grouped(group, major, np.zeros(400, np.int64))
    np.testing.assert_array_equal(perm, np.arange(400))


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.int32])
def test_take_gathers(dtype):
    rng = np.random.default_rng(1)
    src = rng.integers(-50, 50, 1_000).astype(dtype)
    perm = rng.permutation(1_000).astype(np.int64)
    out = np.empty(1_000, dtype)
    take(src, perm, out)
    np.testing.assert_array_equal(out, src[perm])
