"""Fixed-width columns to 32 bits and back, losslessly, for the partition's scratch files
(engine.io.narrowing): integers and times as unsigned offsets from their least value, amounts
as whole cents. Each ``to_*`` kernel says whether every valid value round-trips; where one does
not, the caller keeps the column as it is.

``valid``: one flag a row, or of length 0 where every row is valid. Rows not valid are written as 0.
"""

from __future__ import annotations

import math

import numpy as np

from segmint.kernels._jit import serial

__all__ = ["to_offsets", "from_offsets", "to_cents", "from_cents"]

_U32_MAX = 0xFFFFFFFF
_I32_MAX = 0x7FFFFFFF
_NEGATIVE_ZERO = -0x80000000


@serial
def to_offsets(values, valid, scale, out):
    """``out[i] = (values[i] - base) / scale`` as uint32, base the least valid value. Returns (ok, base): ok
    false where a valid value's distance from the base is not a multiple of ``scale`` or past 2^32 - 1 steps."""
    every = valid.shape[0] == 0
    lo = np.iinfo(np.int64).max
    hi = np.iinfo(np.int64).min
    for i in range(values.shape[0]):
        if every or valid[i]:
            lo = min(lo, values[i])
            hi = max(hi, values[i])
    if hi < lo:   # no valid value
        lo = hi = np.int64(0)
    # The span as unsigned: exact for any hi >= lo, where hi - lo in int64 can overflow.
    if np.uint64(hi) - np.uint64(lo) > np.uint64(_U32_MAX) * np.uint64(scale):
        return False, np.int64(0)
    # An integer division by a scale known only now costs tens of cycles a value: the quotient is taken in
    # floating point and proven by the multiplication back (exact: the span is below 2^32 * scale < 2^63).
    per = 1.0 / scale
    ok = True
    for i in range(values.shape[0]):   # no early exit, as to_cents
        d = values[i] - lo if every or valid[i] else np.int64(0)
        q = np.int64(np.rint(d * per)) if scale != 1 else d
        ok &= q * scale == d
        out[i] = np.uint32(q)
    return ok, lo


@serial
def from_offsets(offsets, base, scale, out):
    """The inverse of ``to_offsets``."""
    for i in range(offsets.shape[0]):
        out[i] = base + np.int64(offsets[i]) * scale


@serial
def to_cents(values, valid, out):
    """``out[i]``: the float64 ``values[i]`` in whole cents (int32; -0.0 as the least int32, which no amount
    takes). Returns whether every valid value is ``from_cents``' result bit for bit (no NaN, no fraction of a
    cent, none past +-(2^31 - 1) cents)."""
    every = valid.shape[0] == 0
    ok = True
    # No early exit: the loop vectorises (its division is most of its time), and a file's amounts nearly always
    # round-trip.
    for i in range(values.shape[0]):
        x = values[i] if every or valid[i] else 0.0
        c = np.rint(x * 100.0)
        within = abs(c) <= _I32_MAX   # false for NaN too
        cents = np.int32(c) if within else np.int32(0)
        ok &= within and np.float64(cents) / 100.0 == x
        out[i] = _NEGATIVE_ZERO if x == 0.0 and math.copysign(1.0, x) < 0.0 else cents
    return ok


@serial
def from_cents(cents, out):
    """The inverse of ``to_cents``."""
    for i in range(cents.shape[0]):
        out[i] = -0.0 if cents[i] == _NEGATIVE_ZERO else np.float64(cents[i]) / 100.0
