"""Dense codes for keys, in first-seen order: open-addressing hash tables with linear probing.

``int_codes`` gives each distinct int64 key a code 0, 1, 2, ... as it first appears;
``direct_codes`` gives the same codes from a table indexed by key - low, for keys that span a
range not much wider than their number (``key_range`` measures it).
``text_codes`` does the same for strings (Arrow offsets and bytes) and compares the bytes
of every candidate it meets, so two strings share a code only when they are equal: a hash
only says where to look. The caller keeps each table at most half full (engine.codes grows
it between chunks), so probes stay short; ``rehash`` fills a larger table from the codes.
``text_ids`` only stores strings, for text order ids: a string equal to the one before it takes its id.
"""

from __future__ import annotations

import numpy as np

from segmint.kernels._jit import serial
from segmint.kernels.hashing import mix64
from segmint.kernels.prefetch import prefetch

__all__ = ["int_codes", "direct_codes", "key_range", "text_codes", "text_ids", "rehash", "text_hash",
           "dictionary_codes"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
# Keys ahead whose slots int_codes and text_codes start loading: a bucket's table of scattered ids is larger than
# the cache (345 k codes: 12 MB), and each probe waited on memory (7.7 M keys: 0.10-0.12 -> 0.089 s; 32 ahead no
# better).
_PREFETCH_AHEAD = 16


@serial
def int_codes(keys, missing, slot_keys, slot_codes, code_keys, n_codes, out):
    """Code of each key; returns the number of codes after the call.

    Parameters
    ----------
    keys : int64[n]                  # IN     keys
    missing : bool[n]                # IN     True: no key (code -1)
    slot_keys : int64[capacity]      # IN/OUT the key held by each slot (capacity a power of two)
    slot_codes : int32[capacity]     # IN/OUT the code held by each slot, -1 when empty
    code_keys : int64[>= n_codes+n]  # IN/OUT the key of each code
    n_codes : int                    # IN     codes given so far
    out : int32[n]                   # OUT    the code of each key
    """
    mask = np.uint64(slot_codes.shape[0] - 1)
    n = keys.shape[0]
    for i in range(n):
        if i + _PREFETCH_AHEAD < n:
            later = np.int64(mix64(np.uint64(keys[i + _PREFETCH_AHEAD])) & mask)
            prefetch(slot_codes, later)
            prefetch(slot_keys, later)
        if missing[i]:
            out[i] = -1
            continue
        key = keys[i]
        slot = np.int64(mix64(np.uint64(key)) & mask)
        while True:
            code = slot_codes[slot]
            if code < 0:
                slot_keys[slot] = key
                slot_codes[slot] = n_codes
                code_keys[n_codes] = key
                out[i] = n_codes
                n_codes += 1
                break
            if slot_keys[slot] == key:
                out[i] = code
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return n_codes


@serial
def direct_codes(keys, missing, low, table, code_keys, n_codes, out):
    """``int_codes`` for keys in [low, low + table size): the code of key k is held at table[k - low].

    Parameters
    ----------
    keys : int64[n]                  # IN     keys, each missing or within the table's range
    missing : bool[n]                # IN     True: no key (code -1)
    low : int64                      # IN     the key of table[0]
    table : int32[span]              # IN/OUT the code of each key of the range, -1 when not seen yet
    code_keys : int64[>= n_codes+n]  # IN/OUT the key of each code
    n_codes : int                    # IN     codes given so far
    out : int32[n]                   # OUT    the code of each key
    """
    for i in range(keys.shape[0]):
        if missing[i]:
            out[i] = -1
            continue
        key = keys[i]
        code = table[key - low]
        if code < 0:
            code = n_codes
            table[key - low] = code
            code_keys[code] = key
            n_codes += 1
        out[i] = code
    return n_codes


@serial
def key_range(keys, missing):
    """(whether any key is present, the smallest, the largest) among the keys not missing.

    Parameters
    ----------
    keys : int64[n]      # IN  keys
    missing : bool[n]    # IN  True: no key
    Returns bool, int64, int64 (the two 0 when no key is present)
    """
    found = False
    smallest = np.int64(0)
    largest = np.int64(0)
    for i in range(keys.shape[0]):
        if missing[i]:
            continue
        key = keys[i]
        if not found:
            found = True
            smallest = key
            largest = key
        elif key < smallest:
            smallest = key
        elif key > largest:
            largest = key
    return found, smallest, largest


@serial
def rehash(code_values, n_codes, slot_values, slot_codes, mixed):
    """Fill an empty table (slot_codes all -1) with the first ``n_codes`` codes, as the coding kernels
    place them: an integer key's slot is its mix64 (``mixed``), a string's its hash as it is."""
    mask = np.uint64(slot_codes.shape[0] - 1)
    for code in range(n_codes):
        value = code_values[code]
        h = mix64(np.uint64(value)) if mixed else np.uint64(value)
        slot = np.int64(h & mask)
        while slot_codes[slot] >= 0:
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
        slot_values[slot] = value
        slot_codes[slot] = code


@serial
def text_codes(offsets, data, missing, slot_hashes, slot_codes, code_hashes, code_offsets, code_data, n_codes, out):
    """Code of each string; returns the number of codes after the call (their bytes end at
    ``code_offsets[n_codes]``).

    Parameters
    ----------
    offsets : int64[n + 1]              # IN     Arrow offsets of the strings
    data : uint8[m]                     # IN     their bytes
    missing : bool[n]                   # IN     True: no string (code -1)
    slot_hashes : uint64[capacity]      # IN/OUT the hash of the string in each slot
    slot_codes : int32[capacity]        # IN/OUT the code held by each slot, -1 when empty
    code_hashes : uint64[>= n_codes+n]  # IN/OUT the hash of each code's string
    code_offsets : int64[>= n_codes+n+1]  # IN/OUT each code's bytes are code_data[code_offsets[c]:code_offsets[c+1]]
    code_data : uint8[>= used + m]      # IN/OUT the bytes of every code's string
    n_codes : int                       # IN     codes given so far
    out : int32[n]                      # OUT    the code of each string
    """
    mask = np.uint64(slot_codes.shape[0] - 1)
    n = offsets.shape[0] - 1
    # The strings _PREFETCH_AHEAD on: whether each repeats the string before it (then its code is the one before:
    # no hash, no probe), else its hash, computed once, its slot loaded meanwhile. Measured on text order ids
    # (bench/README.md, thirty-fourth round), which text_ids codes since; here for a customer's lines or a run of
    # one channel or category that come together, as many exports write them.
    ahead_hash = np.zeros(_PREFETCH_AHEAD, np.uint64)
    ahead_same = np.zeros(_PREFETCH_AHEAD, np.bool_)
    for j in range(min(n, _PREFETCH_AHEAD)):
        ahead_same[j], ahead_hash[j] = _look_ahead(offsets, data, missing, j, mask, slot_hashes, slot_codes)
    for i in range(n):
        at = i % _PREFETCH_AHEAD
        same = ahead_same[at]
        h = ahead_hash[at]
        if i + _PREFETCH_AHEAD < n:
            ahead_same[at], ahead_hash[at] = _look_ahead(offsets, data, missing, i + _PREFETCH_AHEAD, mask,
                                                         slot_hashes, slot_codes)
        if missing[i]:
            out[i] = -1
            continue
        if same:
            out[i] = out[i - 1]
            continue
        lo = offsets[i]
        hi = offsets[i + 1]
        slot = np.int64(h & mask)
        while True:
            code = slot_codes[slot]
            if code < 0:
                slot_hashes[slot] = h
                slot_codes[slot] = n_codes
                code_hashes[n_codes] = h
                _store(data, lo, hi, code_offsets, code_data, n_codes)
                out[i] = n_codes
                n_codes += 1
                break
            if slot_hashes[slot] == h and _same(data, lo, hi, code_data, code_offsets[code], code_offsets[code + 1]):
                out[i] = code
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
    return n_codes


@serial
def text_ids(offsets, data, missing, stored_offsets, stored_data, n_ids, out):
    """Id of each string: the id of the string stored last where equal to it, else a new id, the string's bytes
    stored under it; returns the number of ids after the call. Equal strings apart from each other get ids of
    their own (no table of every distinct string is kept or probed).

    Parameters
    ----------
    offsets : int64[n + 1]                 # IN     Arrow offsets of the strings
    data : uint8[m]                        # IN     their bytes
    missing : bool[n]                      # IN     True: no string (id -1)
    stored_offsets : int64[>= n_ids+n+1]   # IN/OUT id k's bytes are stored_data[stored_offsets[k]:stored_offsets[k+1]]
    stored_data : uint8[>= used + m]       # IN/OUT the bytes of every id's string
    n_ids : int                            # IN     ids given so far
    out : int32[n]                         # OUT    the id of each string
    """
    for i in range(offsets.shape[0] - 1):
        if missing[i]:
            out[i] = -1
            continue
        lo = offsets[i]
        hi = offsets[i + 1]
        if n_ids > 0 and _same(data, lo, hi, stored_data, stored_offsets[n_ids - 1], stored_offsets[n_ids]):
            out[i] = n_ids - 1
            continue
        _store(data, lo, hi, stored_offsets, stored_data, n_ids)
        out[i] = n_ids
        n_ids += 1
    return n_ids


@serial
def _look_ahead(offsets, data, missing, j, mask, slot_hashes, slot_codes):
    """(whether string j repeats string j - 1, both present; else its hash, its slot starting to load)."""
    if missing[j]:
        return False, np.uint64(0)
    if j > 0 and not missing[j - 1] and _same(data, offsets[j], offsets[j + 1], data, offsets[j - 1], offsets[j]):
        return True, np.uint64(0)
    h = _fnv(data, offsets[j], offsets[j + 1])
    slot = np.int64(h & mask)
    prefetch(slot_codes, slot)
    prefetch(slot_hashes, slot)
    return False, h


@serial
def dictionary_codes(indices, missing, lookup, out):
    """Codes of a dictionary column's rows from its indices and the codes of its values (``lookup``);
    -1 where ``missing`` (of length 0: no row missing). One pass, where NumPy's cast, fill and take made
    three, and serial as the map's read loop calls it (``lines.times_us`` says why)."""
    has_missing = missing.shape[0] > 0
    for i in range(indices.shape[0]):
        out[i] = -1 if has_missing and missing[i] else lookup[indices[i]]


@serial
def text_hash(data, lo, hi):
    """The hash ``text_codes`` places a string by (exposed for tests)."""
    return _fnv(data, lo, hi)


@serial
def _fnv(data, lo, hi):
    h = _FNV_OFFSET
    for j in range(lo, hi):
        h = (h ^ np.uint64(data[j])) * _FNV_PRIME
    return mix64(h)


@serial
def _store(data, lo, hi, stored_offsets, stored_data, k):
    """data[lo:hi] stored as string k, after string k - 1's bytes."""
    start = stored_offsets[k]
    for j in range(hi - lo):
        stored_data[start + j] = data[lo + j]
    stored_offsets[k + 1] = start + hi - lo


@serial
def _same(a, a_lo, a_hi, b, b_lo, b_hi):
    if a_hi - a_lo != b_hi - b_lo:
        return False
    for j in range(a_hi - a_lo):
        if a[a_lo + j] != b[b_lo + j]:
            return False
    return True

