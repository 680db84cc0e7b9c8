"""Stable 64-bit hashes of customer ids: the same value on every machine and library version.

Integers use splitmix64's finaliser; strings use 64-bit FNV-1a over their
UTF-8 bytes (read from Arrow's offsets and data buffers). Both are mixed
with a seed, so different purposes (buckets, samples) get independent hashes.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial

__all__ = ["hash_int64", "hash_utf8", "mix64", "hash_buckets"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@parallel
def hash_int64(values, seed, out):
    """out[i] = splitmix64(values[i] + seed * golden); values int64[n], out uint64[n]."""
    for i in prange(values.shape[0]):
        out[i] = mix64(np.uint64(values[i]) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))


@parallel
def hash_utf8(offsets, data, seed, out):
    """out[i] = splitmix64(FNV-1a(bytes of string i) ^ seed); offsets int64[n+1], data uint8[m]."""
    for i in prange(offsets.shape[0] - 1):
        h = _FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * _FNV_PRIME
        out[i] = mix64(h ^ np.uint64(seed))



@parallel
def hash_buckets(hashes, shift, buckets, out):
    """out[i] = (hashes[i] >> shift) % buckets: the bucket of a hash's slot; out int32[n]."""
    for i in prange(hashes.shape[0]):
        out[i] = np.int32((hashes[i] >> np.uint64(shift)) % np.uint64(buckets))


@serial
def mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
