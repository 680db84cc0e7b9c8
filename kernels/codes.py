"""Dense codes for keys, in first-seen order: open-addressing hash tables with linear probing.

``int_codes`` gives each distinct int64 key a code 0, 1, 2, ... as it first appears;
``direct_codes`` gives the same codes from a table indexed by key - low, for keys that span a
range not much wider than their number (``key_range`` measures it).
``text_codes`` does the same for strings (Arrow offsets and bytes) and compares the bytes
of every candidate it meets, so two strings share a code only when they are equal: a hash
only says where to look. The caller keeps each table at most half full (engine.codes grows
it between chunks), so probes stay short; ``rehash`` fills a larger table from the codes.
``text_ids`` only stores strings, for text order ids: a string equal to the one before it takes its id.
``view_indices`` finds the few distinct strings of Arrow string views held inline (Polars' text of channels and
categories), which are then coded as strings, each once.
"""

from __future__ import annotations

import numpy as np

from segmint.kernels._jit import serial
from segmint.kernels.hashing import mix64
from segmint.kernels.prefetch import prefetch

__all__ = ["int_codes", "direct_codes", "key_range", "text_codes", "text_ids", "rehash", "text_hash",
           "dictionary_codes", "view_indices", "VIEW_SLOTS", "NOT_INLINE", "TOO_MANY"]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
# Keys ahead whose slots int_codes and text_codes start loading: a bucket's table of scattered ids is larger than
# the cache (345 k codes: 12 MB), and each probe waited on memory (7.7 M keys: 0.10-0.12 -> 0.089 s; 32 ahead no
# better).
_PREFETCH_AHEAD = 16
# view_indices' table: few enough slots to stay in the core's cache, at most half of them holding a value.
VIEW_SLOTS = 1 << 12
NOT_INLINE, TOO_MANY = -1, -2
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_VIEW_MIX0, _VIEW_MIX1 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


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
def view_indices(views, missing, slot_keys, slot_index, distinct, out):
    """The index of each row's string among the distinct strings, numbered as first seen (-1 where missing), of
    an Arrow string_view array whose strings all lie in their views (12 bytes or fewer). Returns their number, or
    NOT_INLINE where a string is longer, or TOO_MANY past ``slot_index``'s half (the caller then codes the strings
    as strings).

    A view is 16 bytes: the int32 length, then the string's bytes; as two uint64 words (little-endian), with
    the bytes past the length masked out, it is the string's key.

    Parameters
    ----------
    views : uint64[2 n]                  # IN     the views
    missing : bool[n]                    # IN     True: no string (index -1)
    slot_keys : uint64[2 capacity]       # OUT    the key held by each slot (capacity a power of two)
    slot_index : int32[capacity]         # IN/OUT the index held by each slot, all -1 on entry
    distinct : uint64[2 capacity // 2]   # OUT    each distinct string's key, by index
    out : int32[n]                       # OUT    each row's index
    """
    capacity = slot_index.shape[0]
    mask = np.uint64(capacity - 1)
    # The product's high bits, the best mixed: one multiply a word where mix64 took a chain of them (a probe checks
    # the whole key, the slot only places it).
    bits = 0
    while (1 << bits) < capacity:
        bits += 1
    shift = np.uint64(64 - bits) if bits else np.uint64(0)
    n_distinct = 0
    last0 = last1 = np.uint64(0)
    last = -1
    for i in range(missing.shape[0]):
        if missing[i]:
            out[i] = -1
            continue
        w0 = views[2 * i]
        w1 = views[2 * i + 1]
        length = np.int64(w0 & np.uint64(0xFFFFFFFF))
        if length > 12:
            return NOT_INLINE
        if length < 4:
            w0 &= (np.uint64(1) << np.uint64(32 + 8 * length)) - np.uint64(1)
        w1 &= (np.uint64(1) << np.uint64(8 * (length - 4))) - np.uint64(1) if 4 <= length < 12 else \
            (_ALL if length == 12 else np.uint64(0))
        if last >= 0 and w0 == last0 and w1 == last1:
            out[i] = last
            continue
        slot = np.int64(((w0 * _VIEW_MIX0 + w1 * _VIEW_MIX1) >> shift) & mask)
        while True:
            index = slot_index[slot]
            if index < 0:
                if 2 * (n_distinct + 1) > capacity:
                    return TOO_MANY
                slot_keys[2 * slot] = w0
                slot_keys[2 * slot + 1] = w1
                slot_index[slot] = n_distinct
                distinct[2 * n_distinct] = w0
                distinct[2 * n_distinct + 1] = w1
                index = n_distinct
                n_distinct += 1
                break
            if slot_keys[2 * slot] == w0 and slot_keys[2 * slot + 1] == w1:
                break
            slot = np.int64((np.uint64(slot) + np.uint64(1)) & mask)
        out[i] = index
        last, last0, last1 = index, w0, w1
    return n_distinct


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

