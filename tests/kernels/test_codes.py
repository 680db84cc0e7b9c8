"""Dense codes (engine.codes over kernels/codes.py) against Python dictionaries, across chunks and table growth."""

import numpy as np
import pyarrow as pa
import pytest

from segmint.engine.codes import SLICE, IntCodes, TextCodes, TextIds
from segmint.kernels.codes import text_hash


def _first_seen(values):
    codes, out = {}, []
    for v in values:
        out.append(-1 if v is None else codes.setdefault(v, len(codes)))
    return out, list(codes)


@pytest.mark.parametrize("chunk", [1, 37, 10_000])
def test_int_codes_are_first_seen_codes_and_ranks_sort_the_keys(chunk):
    rng = np.random.default_rng(chunk)
    keys = np.concatenate([rng.integers(-2**63, 2**63 - 1, 3000, dtype=np.int64), rng.integers(0, 50, 3000)])
    rng.shuffle(keys)
    missing = rng.random(keys.size) < 0.05
    codes = IntCodes()
    got = np.concatenate([codes.encode(keys[i:i + chunk], missing[i:i + chunk]) for i in range(0, keys.size, chunk)])
    want, distinct = _first_seen([None if m else int(k) for k, m in zip(keys, missing)])
    assert got.tolist() == want and codes.values().tolist() == distinct
    assert codes.ranks().tolist() == np.argsort(np.argsort(distinct, kind="stable"), kind="stable").tolist()


def test_int_codes_of_one_call_longer_than_a_slice():
    # One encode call codes its keys a slice at a time (the table grows with the distinct keys): codes stay
    # first-seen across slices, for few distinct keys and for mostly new ones.
    rng = np.random.default_rng(11)
    for keys in (rng.integers(0, 300, 200_000), rng.integers(0, 10**9, 200_000), np.arange(140_000)[::-1].copy()):
        missing = rng.random(keys.size) < 0.01
        codes = IntCodes()
        got = codes.encode(keys.astype(np.int64), missing)
        want, distinct = _first_seen([None if m else int(k) for k, m in zip(keys, missing)])
        assert got.tolist() == want and codes.values().tolist() == distinct


@pytest.mark.parametrize("case", ["rising", "falling", "shuffled", "top of int64", "bottom of int64",
                                  "falling at the bottom of int64", "every 5th id", "then sparse"])
def test_dense_int_keys_are_coded_from_a_direct_table_with_the_same_codes(case):
    # Dense ids (a database sequence) are read from a table indexed by key: it grows as runs of ids arrive,
    # up or down, stays inside int64 at its ends, and hands over to the hash table when a far key comes;
    # the codes are the first-seen ones throughout.
    rng = np.random.default_rng(len(case))
    base = {"top of int64": 2**63 - 300_000, "bottom of int64": -2**63,
            "falling at the bottom of int64": -2**63}.get(case, 10**12)
    ids = base + np.arange(300_000, dtype=np.int64) * (5 if case == "every 5th id" else 1)
    keys = np.repeat(ids, rng.integers(1, 4, ids.size))
    if case.startswith("falling"):
        keys = keys[::-1].copy()
    elif case in ("shuffled", "then sparse"):
        rng.shuffle(keys)
    if case == "then sparse":
        keys = np.concatenate([keys, rng.integers(-2**62, 2**62, 5_000), keys[:1000]])
    missing = rng.random(keys.size) < 0.02
    keys[missing] = 0   # a missing key's value is any value: never coded
    codes = IntCodes()
    got = np.concatenate([codes.encode(keys[lo:lo + 40_000], missing[lo:lo + 40_000])
                          for lo in range(0, keys.size, 40_000)])
    want, distinct = _first_seen([None if m else int(k) for k, m in zip(keys, missing)])
    assert got.tolist() == want and codes.values().tolist() == distinct
    assert codes.ranks().tolist() == np.argsort(np.argsort(distinct, kind="stable"), kind="stable").tolist()
    assert (codes._direct is None) == (case == "then sparse")   # the direct table served the dense ids


@pytest.mark.parametrize("step", [1, 4, 5])
def test_the_direct_table_grows_by_doubling_not_once_per_slice(step):
    # Rising ids a few apart (a sequence shared by several tables) extend the table at every slice: each
    # growth copies it, so it must grow geometrically. 60 slices of new ids take a handful of copies.
    from segmint.engine.codes import SLICE

    codes, table, growths = IntCodes(), None, 0
    for lo in range(0, 60 * SLICE, SLICE):
        keys = np.arange(lo, lo + SLICE, dtype=np.int64) * step
        assert codes.encode(keys, np.zeros(SLICE, bool)).tolist() == list(range(lo, lo + SLICE))
        growths += codes._direct is not table
        table = codes._direct
    assert table is not None and growths <= 16


def test_the_direct_table_holds_at_most_its_limit_and_a_slice_of_missing_keys_changes_nothing():
    from segmint.engine.codes import DENSE_SPAN

    codes = IntCodes()
    assert codes.encode(np.array([5, 7], np.int64), np.ones(2, bool)).tolist() == [-1, -1] and codes.n == 0
    within = np.array([0, DENSE_SPAN - 1], np.int64)   # a span of exactly DENSE_SPAN values
    assert codes.encode(within, np.zeros(2, bool)).tolist() == [0, 1] and codes._direct.size == DENSE_SPAN
    assert codes.encode(np.array([DENSE_SPAN, 3], np.int64), np.zeros(2, bool)).tolist() == [2, 3]
    assert codes._direct is None   # one value more than the limit: the hash table from then on
    assert codes.encode(within[::-1].copy(), np.zeros(2, bool)).tolist() == [1, 0]


def test_direct_codes_and_key_range_against_plain_python():
    from segmint.kernels.codes import direct_codes, key_range

    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 1000):
        keys = rng.integers(-50, 50, n).astype(np.int64)
        missing = rng.random(n) < 0.3
        present = [int(k) for k, m in zip(keys, missing) if not m]
        found, smallest, largest = key_range(keys, missing)
        assert (bool(found), *((int(smallest), int(largest)) if found else ())) == \
            ((True, min(present), max(present)) if present else (False,))
        table, code_keys, out = np.full(101, -1, np.int32), np.zeros(n + 1, np.int64), np.empty(n, np.int32)
        table[3] = 0   # key -47 already holds code 0
        code_keys[0] = -47
        n_codes = direct_codes(keys, missing, -50, table, code_keys, 1, out)
        want, distinct = _first_seen([-47] + [None if m else int(k) for k, m in zip(keys, missing)])
        assert out.tolist() == want[1:] and code_keys[:n_codes].tolist() == distinct
        assert [int(table[k + 50]) for k in distinct] == list(range(len(distinct)))


@pytest.mark.parametrize("chunk", [1, 53, 10_000])
def test_text_codes_compare_bytes_and_rank_by_them(chunk):
    rng = np.random.default_rng(chunk)
    words = ["", "a", "b", "ab", "ba", "é", "e\u0301", "z" * 300, "日本", "a\x00b", "a\x00c"]
    values = [None if r < 0.05 else words[int(r * 1000) % len(words)] + str(int(r * 50)) for r in rng.random(4000)]
    codes = TextCodes()
    array = pa.array(values, pa.large_string())
    got = np.concatenate([codes.encode(array.slice(i, chunk)) for i in range(0, len(values), chunk)])
    want, distinct = _first_seen(values)
    assert got.tolist() == want and codes.values().to_pylist() == distinct
    by_bytes = sorted(range(len(distinct)), key=lambda i: distinct[i].encode())
    assert [by_bytes.index(i) for i in range(len(distinct))] == codes.ranks().tolist()
    # A dictionary, a string_view and a sliced array give the same codes.
    assert TextCodes().encode(pa.array(values, pa.string())).tolist() == want


def test_text_codes_of_one_call_longer_than_a_slice_and_of_chunked_columns():
    # One encode call codes a slice at a time, and a chunked column is coded chunk by chunk: codes stay
    # first-seen across slices and chunks, for few distinct strings and for mostly new ones.
    from segmint.engine.io.canonical import _text_codes

    rng = np.random.default_rng(12)
    for distinct in (7, 10**9):
        values = [None if r < 0.01 else f"v{int(r * distinct)}" for r in rng.random(150_000)]
        want, names = _first_seen(values)
        codes = TextCodes()
        assert codes.encode(pa.array(values, pa.string())).tolist() == want and codes.values().to_pylist() == names
        chunked = pa.chunked_array([pa.array(values[lo:lo + 40_000], pa.string()) for lo in range(0, 150_000, 40_000)])
        codes = TextCodes()
        assert _text_codes(codes, chunked).tolist() == want and codes.values().to_pylist() == names


@pytest.mark.parametrize("chunk", [1, 5, 70_000])
def test_text_codes_of_strings_in_runs(chunk):
    # A string equal to the one before it takes its code without a probe (an order's lines come together): runs
    # broken by a null, by a string one byte longer or shorter, or differing in the last byte, across slices.
    rng = np.random.default_rng(chunk)
    words = ["ORD-1", "ORD-10", "ORD-1\x00", "ORD-2", "", "ORD-1" + "x" * 40, "ORD-1" + "x" * 39 + "y"]
    values = [None if r < 0.05 else words[int(r * 100) % len(words)] for r in rng.random(40_000)]
    values = [v for v, run in zip(values, rng.integers(1, 5, len(values))) for _ in range(run)][:70_000]
    values[SLICE - 1:SLICE + 1] = ["ORD-2", "ORD-2"]   # a run across the slices one encode call codes
    want, names = _first_seen(values)
    codes = TextCodes()
    array = pa.array(values, pa.large_string())
    got = np.concatenate([codes.encode(array.slice(i, chunk)) for i in range(0, len(values), chunk)])
    assert got.tolist() == want and codes.values().to_pylist() == names


@pytest.mark.parametrize("chunk", [1, 5, 70_000])
def test_text_ids_store_each_run_of_equal_strings_once(chunk):
    # Text order ids: a string equal to the last one stored (the last present row's) takes its id, across nulls and
    # across encode calls; any other gets the next id and its bytes are stored, even where an earlier id holds them.
    rng = np.random.default_rng(chunk)
    words = ["ORD-1", "ORD-10", "ORD-1\x00", "ORD-2", "", "ORD-1" + "x" * 40, "ORD-1" + "x" * 39 + "y", "日本"]
    values = [None if r < 0.05 else words[int(r * 100) % len(words)] for r in rng.random(30_000)]
    values = [v for v, run in zip(values, rng.integers(1, 5, len(values))) for _ in range(run)][:70_000]
    want, stored = [], []
    for v in values:
        if v is not None and (not stored or stored[-1] != v):
            stored.append(v)
        want.append(-1 if v is None else len(stored) - 1)
    ids = TextIds()
    array = pa.array(values, pa.large_string())
    got = np.concatenate([ids.encode(array.slice(i, chunk)) for i in range(0, len(values), chunk)])
    assert got.tolist() == want and ids.values().to_pylist() == stored and ids.n == len(stored)
    assert len(set(stored)) < len(stored)   # equal strings apart from each other: ids of their own


def test_text_ids_of_a_dictionary_column_are_those_of_its_rows():
    # Arrow gives every batch of a row group the group's whole dictionary: ids per dictionary value would store it
    # again for every batch. Each batch's rows are stored as plain strings' are: once per run.
    from segmint.engine.io.canonical import _text_codes

    rng = np.random.default_rng(3)
    dictionary = pa.array([f"ORD-{i}" for i in range(5000)] + [None], pa.string())
    indices = np.repeat(rng.integers(0, 5001, 3000), rng.integers(1, 4, 3000)).astype(np.int32)
    chunks = [pa.DictionaryArray.from_arrays(pa.array(indices[lo:lo + 1000]), dictionary)
              for lo in range(0, indices.size, 1000)]
    rows = pa.chunked_array(chunks).cast(pa.string()).to_pylist()
    plain, from_dictionary = TextIds(), TextIds()
    want = plain.encode(pa.array(rows, pa.string()))
    got = _text_codes(from_dictionary, pa.chunked_array(chunks))
    assert got.tolist() == want.tolist() and from_dictionary.values().to_pylist() == plain.values().to_pylist()
    assert from_dictionary.n < 3000 < len(chunks) * len(dictionary)


def test_strings_are_told_apart_by_their_bytes_not_their_hash():
    # Every code's string is compared byte for byte when its hash matches: equal hashes would not merge them.
    data = np.frombuffer(b"abcabd", np.uint8)
    assert text_hash(data, 0, 3) != text_hash(data, 3, 6)
    codes = TextCodes()
    assert codes.encode(pa.array(["abc", "abd", "abc"])).tolist() == [0, 1, 0]


@pytest.mark.parametrize("index_type", [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint32()])
def test_dictionary_columns_code_each_row_as_its_value(index_type):
    # A dictionary column's rows are coded through its values' codes (kernels.codes.dictionary_codes): each
    # row's code is its value's, a null row or a null value -1, across slices and chunks.
    from segmint.engine.io.canonical import _text_codes

    rng = np.random.default_rng(7)
    vocabulary = pa.array(["web", None, "store", "", "app", "日本"], pa.string())
    indices = rng.integers(0, len(vocabulary), 3000)
    rows_missing = rng.random(3000) < 0.1
    column = pa.DictionaryArray.from_arrays(pa.array(np.where(rows_missing, None, indices).tolist(), index_type),
                                            vocabulary)
    values = [None if m else vocabulary[int(i)].as_py() for i, m in zip(indices, rows_missing)]
    codes = TextCodes()
    pieces = [column.slice(0, 1000), pa.chunked_array([column.slice(1000, 700), column.slice(1700, 1300)])]
    got = np.concatenate([_text_codes(codes, piece) for piece in pieces])
    names = codes.values().to_pylist()
    assert [None if c < 0 else names[c] for c in got] == values and (got >= 0).all() == (None not in values)
    assert len(set(names)) == len(names) and None not in names
    no_nulls = pa.DictionaryArray.from_arrays(pa.array(indices[:500] % 2 * 2, index_type), vocabulary)
    assert _text_codes(TextCodes(), no_nulls).tolist() == (indices[:500] % 2).tolist()


def _views(strings, rng):
    """Arrow string views (uint64 words) of strings of 12 bytes or fewer, the bytes past each string's length
    random: the layout does not promise zeros there."""
    out = rng.integers(0, 256, (len(strings), 16), dtype=np.uint8)
    for i, s in enumerate(strings):
        data = (s or "").encode()
        out[i, :4] = np.frombuffer(np.int32(len(data)).tobytes(), np.uint8)
        inline = data[:12]   # a longer string's view holds its prefix (then where its bytes are)
        out[i, 4: 4 + len(inline)] = np.frombuffer(inline, np.uint8)
    return out.reshape(-1).view(np.uint64)


def test_view_indices_number_distinct_strings_as_first_seen_whatever_their_padding():
    from segmint.kernels.codes import NOT_INLINE, TOO_MANY, VIEW_SLOTS, view_indices

    rng = np.random.default_rng(3)
    words = ["", "a", "ab", "abc", "abcd", "abcde", "abcdefgh", "abcdefghijk", "abcdefghijkl", "é", "a\x00", "\x00"]

    def run(strings, slots=VIEW_SLOTS):
        n = len(strings)
        missing = np.array([s is None for s in strings], bool)
        distinct, out = np.zeros(slots, np.uint64), np.empty(n, np.int32)
        found = int(view_indices(_views(strings, rng), missing, np.zeros(2 * slots, np.uint64),
                                 np.full(slots, -1, np.int32), distinct, out))
        return found, out, distinct

    for n in (0, 1, 2, 1000):
        strings = [None if r < 0.1 else words[int(r * 100) % len(words)] for r in rng.random(n)]
        strings = [s for s, run_ in zip(strings, rng.integers(1, 4, n)) for _ in range(run_)]   # runs, as data has
        found, out, distinct = run(strings)
        want, names = _first_seen(strings)
        assert found == len(names) and out.tolist() == want
        keys = distinct[: 2 * found].view(np.uint8).reshape(found, 16)
        assert [bytes(k[4: 4 + int(k[:4].view(np.int32)[0])]).decode() for k in keys] == names
    # A string of 13 bytes is not in its view; more distinct strings than half the table: the caller codes them.
    assert run(["abc", "abcdefghijklm"])[0] == NOT_INLINE
    assert run([str(i) for i in range(9)], slots=16)[0] == TOO_MANY
    assert run([str(i) for i in range(8)], slots=16)[0] == 8


@pytest.mark.parametrize("chunk", [1, 7, 5000])
def test_text_codes_of_polars_string_views_are_those_of_the_strings(chunk):
    import polars as pl

    rng = np.random.default_rng(chunk)
    words = ["", "web", "app", "abcdefghijkl", "é", "a\x00"]
    for extra in ([], ["a string longer than twelve bytes"], [f"w{i}" for i in range(3000)]):
        pool = words + extra
        values = [None if r < 0.05 else pool[int(r * 10_000) % len(pool)] for r in rng.random(6000)]
        column = pl.Series(values, dtype=pl.String).to_arrow(compat_level=pl.CompatLevel.newest())
        assert column.type == pa.string_view()
        views, strings = TextCodes(), TextCodes()
        got = np.concatenate([views.encode(column.slice(i, chunk)) for i in range(0, len(values), chunk)])
        want = np.concatenate([strings.encode(column.slice(i, chunk).cast(pa.large_string()))
                               for i in range(0, len(values), chunk)])
        assert got.tolist() == want.tolist() == _first_seen(values)[0]
        assert views.values().to_pylist() == strings.values().to_pylist()
        assert views.ranks().tolist() == strings.ranks().tolist()
