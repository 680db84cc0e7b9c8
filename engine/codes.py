"""Dense codes for the values of a column across the chunks of a bucket (kernels/codes.py).

``IntCodes`` and ``TextCodes`` give every distinct value a code 0, 1, 2, ... in first-seen
order, chunk after chunk, growing their hash table so it stays at most half full (dense integer
keys are looked up in a table indexed by key instead, while they stay dense); ``TextIds`` only stores
strings, a string equal to the one before it taking its id (text order ids). ``ranks()``
then gives each code the rank of its value in value order (strings by their UTF-8 bytes, as
Polars and Arrow sort them), which is how customers and categories are ordered in every
output, whatever order the chunks came in (text order ids are ranked within each customer,
by kernels.lines.customer_pass).
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmint.engine.io import arrow_numpy
from segmint.kernels.codes import (VIEW_SLOTS, dictionary_codes, direct_codes, int_codes, key_range, rehash,
                                   text_codes, text_ids, view_indices)

__all__ = ["IntCodes", "TextCodes", "TextIds", "text_buffers", "inverse", "SLICE", "DENSE_SPAN", "DENSE_SPAN_PER_CODE"]

# Room for codes at first; grown by doubling. Small: scoring one customer's history makes four sets of codes,
# and filling 4,096 slots of each took more of the call than coding its rows.
_START = 1 << 6
# Keys coded per kernel call: a table sized for the codes so far and one slice (callers slicing their own
# keys to keep temporaries small use it too).
SLICE = 1 << 16
# IntCodes reads codes from a table indexed by key while the keys span at most the larger of these: 16 MB of
# table, or 24 bytes per code (the hash table's size when half full: 8 bytes of key and 4 of code per slot).
DENSE_SPAN = 1 << 22
DENSE_SPAN_PER_CODE = 6
_KEY_START, _KEY_END = -(1 << 63), 1 << 63


class IntCodes:
    """Codes for int64 keys.

    While the keys seen span few values for their number (dense integer ids, as a database's sequence
    gives), a key's code is read from a table indexed by key - low: one read where a hash probe took several
    (bench M's 20.4 M lines of 909 k customer ids: 0.45-0.49 -> 0.10-0.15 s). Once they span more than DENSE_SPAN and
    DENSE_SPAN_PER_CODE per code, the codes move to the hash table for good. Either way the codes are the
    first-seen ones."""

    def __init__(self) -> None:
        self.n = 0
        self._code_keys = np.zeros(_START, np.int64)
        self._low = 0
        self._direct: np.ndarray | None = np.zeros(0, np.int32)   # None: the hash table holds the codes
        self._slot_keys = np.zeros(0, np.int64)
        self._slot_codes = np.zeros(0, np.int32)

    def encode(self, keys: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """int32 code of each key (-1 where missing).

        A slice of keys at a time: the table is sized for the codes so far and a slice, not for every key
        given (a table for 10 M keys of a few hundred values took longer to fill with -1 than the coding)."""
        out = np.empty(keys.size, np.int32)
        for lo in range(0, keys.size, SLICE):
            hi = min(keys.size, lo + SLICE)
            part, gone = keys[lo:hi], missing[lo:hi]
            self._reserve(hi - lo)
            if self._direct is not None and self._covered(part, gone):
                self.n = int(direct_codes(part, gone, self._low, self._direct, self._code_keys, self.n, out[lo:hi]))
            else:
                self.n = int(int_codes(part, gone, self._slot_keys, self._slot_codes, self._code_keys, self.n,
                                       out[lo:hi]))
        return out

    def values(self) -> np.ndarray:
        """The key of each code."""
        return self._code_keys[: self.n]

    def order(self) -> np.ndarray:
        """The codes (int64) in their keys' order (ascending)."""
        if self._direct is not None:
            # The table is indexed by key and each key has one code: read in index order, its codes are in key
            # order, in one pass where a sort took log n (bench M's 909 k customers: 0.047 -> 0.005 s).
            return self._direct[self._direct >= 0].astype(np.int64)
        return np.argsort(self.values(), kind="stable")

    def ranks(self) -> np.ndarray:
        """int32 rank of each code's key among all keys (ascending)."""
        return inverse(self.order())

    def _reserve(self, more: int) -> None:
        if self._code_keys.size < self.n + more:
            self._code_keys = _grown(self._code_keys, self.n + more, self.n)
        if self._direct is None and self._slot_codes.size < 2 * (self.n + more):
            self._hash_table(more)

    def _covered(self, keys: np.ndarray, missing: np.ndarray) -> bool:
        """Whether the direct table covers ``keys``, grown if need be; False once it would be too sparse (the
        codes are then in the hash table)."""
        found, smallest, largest = (int(v) for v in key_range(keys, missing))
        size = self._direct.size
        low, high = self._low, self._low + size
        if not found or (size and low <= smallest and largest < high):
            return True
        low_, high_ = (min(low, smallest), max(high, largest + 1)) if size else (smallest, largest + 1)
        limit = max(DENSE_SPAN, DENSE_SPAN_PER_CODE * (self.n + keys.size))
        if high_ - low_ > limit:
            self._direct = None
            self._hash_table(keys.size)
            return False
        # Room on the side that grew, as ids arrive in rising or falling runs: the table doubles (within the
        # limit and int64), so a run of ids costs a few copies of it, not one per slice.
        wide = max(high_ - low_, min(2 * size, limit))
        new_low, new_high = ((low_, min(low_ + wide, _KEY_END)) if high_ > high or not size
                             else (max(high_ - wide, _KEY_START), high_))
        table = np.full(new_high - new_low, -1, np.int32)
        if size:
            table[low - new_low: high - new_low] = self._direct
        self._low, self._direct = new_low, table
        return True

    def _hash_table(self, more: int) -> None:
        size = _power_of_two(2 * (self.n + more))
        self._slot_keys = np.zeros(size, np.int64)
        self._slot_codes = np.full(size, -1, np.int32)
        rehash(self._code_keys, self.n, self._slot_keys, self._slot_codes, True)


class _Strings:
    """Strings kept by their offsets and bytes, the string of code (or id) c the c-th."""

    def __init__(self) -> None:
        self.n = 0
        self._offsets = np.zeros(_START + 1, np.int64)
        self._data = np.zeros(_START * 16, np.uint8)

    def values(self) -> pa.LargeStringArray:
        """The string of each code."""
        offsets, data = self.buffers()
        return pa.Array.from_buffers(pa.large_string(), self.n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """Offsets (int64[n + 1]) and bytes of every code's string: code c's are bytes[offsets[c]:offsets[c + 1]]."""
        offsets = self._offsets[: self.n + 1]
        return offsets, self._data[: offsets[-1]]

    def _reserve_strings(self, more: int, more_bytes: int) -> None:
        """Room for ``more`` strings of ``more_bytes`` bytes in all."""
        used = int(self._offsets[self.n])
        if self._offsets.size < self.n + more + 1:
            self._offsets = _grown(self._offsets, self.n + more + 1, self.n + 1)
        if self._data.size < used + more_bytes:
            self._data = _grown(self._data, used + more_bytes, used)


class TextCodes(_Strings):
    """Codes for strings, compared byte for byte."""

    def __init__(self) -> None:
        super().__init__()
        self._slot_hashes = np.zeros(_START, np.uint64)
        self._slot_codes = np.full(_START, -1, np.int32)
        self._code_hashes = np.zeros(_START, np.uint64)

    def encode(self, strings: pa.Array) -> np.ndarray:
        """int32 code of each string of an Arrow string-like array (-1 where null); a slice of strings at
        a time, as ``IntCodes.encode``. String views of few short values (Polars' text of channels and
        categories) are coded by their distinct values, each once (``_by_views``)."""
        coded = self._by_views(strings)
        if coded is not None:
            return coded
        offsets, data, missing = text_buffers(strings)
        out = np.empty(missing.size, np.int32)
        for lo in range(0, missing.size, SLICE):
            hi = min(missing.size, lo + SLICE)
            self._reserve(hi - lo, int(offsets[hi] - offsets[lo]))
            self.n = int(text_codes(offsets[lo:hi + 1], data, missing[lo:hi], self._slot_hashes, self._slot_codes,
                                    self._code_hashes, self._offsets, self._data, self.n, out[lo:hi]))
        return out

    def order(self) -> np.ndarray:
        """The codes (int64) in their strings' order (by UTF-8 bytes)."""
        return arrow_numpy.values(pc.array_sort_indices(self.values())).astype(np.int64)

    def _by_views(self, strings: pa.Array) -> np.ndarray | None:
        """Codes of a string_view array's rows from its distinct strings' (view_indices), or None where its
        strings are not all in their views or are too many: the views' conversion to offsets and bytes copied
        every string, and coding each of them took 50 ns a row (scoring 100,000 customers' 2.2 M lines: 0.1 s
        a column)."""
        if (isinstance(strings, pa.ChunkedArray) or not pa.types.is_string_view(strings.type) or not len(strings)
                or sys.byteorder != "little"):
            return None
        n = len(strings)
        views = np.frombuffer(strings.buffers()[1], np.uint64, 2 * n, 16 * strings.offset)
        missing = arrow_numpy.flags(strings.is_null()) if strings.null_count else np.zeros(n, bool)
        distinct, indices = np.empty(VIEW_SLOTS, np.uint64), np.empty(n, np.int32)
        found = int(view_indices(views, missing, np.empty(2 * VIEW_SLOTS, np.uint64), np.full(VIEW_SLOTS, -1, np.int32),
                                 distinct, indices))
        if found < 0:
            return None
        # Each distinct string's bytes from its key: the length, then the bytes.
        keys = distinct[: 2 * found].view(np.uint8).reshape(found, 16)
        lengths = keys[:, :4].copy().view(np.int32).ravel().astype(np.int64)
        data = keys[:, 4:][np.arange(12) < lengths[:, None]]
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        # Read-only, as Arrow's buffers are where ``encode`` codes strings read from files or one customer's frame:
        # writable ones took Numba a specialization of ``text_codes`` of their own, loaded by the first call of
        # many rows (0.011 s in a profile of Model.predict of 100,000 customers).
        offsets.flags.writeable = data.flags.writeable = False
        values = pa.Array.from_buffers(pa.large_string(), found, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        # Each row's code in place of its number (a gather into a new array: 19 ms of scoring 100,000 customers).
        dictionary_codes(indices, missing if strings.null_count else np.zeros(0, bool), self.encode(values), indices)
        return indices

    def ranks(self) -> np.ndarray:
        """int32 rank of each code's string among all strings (by UTF-8 bytes)."""
        return inverse(self.order())

    def _reserve(self, more: int, more_bytes: int) -> None:
        if self._code_hashes.size < self.n + more:
            self._code_hashes = _grown(self._code_hashes, self.n + more, self.n)
        self._reserve_strings(more, more_bytes)
        if self._slot_codes.size < 2 * (self.n + more):
            size = _power_of_two(2 * (self.n + more))
            self._slot_hashes = np.zeros(size, np.uint64)
            self._slot_codes = np.full(size, -1, np.int32)
            rehash(self._code_hashes, self.n, self._slot_hashes, self._slot_codes, False)


class TextIds(_Strings):
    """Ids for text order ids: a string equal to the one stored last (the row before, as an order's lines come)
    takes its id, any other is stored under a new one. Equal strings apart from each other get two ids, so what
    reads them compares their bytes: customer_pass ranks a customer's order ids by their bytes, and
    ``features.build`` finds where an order's lines end by them. A code per distinct string (``TextCodes``) kept
    a hash table of every order id of the bucket and probed it for every row: bench M with its 9 M order ids as
    text, the table grew to 400 MB and the coding took 2.2-2.5 s of the mapping thread, with 0.5-0.8 s more
    growing the table."""

    def encode(self, strings: pa.Array) -> np.ndarray:
        """int32 id of each string of an Arrow string-like array (-1 where null)."""
        offsets, data, missing = text_buffers(strings)
        self._reserve_strings(missing.size, int(offsets[-1] - offsets[0]))
        out = np.empty(missing.size, np.int32)
        self.n = int(text_ids(offsets, data, missing, self._offsets, self._data, self.n, out))
        return out


def text_buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (int64), bytes (uint8) and null mask of a string-like Arrow array, without copying
    the bytes when it already is a large_string array."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if strings.type != pa.large_string():
        strings = strings.cast(pa.large_string())
    _, offsets_buf, data_buf = strings.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[strings.offset: strings.offset + len(strings) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    missing = arrow_numpy.flags(strings.is_null()) if strings.null_count else np.zeros(len(strings), bool)
    return offsets, data, missing


def _grown(array: np.ndarray, need: int, keep: int) -> np.ndarray:
    out = np.zeros(max(need, 2 * array.size), array.dtype)
    out[:keep] = array[:keep]
    return out


def _power_of_two(n: int) -> int:
    return 1 << max(int(n - 1).bit_length(), 4)


def inverse(order: np.ndarray) -> np.ndarray:
    """The rank (int32) of each code, from the codes in rank order."""
    ranks = np.empty(order.size, np.int32)
    ranks[order] = np.arange(order.size, dtype=np.int32)
    return ranks
