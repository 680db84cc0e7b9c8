import platform

import numpy as np
import pytest

from numba import njit

from segmint.kernels.prefetch import prefetch


@njit   # not cached: Numba cannot show the assembly of cached code
def _gather(values, rows, ahead):
    total = 0.0
    for i in range(rows.shape[0]):
        prefetch(values, rows[i] + ahead)   # a hint: any index, in bounds or not
        total += values[rows[i]]
    return total


@pytest.mark.parametrize("ahead", [0, 1, -3, 10**9])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
def test_a_prefetch_never_changes_results_nor_faults(ahead, index_type):
    rng = np.random.default_rng(0)
    records = np.zeros(5000, np.dtype([("ts", np.int64), ("amount", np.float64), ("flag", np.uint8)], align=True))
    records["amount"] = rng.normal(size=records.size)
    rows = rng.integers(0, records.size, 20_000).astype(index_type)
    want = 0.0
    for r in rows:
        want += records["amount"][r]
    assert _gather(records["amount"], rows, ahead) == want   # a strided field view
    assert _gather(np.ascontiguousarray(records["amount"]), rows, ahead) == want


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction name")
def test_the_hint_is_emitted_as_a_prefetch_instruction():
    _gather(np.zeros(4), np.zeros(4, np.int64), 1)
    assert all("prefetcht0" in asm for asm in _gather.inspect_asm().values())


def test_a_prefetch_takes_only_a_1d_array_and_an_integer():
    from numba.core.errors import TypingError

    @njit
    def two_d(values):
        prefetch(values, 1)

    @njit
    def float_index(values):
        prefetch(values, 1.5)

    with pytest.raises(TypingError):
        two_d(np.zeros((3, 3)))
    with pytest.raises(TypingError):
        float_index(np.zeros(3))
