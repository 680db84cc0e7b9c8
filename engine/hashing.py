"""Stable hashes of customer ids (never Polars' hash, whose values change between releases).

``customer_hash`` feeds bucket assignment and every sample segmint draws, so
that a sample is a set of customers, not of row positions: the same customers
are chosen whether the data is processed in memory or bucket by bucket.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from segmint.kernels.hashing import hash_int64, hash_utf8

__all__ = ["customer_hash", "int64_hash", "bottom_k"]


def customer_hash(ids: pl.Series, seed: int) -> np.ndarray:
    """uint64 hash of each id (integer ids by value, anything else by its UTF-8 text)."""
    if ids.dtype == pl.UInt64:  # by value: the bits of the value mod 2^64
        return int64_hash(ids.to_numpy().view(np.int64), seed)
    if ids.dtype.is_integer():
        return int64_hash(ids.cast(pl.Int64).to_numpy(), seed)
    out = np.empty(ids.len(), np.uint64)
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - pa.compute below

    arr = pa.array(ids.cast(pl.String).to_arrow()).cast(pa.large_string())
    if arr.null_count:
        arr = pa.compute.fill_null(arr, "")
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    hash_utf8(offsets, data, seed, out)
    return out


def int64_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """uint64 hash of each int64 id: ``customer_hash`` of integer ids, from their values."""
    out = np.empty(keys.size, np.uint64)
    hash_int64(keys, seed, out)
    return out


def bottom_k(hashes: np.ndarray, k: int) -> np.ndarray:
    """Sorted positions of the k smallest hashes (all positions if there are no more than k).

    Ties between equal hashes are broken by position, so the choice is exact.
    """
    if hashes.size <= k:
        return np.arange(hashes.size)
    # O(n): every position below the k-th smallest hash, then the first positions equal to it.
    kth = np.partition(hashes, k - 1)[k - 1]
    below = np.flatnonzero(hashes < kth)
    return np.sort(np.concatenate([below, np.flatnonzero(hashes == kth)[: k - below.size]]))
