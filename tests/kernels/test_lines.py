"""chunk_tally against NumPy on random chunks: usable rows' latest time, channel counts, rejected rows; a chunk's
line records as fill_values and place_codes write them against a plain reference."""

from __future__ import annotations

import numpy as np
import pytest

from segmint.kernels.lines import (AFTER_AS_OF, ANCIENT_TIMESTAMP, EARLIEST_US, FUTURE_TIMESTAMP, NON_FINITE_AMOUNT,
                                   NULL_CUSTOMER_ID, NULL_TIMESTAMP, OK, TS_BAD, TS_MISSING, UNPARSEABLE_AMOUNT,
                                   UNPARSEABLE_TIMESTAMP, chunk_tally, fill_values, place_codes)


@pytest.mark.parametrize(("n", "ok_share", "with_channel"), [(0, 1.0, True), (1, 1.0, True), (1, 0.0, True),
                                                             (5_000, 0.9, True), (5_000, 0.0, False),
                                                             (5_000, 0.5, False)])
def test_chunk_tally_matches_numpy(n, ok_share, with_channel):
    rng = np.random.default_rng(n)
    # reasons as a field of records, so a strided view
    records = np.zeros(n, np.dtype([("ts", np.int64), ("reason", np.uint8)], align=True))
    records["reason"] = np.where(rng.random(n) < ok_share, OK, rng.integers(1, 12, n)).astype(np.uint8)
    reason = records["reason"]
    ts = rng.integers(-10**15, 10**15, n)
    channel = rng.integers(-1, 6, n).astype(np.int32) if with_channel else np.zeros(0, np.int32)
    counts = np.full(8, 3, np.int64)   # adds to what earlier chunks counted
    usable, latest, bad = chunk_tally(reason, ts, channel, counts)
    keep = reason == OK
    assert usable == bool(keep.any())
    assert bad == int((~keep).sum())
    if keep.any():
        assert latest == ts[keep].max()
    expected = np.full(8, 3, np.int64)
    if with_channel:
        expected += np.bincount(channel[keep & (channel >= 0)], minlength=8)
    np.testing.assert_array_equal(counts, expected)


def _reference_reasons(customer, ts, ts_state, amount, amount_bad, future_us, as_of_us):
    """A row's first reason, written out plainly: later rules first, so that earlier ones overwrite them."""
    rules = [(customer < 0, NULL_CUSTOMER_ID), (ts_state == TS_MISSING, NULL_TIMESTAMP),
             (ts_state == TS_BAD, UNPARSEABLE_TIMESTAMP), (amount_bad, UNPARSEABLE_AMOUNT),
             (~np.isfinite(amount), NON_FINITE_AMOUNT), (ts < EARLIEST_US, ANCIENT_TIMESTAMP),
             (ts > future_us, FUTURE_TIMESTAMP), (ts > as_of_us, AFTER_AS_OF)]
    out = np.full(customer.size, OK, np.uint8)
    for where, reason in reversed(rules):
        out[where] = reason
    return out


@pytest.mark.parametrize(("n", "orders", "channel", "category"),
                         [(0, "int", True, True), (1, "text", False, True), (1, "none", True, False),
                          (3_000, "int", True, True), (3_000, "text", True, False), (3_000, "none", False, False)])
def test_values_then_codes_write_the_records_a_plain_reference_gives(n, orders, channel, category):
    from segmint.engine.features.build import CODES, LINE

    rng = np.random.default_rng(n)
    at, size = 5, n + 9   # the chunk's rows among others, which neither kernel may touch
    customer = np.where(rng.random(n) < 0.1, -1, rng.integers(0, 40, n)).astype(np.int32)
    ts_state = rng.choice(np.array([0, 0, 0, TS_MISSING, TS_BAD], np.uint8), n)
    ts = rng.choice(np.array([EARLIEST_US - 1, 0, 10**15, 2 * 10**15, 3 * 10**15]), n)
    amount = rng.choice(np.array([1.5, -2.0, 0.0, np.nan, np.inf, -np.inf]), n)
    amount_bad = rng.random(n) < 0.05
    amount_null = np.isnan(amount) & (rng.random(n) < 0.5)
    order_ids = rng.integers(0, 10**12, n)
    order_missing = rng.random(n) < 0.2
    order_codes = np.where(order_missing, -1, rng.integers(0, 30, n))
    channels = rng.integers(-1, 4, n).astype(np.int32)
    categories = rng.integers(-1, 9, n).astype(np.int32)
    future_us, as_of_us = 2 * 10**15 + 1, 10**15 + 1

    rec = np.full(size * LINE.itemsize, 0xAB, np.uint8).view(LINE)
    codes = np.full(size * CODES.itemsize, 0xCD, np.uint8).view(CODES)
    out_customer = np.full(size, 7, np.int32)
    before, codes_before, customer_before = rec.copy(), codes.copy(), out_customer.copy()
    none64, nobool, none32 = np.zeros(0, np.int64), np.zeros(0, np.bool_), np.zeros(0, np.int32)
    reason = np.empty(n, np.uint8)
    fill_values(at, customer < 0, ts, ts_state, amount, amount_bad, amount_null,
                order_ids if orders == "int" else none64, order_missing if orders == "int" else nobool,
                future_us, as_of_us, rec["ts"], rec["ts_state"], rec["amount"], rec["amount_bad"],
                rec["amount_null"], rec["order"], rec["order_missing"], rec["reason"], reason)
    place_codes(at, customer, order_codes if orders == "text" else none64,
                order_missing if orders == "text" else nobool, channels if channel else none32,
                categories if category else none32, out_customer, rec["order"], rec["order_missing"],
                codes["channel"], codes["category"])

    mine = slice(at, at + n)
    outside = np.ones(size, bool)
    outside[mine] = False
    for name in LINE.names:
        assert rec[name][outside].tobytes() == before[name][outside].tobytes()
    assert codes[outside].tobytes() == codes_before[outside].tobytes()
    np.testing.assert_array_equal(out_customer[outside], customer_before[outside])
    got = rec[mine]
    np.testing.assert_array_equal(out_customer[mine], customer)
    np.testing.assert_array_equal(got["ts"], ts)
    np.testing.assert_array_equal(got["ts_state"], ts_state)
    np.testing.assert_array_equal(got["amount"], amount)   # NaN where NaN
    np.testing.assert_array_equal(got["amount_bad"], amount_bad)
    np.testing.assert_array_equal(got["amount_null"], amount_null)
    expected_order = {"int": order_ids, "text": order_codes, "none": np.zeros(n, np.int64)}[orders]
    np.testing.assert_array_equal(got["order"], expected_order)
    np.testing.assert_array_equal(got["order_missing"], order_missing if orders != "none" else np.zeros(n, bool))
    np.testing.assert_array_equal(codes["channel"][mine], channels if channel else np.full(n, -1))
    np.testing.assert_array_equal(codes["category"][mine], categories if category else np.full(n, -1))
    reasons = _reference_reasons(customer, ts, ts_state, amount, amount_bad, future_us, as_of_us)
    np.testing.assert_array_equal(got["reason"], reasons)
    np.testing.assert_array_equal(reason, reasons)   # the chunk's own copy


@pytest.mark.parametrize(("n", "words"), [(0, 5), (1, 5), (2, 1), (7, 3), (40, 40), (300, 12), (2_000, 400)])
@pytest.mark.parametrize("shape", ["random", "sorted", "reversed", "grouped"])
def test_text_ranks_are_ranks_by_bytes_among_the_customers_codes(n, words, shape):
    # A customer's text order codes become their ranks among its own codes by the strings' bytes (prefixes first,
    # UTF-8 bytes, not code points), as a sort of every order id of the bucket ranked them: the same line order.
    from segmint.kernels.lines import _text_ranks, text_keys

    rng = np.random.default_rng(n * 7 + words)
    # Keys decide up to 15 bytes and lengths; longer strings alike in their first 15 bytes compare their bytes.
    pool = ["", "a", "ab", "abc", "b", "é", "e\u0301", "z", "日本", "a\x00", "a\x00b", "ORD-10", "ORD-9", "ORD-100",
            "x" * 14, "x" * 15, "x" * 16, "x" * 15 + "\x00", "x" * 17, "x" * 15 + "a" * 30, "x" * 15 + "b",
            "x" * 14 + "y", "\xff" * 20, "\xff" * 15]
    pool += [f"o{i}" for i in range(max(0, words - len(pool)))]
    strings = pool[:words]
    order = rng.permutation(len(strings))   # codes in first-seen order, not by value
    encoded = [strings[i].encode() for i in order]
    offsets = np.concatenate(([0], np.cumsum([len(b) for b in encoded]))).astype(np.int64)
    data = np.frombuffer(b"".join(encoded) or b"\0", np.uint8)
    codes = rng.integers(0, len(encoded), n)
    if shape == "sorted":
        codes = np.array(sorted(codes, key=lambda c: encoded[c]), np.int64)
    elif shape == "reversed":
        codes = np.array(sorted(codes, key=lambda c: encoded[c], reverse=True), np.int64)
    elif shape == "grouped":   # an order's lines adjacent, orders in no particular order
        codes = np.repeat(codes[: max(1, n // 3)], 3)[:n]
    missing = rng.random(codes.size) < 0.2
    key = np.where(missing, 123_456, codes).astype(np.int64)
    mine = sorted({encoded[c] for c, m in zip(codes, missing) if not m})
    want = [123_456 if m else mine.index(encoded[c]) for c, m in zip(codes, missing)]
    sort_keys = np.empty((len(encoded), 2), np.uint64)
    text_keys(offsets, data, sort_keys)
    _text_ranks(key, missing, codes.size, sort_keys, offsets, data, np.empty(codes.size, np.int64),
                np.empty(codes.size, np.int64))
    assert key.tolist() == want
