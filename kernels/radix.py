"""A radix sort of finite float64 values, with ``np.sort``'s result, and order statistics by the same keys.

Each value's bits become an unsigned key in the same order (the sign bit set on positives, every
bit flipped on negatives), and the keys are sorted by six 11-bit digits, least significant first
(LSD radix: each pass a stable counting sort by one digit). A digit every key shares is skipped:
values of few significant bits (counts, whole days, whole amounts) take two or three passes, values
such as cents (not exact in binary) all six. Values equal as floats have the same bits, but for the
two zeros: an array holding both is left to NumPy, whose order of -0.0 and +0.0 is its own, as is
one holding a NaN (x86's NaNs have the sign bit set, and would come first) or an infinity.

Order statistics (``count_top_digits``, ``keys_with_top_digits``, ``value_of_rank``) read the same keys of
float64 values (an integer's of its float64: small counts then spread over many digits, not one), 16 bits a
digit, most significant first: the top digit of every value counted, the keys of the few digits that
hold the ranks asked for gathered, and each rank narrowed down among them a digit at a time. No sort, and no
copy of the values.
"""

from __future__ import annotations

import numpy as np

from segmint.kernels._jit import serial

__all__ = ["radix_sort", "count_top_digits", "keys_with_top_digits", "value_of_rank", "DIGITS"]

_BITS = 11
_PASSES = 6     # 66 bits of digits cover the 64 of a key
_MASK = (1 << _BITS) - 1
_SIGN = np.uint64(1 << 63)
_EXPONENT = np.uint64(0x7FF << 52)   # all ones: an infinity or a NaN
_FRACTION = np.uint64((1 << 52) - 1)
# Order statistics: 16-bit digits, the top one (of 65,536 values) first.
_DIGIT_BITS = 16
DIGITS = 1 << _DIGIT_BITS
_DIGIT_MASK = np.uint64(DIGITS - 1)
_TOP = np.uint64(64 - _DIGIT_BITS)


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
        key = _key(u)
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
        keys[i] = _bits(src[i])
    return True


@serial
def count_top_digits(values, counts):
    """Add to counts[d] how many values have d as their key's top digit; returns how many are NaN (counted in
    no digit).

    Parameters
    ----------
    values : float64[n] or int64[n]   # IN     an integer as its float64 (as astype converts it)
    counts : int64[DIGITS]            # IN/OUT
    """
    value = np.empty(1, np.float64)
    bits = value.view(np.uint64)
    nan = 0
    for i in range(values.shape[0]):
        value[0] = values[i]
        u = bits[0]
        if (u & _EXPONENT) == _EXPONENT and (u & _FRACTION) != 0:
            nan += 1
        else:
            counts[_key(u) >> _TOP] += 1
    return nan


@serial
def keys_with_top_digits(values, wanted, keys, starts):
    """Write the key of each value (no NaN among them) whose top digit is ``wanted`` into that digit's part of
    ``keys``, at ``starts[digit]``, which moves on past it: each digit's keys one slice, in the values' order.

    Parameters
    ----------
    values                    # IN     as count_top_digits'
    wanted : bool[DIGITS]     # IN
    keys : uint64[m]          # OUT    room for every wanted value
    starts : int64[DIGITS]    # IN/OUT where each wanted digit's next key goes
    """
    value = np.empty(1, np.float64)
    bits = value.view(np.uint64)
    for i in range(values.shape[0]):
        value[0] = values[i]
        key = _key(bits[0])
        d = key >> _TOP
        if wanted[d]:
            keys[starts[d]] = key
            starts[d] += 1


@serial
def value_of_rank(keys, rank, scratch):
    """The float64 value whose key has ``rank`` (0 the smallest) among ``keys``, which are left as they are: a
    digit at a time, most significant first, the keys with the rank's digit kept (in ``scratch``), until they are
    all one key.

    Parameters
    ----------
    keys : uint64[m]          # IN     m > rank
    rank : int                # IN
    scratch : uint64[m]       # TMP
    """
    counts = np.empty(DIGITS, np.int64)
    value = np.empty(1, np.uint64)
    m = keys.shape[0]
    first = True    # reading ``keys`` until a level keeps fewer than all of them (in ``scratch``)
    for level in range(64 // _DIGIT_BITS):
        shift = np.uint64(64 - _DIGIT_BITS * (level + 1))
        counts[:] = 0
        low = keys[0] if first else scratch[0]
        high = low
        for i in range(m):
            key = keys[i] if first else scratch[i]
            counts[(key >> shift) & _DIGIT_MASK] += 1
            low = min(low, key)
            high = max(high, key)
        if low == high:
            value[0] = _bits(low)
            return value.view(np.float64)[0]
        d = 0
        while rank >= counts[d]:
            rank -= counts[d]
            d += 1
        if counts[d] == m:
            continue   # every key has this digit
        kept = 0
        for i in range(m):
            key = keys[i] if first else scratch[i]
            if (key >> shift) & _DIGIT_MASK == d:
                scratch[kept] = key
                kept += 1
        m = kept
        first = False
    value[0] = _bits(keys[0] if first else scratch[0])   # unreached: four digits tell any two keys apart
    return value.view(np.float64)[0]


@serial
def _key(u):
    """A float64's key, ascending as the values: its bits with the sign bit set (positives) or every bit
    flipped (negatives)."""
    return ~u if u & _SIGN else u | _SIGN


@serial
def _bits(key):
    """The float64 bits of a key (``_key``'s inverse)."""
    return key & ~_SIGN if key & _SIGN else ~key
