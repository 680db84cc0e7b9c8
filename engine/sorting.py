"""``np.sort`` of float64 values, by whichever of two sorts with that result is faster on this machine.

NumPy sorts float64 with x86-simd-sort, whose AVX-512 path is several times slower than its AVX2 path on
AMD's Zen 4, where the compress-store it runs on every vector is microcoded (numpy/numpy#32690,
numpy/x86-simd-sort#6): 909,090 random doubles took 47 ms, and 8 ms with NumPy's AVX-512 turned off
(NPY_DISABLE_CPU_FEATURES), on the development machine (an AMD EPYC). A radix sort (kernels/radix.py),
which needs no AVX-512, took 10-22 ms there. Zen 4 is common among cloud machines (AWS' m7a/c7a/r7a, for
one).

Both give the same bits: values equal as floats are equal as bits but for the zeros, and an array holding
both signs of zero (or a NaN or an infinity) goes to NumPy. So which one runs changes the time alone, and it
is measured once per process (``_radix_is_faster``), not guessed from the CPU's name: a NumPy that stops
using AVX-512 there is then used again.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from segmint.kernels.radix import radix_sort

__all__ = ["sorted_floats"]

# Below this many values NumPy's sort is used whichever is faster: the radix sort's fixed cost (six tables of 2,048
# counts) is paid back only beyond about 1,000 values on Zen 4, and a segment's few values are little time either way.
_SMALL = 4096
# The radix sort is chosen where it took at most this share of NumPy's time on the same values.
_CLEARLY = 0.8
# The trial: as many values as a small segment, uniform doubles, which take all six passes (the radix sort's worst
# case, so the choice leans to NumPy); a few milliseconds in all.
_TRIAL = 1 << 16
_lock = threading.Lock()
_radix_faster: bool | None = None   # measured on first use


def sorted_floats(values: np.ndarray) -> np.ndarray:
    """``np.sort(values)``, bit for bit (a new array); the radix sort only ever for float64 values, and where they
    hold no NaN or infinity (the profile's are finite)."""
    if values.dtype != np.float64 or values.size < _SMALL or not _radix_is_faster():
        return np.sort(values)
    return _radix_sorted(values)


def _radix_sorted(values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values)
    out = np.empty_like(values)
    if radix_sort(values, out, np.empty(values.size, np.uint64)):
        return out
    return np.sort(values)   # both signs of zero, a NaN or an infinity: NumPy's order of them


def _radix_is_faster() -> bool:
    """Whether the radix sort took clearly less time than NumPy's on the same random doubles, measured on first use
    (best of three each: a few milliseconds)."""
    global _radix_faster
    if _radix_faster is not None:
        return _radix_faster
    with _lock:
        if _radix_faster is None:
            trial = np.random.default_rng(0).random(_TRIAL) * 1000.0
            _radix_sorted(trial[:_SMALL])   # loaded (or compiled) before it is timed
            _radix_faster = _best_time(_radix_sorted, trial) <= _CLEARLY * _best_time(np.sort, trial)
        return _radix_faster


def _best_time(sort, values: np.ndarray) -> float:
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        sort(values)
        best = min(best, time.perf_counter() - start)
    return best
