"""A radix sort of finite float64 values, with ``np.sort``'s result.

Each value's bits become an unsigned key in the same order (the sign bit set on positives, every
bit flipped on negatives), and the keys are sorted by six 11-bit digits, least significant first
(LSD radix: each pass a stable counting sort by one digit). A digit every key shares is skipped:
values of few significant bits (counts, whole days, whole amounts) take two or three passes, values
such as cents (not exact in binary) all six. Values equal as floats have the same bits, but for the
two zeros: an array holding both is left to NumPy, whose order of -0.0 and +0.0 is its own, as is
one holding a NaN (x86's NaNs have the sign bit set, and would come first) or an infinity.
"""

from __future__ import annotations

import numpy as np

from segmint.kernels._jit import serial

__all__ = ["radix_sort"]

_BITS = 11
_PASSES = 6     # 66 bits of digits cover the 64 of a key
_MASK = (1 << _BITS) - 1
_SIGN = np.uint64(1 << 63)
_EXPONENT = np.uint64(0x7FF << 52)   # all ones: an infinity or a NaN


@serial
def radix_sort(values, out, scratch):
    """out = the values ascending, unless they hold both -0.0 and +0.0, a NaN or an infinity (then returns False,
    out unset).

    Parameters
    ----------
    values : float64[n]     # IN  contiguous
    out : float64[n]        # OUT contiguous
    scratch : uint64[n]     # TMP contiguous
    Returns bool: whether ``out`` was written.
    """
    n = values.shape[0]
    bits = values.view(np.uint64)
    counts = np.zeros((_PASSES, _MASK + 1), np.int64)
    negative_zero = False
    positive_zero = False
    finite = True
    for i in range(n):
        u = bits[i]
        negative_zero |= u == _SIGN
        positive_zero |= u == 0
        finite &= (u & _EXPONENT) != _EXPONENT
        key = ~u if u & _SIGN else u | _SIGN
        scratch[i] = key
        for p in range(_PASSES):
            counts[p, (key >> np.uint64(_BITS * p)) & np.uint64(_MASK)] += 1
    if (negative_zero and positive_zero) or not finite:
        return False
    keys = out.view(np.uint64)   # the passes alternate between scratch and out's memory
    src = scratch
    dst = keys
    starts = np.empty(_MASK + 1, np.int64)
    for p in range(_PASSES):
        shift = np.uint64(_BITS * p)
        if n == 0 or counts[p, (src[0] >> shift) & np.uint64(_MASK)] == n:
            continue   # every key has this digit: the pass would move nothing
        total = 0
        for d in range(_MASK + 1):
            starts[d] = total
            total += counts[p, d]
        for i in range(n):
            key = src[i]
            d = (key >> shift) & np.uint64(_MASK)
            dst[starts[d]] = key
            starts[d] += 1
        src, dst = dst, src
    for i in range(n):
        key = src[i]
        keys[i] = key & ~_SIGN if key & _SIGN else ~key
    return True
