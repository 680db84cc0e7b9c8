"""The map's kernels: a reject reason per row, each customer's rows in line order, and one pass per
customer for repeats, duplicates, order netting, the returns-only and overflow checks and every feature.

Rows are in input order (engine.io.canonical, engine.features.build: one 32-byte record per
row, a cache line, and the row's channel and category codes apart). ``row_reasons`` gives each
row its first row-level reason. After a counting sort of rows by customer (kernels/grouping.py),
``customer_pass`` reduces each customer, serially within the customer and in parallel across
customers, so nothing depends on the thread count. It first copies the customer's rows into
scratch (each row's record and codes whole) and puts them in line order: by order id, then time, ties
in input order, lines without an order id last, in input order (each its own order); then:

1. repeats: rows identical on every mapped column (rejected rows included) after the first;
2. with ``--dedupe-on``, usable rows identical on those columns after the first in input order
   become ``duplicate`` (columns as read: parsed values where they are the values as read, typed
   Parquet, else a hash of the named cells as read, ``dedupe_key``);
3. usable lines are collapsed into orders: an order's time, position and channel are its first
   line's, its amount the exact sum of its lines, 0 within their rounding (exact_sum.CANCEL; inline, as
   exact_sum.net_sum called here cost customer_pass 0.05 s on bench M; an order's absolute sum beyond the
   float range makes its customer amount_overflow whatever its net);
4. a customer whose absolute amounts sum beyond the float range is ``amount_overflow``; one
   without an order netting to >= 0 is ``returns_only`` (every usable row takes the reason);
5. every other customer gets its features: ``order_row`` over its orders by time (ties by
   position), ``line_row`` over its lines in line order.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from segmint.kernels._jit import parallel, serial
from segmint.kernels.exact_sum import CANCEL, MAX_PARTIALS, add_partial, round_partials
from segmint.kernels.hashing import mix64
from segmint.kernels.prefetch import prefetch
from segmint.kernels.sequence import CATEGORY_SCRATCH, line_row, order_row

__all__ = ["row_reasons", "customer_pass", "text_keys", "fill_values", "place_codes", "chunk_tally", "times_us", "OK",
           "NULL_CUSTOMER_ID", "NULL_TIMESTAMP", "UNPARSEABLE_TIMESTAMP", "UNPARSEABLE_AMOUNT", "NON_FINITE_AMOUNT",
           "ANCIENT_TIMESTAMP",
           "FUTURE_TIMESTAMP", "AFTER_AS_OF", "DUPLICATE", "AMOUNT_OVERFLOW", "RETURNS_ONLY", "TS_MISSING", "TS_BAD",
           "DEDUPE_TIME", "DEDUPE_AMOUNT", "DEDUPE_ORDER", "DEDUPE_CHANNEL", "DEDUPE_CATEGORY", "DEDUPE_RAW",
           "DEDUPE_ASKED", "EMPTY", "EARLIEST_US", "LINE", "CODES"]

# Reason codes: 0 = used; k = engine.io.clean.REASONS[k - 1] (the same order).
OK = 0
NULL_CUSTOMER_ID = 1
NULL_TIMESTAMP = 2
UNPARSEABLE_TIMESTAMP = 3
UNPARSEABLE_AMOUNT = 4
NON_FINITE_AMOUNT = 5
ANCIENT_TIMESTAMP = 6
FUTURE_TIMESTAMP = 7
AFTER_AS_OF = 8
DUPLICATE = 9
AMOUNT_OVERFLOW = 10
RETURNS_ONLY = 11
# Earlier times are ANCIENT_TIMESTAMP: 1901-01-01 in microseconds since 1970 (engine.io.clean says why).
EARLIEST_US = -2_177_452_800_000_000
# ts_state of a row.
TS_MISSING = 1
TS_BAD = 2
# Which columns --dedupe-on compares (bits), the customer always.
DEDUPE_TIME = 1
DEDUPE_AMOUNT = 2
DEDUPE_ORDER = 4
DEDUPE_CHANNEL = 8
DEDUPE_CATEGORY = 16
DEDUPE_RAW = 32          # the row identity (raw, or dedupe_key for --dedupe-on), columns as read
DEDUPE_ASKED = 64        # --dedupe-on was given (naming the customer alone compares no other field)
_EVERYTHING = 63
# status of a customer with no usable row: not a customer of the output.
EMPTY = 255

# One record per row: the fields the customer pass reads of a row share a cache line (32 bytes: one line, read
# with the row's codes; engine.features.build starts the records at a line). Written where the chunk was read
# (fill_values), but for text order ids' codes. ``customer_pass`` copies a row's record whole.
LINE = np.dtype([("ts", np.int64), ("amount", np.float64), ("order", np.int64), ("ts_state", np.uint8),
                 ("amount_bad", np.bool_), ("amount_null", np.bool_), ("order_missing", np.bool_),
                 ("reason", np.uint8)], align=True)
# A row's channel and category codes, apart from its record: the caller gives them in order (place_codes), and
# writing them into records another thread had just written took it a second pass over them (scenario L by hash:
# read phases 6.2 -> 7.5-7.9 s).
CODES = np.dtype([("channel", np.int32), ("category", np.int32)])

_BLOCK = 1024
# Runs of at most this many lines sharing an order id and time are compared pairwise without hashing.
_COMPARE_DIRECTLY = 16


@parallel
def row_reasons(customer, ts, ts_state, amount, amount_bad, future_us, as_of_us, out):
    """The first row-level reason of each row (``OK`` for a usable row).

    Parameters
    ----------
    customer : int32[n]       # IN  customer code, -1 when the id is missing
    ts : int64[n]             # IN  microseconds since epoch (meaningful when ts_state is 0)
    ts_state : uint8[n]       # IN  0, TS_MISSING (empty cell) or TS_BAD (does not parse, or out of range)
    amount : float64[n]       # IN  NaN when missing
    amount_bad : bool[n]      # IN  an amount cell holds text that is not a number
    future_us : int           # IN  later is future_timestamp (the int64 maximum: no such check)
    as_of_us : int            # IN  later is after_as_of (the int64 maximum: no such check)
    out : uint8[n]            # OUT
    """
    for i in prange(customer.shape[0]):
        out[i] = _reason(customer[i], ts[i], ts_state[i], amount[i], amount_bad[i], future_us, as_of_us)


@serial
def times_us(values, missing, per_us, first_us, last_us, out_ts, out_state):
    """Times in ``per_us`` microseconds to microseconds: TS_MISSING where missing, TS_BAD (the raw value
    kept) outside [first_us, last_us].

    Serial: it runs in the map's read loop while the read-ahead thread decodes on the other core, and a
    parallel region there waits on a worker that shares that core (on M: 0.20 s in the map, 0.05 s serial)."""
    lo = -(-first_us // per_us)
    hi = last_us // per_us
    for i in range(values.shape[0]):
        v = np.int64(values[i])
        if missing[i]:
            out_ts[i] = 0
            out_state[i] = TS_MISSING
        elif v < lo or v > hi:
            out_ts[i] = v
            out_state[i] = TS_BAD
        else:
            out_ts[i] = v * per_us
            out_state[i] = 0


@serial
def fill_values(at, no_id, ts, ts_state, amount, amount_bad, amount_null, order, order_missing, future_us, as_of_us,
                out_ts, out_state, out_amount, out_bad, out_null, out_order, out_missing, out_reason, reason):
    """Write a chunk's values at ``at`` into the bucket's line records (the out_* arrays: fields of one record
    array) with each row's reason (``row_reasons``; ``no_id``: the rows without a customer id), also into
    ``reason``, the chunk's own. order, order_missing: of length 0 where they are coded (text ids, which
    ``place_codes`` writes) or not mapped.

    No code is read: any thread may fill any chunk, each its own rows, while the chunks before it are coded.
    Serial, as ``times_us`` and for its reason."""
    has_order = order.shape[0] > 0
    for i in range(ts.shape[0]):
        j = at + i
        out_ts[j] = ts[i]
        out_state[j] = ts_state[i]
        out_amount[j] = amount[i]
        out_bad[j] = amount_bad[i]
        out_null[j] = amount_null[i]
        out_order[j] = order[i] if has_order else 0
        out_missing[j] = order_missing[i] if has_order else False
        reason[i] = _reason(-1 if no_id[i] else 0, ts[i], ts_state[i], amount[i], amount_bad[i], future_us,
                            as_of_us)
        out_reason[j] = reason[i]


@serial
def place_codes(at, customer, order, order_missing, channel, category, out_customer, out_order, out_missing,
                out_channel, out_category):
    """Write a chunk's codes at ``at``: customers' and channels' and categories' (-1 written where not mapped:
    channel, category of length 0) into their own arrays, text order ids' into the line records ``fill_values``
    filled (order, order_missing: of length 0 where the ids are integers, which it wrote, or not mapped)."""
    has_order = order.shape[0] > 0
    has_channel = channel.shape[0] > 0
    has_category = category.shape[0] > 0
    for i in range(customer.shape[0]):
        j = at + i
        out_customer[j] = customer[i]
        out_channel[j] = channel[i] if has_channel else -1
        out_category[j] = category[i] if has_category else -1
    if has_order:
        for i in range(customer.shape[0]):
            out_order[at + i] = order[i]
            out_missing[at + i] = order_missing[i]


@serial
def chunk_tally(reason, ts, channel, counts):
    """Of a chunk's rows (their reasons as ``fill_values`` gave them): whether any row has no reason, the latest
    time among those rows, and the rows with a reason, counted; ``counts[code]`` += the rows with no reason of
    each channel code (channel: of length 0 when not mapped; -1: none).
    One pass, where NumPy took seven."""
    has_channel = channel.shape[0] > 0
    usable = False
    latest = np.iinfo(np.int64).min
    bad = 0
    for i in range(reason.shape[0]):
        if reason[i] != OK:
            bad += 1
            continue
        usable = True
        latest = max(latest, ts[i])
        if has_channel and channel[i] >= 0:
            counts[channel[i]] += 1
    return usable, latest, bad


@serial
def _reason(customer, ts, ts_state, amount, amount_bad, future_us, as_of_us):
    if customer < 0:
        return NULL_CUSTOMER_ID
    if ts_state == TS_MISSING:
        return NULL_TIMESTAMP
    if ts_state == TS_BAD:
        return UNPARSEABLE_TIMESTAMP
    if amount_bad:
        return UNPARSEABLE_AMOUNT
    if not np.isfinite(amount):
        return NON_FINITE_AMOUNT
    if ts < EARLIEST_US:
        return ANCIENT_TIMESTAMP
    if ts > future_us:
        return FUTURE_TIMESTAMP
    if ts > as_of_us:
        return AFTER_AS_OF
    return OK


@parallel
def customer_pass(offsets, perm, records, codes, order_keys, order_offsets, order_data, has_order, channel_column,
                  category_rank, raw, dedupe_key, dedupe, as_of_us, features, shares, lines, status, repeats, span):
    """Line order and steps 1-5 of the module docstring, for every customer.

    Parameters
    ----------
    offsets : int64[n_groups + 1]       # IN     rows of group g: perm[offsets[g]:offsets[g+1]]; the last group
                                        #        holds the rows without a customer id (repeats only)
    perm : int[n]                       # IN/OUT row numbers, each group's in input order; out: in line order
    records : LINE[rows]                # IN/OUT each row's record: ts, ts_state, amount, amount_bad as for
                                        #        row_reasons; amount_null (the amount cell was empty: a null and a
                                        #        NaN are two values); order (an integer order id, or a text one's id,
                                        #        engine.codes.TextIds) and order_missing; reason, the row-level
                                        #        reason in, duplicate, amount_overflow and returns_only added
    codes : CODES[rows]                 # IN     each row's channel and category code (-1 none)
    order_keys : uint64[n_ids, 2]       # IN     text order ids: each id's ``text_keys`` ([0, 2]: integer ids)
    order_offsets : int64[n_ids + 1]    # IN     text order ids: id k's UTF-8 bytes are
    order_data : uint8[...]             #        order_data[order_offsets[k]:order_offsets[k + 1]]
    has_order : bool                    # IN     False: no order column, every line is an order of its own
    channel_column : int32[n_codes]     # IN     each channel code's share column, -1 when not among them
    category_rank : int32[n_codes + 1]  # IN     each category code's rank by value; [-1] last, for "none"
    raw : uint64[rows] or [0]           # IN     identity of each row as read, when values were parsed from text
    dedupe_key : uint64[rows] or [0]    # IN     identity of --dedupe-on's columns as read, where values were parsed
    dedupe : int                        # IN     DEDUPE_* bits (0: no --dedupe-on; DEDUPE_RAW: compare dedupe_key)
    as_of_us : int                      # IN
    features : float64[n_customers, N_ORDER_FEATURES]  # OUT (rows of customers with a status are not set)
    shares : float64[n_customers, n_channels]          # OUT
    lines : float64[n_customers, 3]                    # OUT refund_share, category_count, category_entropy
    status : uint8[n_customers]                        # OUT OK, AMOUNT_OVERFLOW, RETURNS_ONLY, or EMPTY
    repeats : int64[n_groups]                          # OUT rows repeating an earlier row of the group
    span : int64[n_customers, 2]                       # OUT first and last time of the customer's usable lines
    """
    order = records["order"]
    order_missing = records["order_missing"]
    reason = records["reason"]
    n_groups = offsets.shape[0] - 1
    n_customers = n_groups - 1
    widest = 1
    for g in range(n_groups):
        widest = max(widest, offsets[g + 1] - offsets[g])
    has_raw = raw.shape[0] > 1
    has_key = dedupe_key.shape[0] > 1
    text_orders = order_keys.shape[0] > 0
    flat_keys = order_keys.reshape(-1)
    # Text order ids: the records two customers on start loading, so that those of the next are in cache when
    # its order ids' keys start loading (each key a line of a table of every id, scattered like the rows; M with
    # text order ids: customer_pass 1.71-1.90 -> 1.55-1.64 s).
    ahead = 2 if text_orders else 1
    for block in prange((n_groups + _BLOCK - 1) // _BLOCK):
        # Scratch: the customer's rows (in input order, then their line order ``by``) and its orders. A row's
        # record and codes are copied whole and read through views of their fields: copying the fields one by one
        # took customer_pass on 100,000 customers' 2.2 M lines (Model.predict) 0.27-0.31 -> 0.21-0.23 s on one
        # thread.
        pos = np.empty(widest, np.int64)
        l_rec = np.empty(widest, LINE)
        l_codes = np.empty(widest, CODES)
        l_ts = l_rec["ts"]
        l_state = l_rec["ts_state"]
        l_amount = l_rec["amount"]
        l_bits = l_amount.view(np.uint64)
        l_bad = l_rec["amount_bad"]
        l_null = l_rec["amount_null"]
        l_reason = l_rec["reason"]
        l_channel = l_codes["channel"]
        l_key = np.empty(widest, np.int64)
        l_missing = np.empty(widest, np.bool_)
        l_category = np.empty(widest, np.int32)
        l_raw = np.zeros(widest, np.uint64)
        l_dkey = np.zeros(widest, np.uint64)
        by = np.empty(widest, np.int64)
        keys = np.empty(widest, np.uint64)
        sub = np.empty(widest, np.int64)
        rows = np.empty(widest, np.int64)
        o_ts = np.empty(widest, np.int64)
        o_pos = np.empty(widest, np.int64)
        o_amount = np.empty(widest, np.float64)
        o_channel = np.empty(widest, np.int32)
        s_ts = np.empty(widest, np.int64)
        s_amount = np.empty(widest, np.float64)
        s_channel = np.empty(widest, np.int32)
        u_amount = np.empty(widest, np.float64)
        u_category = np.empty(widest, np.int32)
        partials = np.empty(MAX_PARTIALS, np.float64)
        counts = np.empty(CATEGORY_SCRATCH, np.int64)
        for g in range(block * _BLOCK, min(n_groups, (block + 1) * _BLOCK)):
            lo = offsets[g]
            n = offsets[g + 1] - lo
            # The customer's rows are scattered over the bucket. The next customer's start loading
            # while this one is reduced (a row's record is one cache line, its codes in another):
            # customer_pass on bench M 0.94 -> 0.72-0.75 s.
            if g + ahead < n_groups:
                for i in range(offsets[g + ahead], offsets[g + ahead + 1]):
                    r = perm[i]
                    prefetch(records, r)
                    prefetch(codes, r)
                    if has_raw:
                        prefetch(raw, r)
                    if has_key:
                        prefetch(dedupe_key, r)
            if text_orders and g + 1 < n_groups:
                for i in range(offsets[g + 1], offsets[g + 2]):
                    r = perm[i]
                    if not order_missing[r]:
                        prefetch(flat_keys, 2 * order[r])
            for i in range(n):
                r = perm[lo + i]
                pos[i] = r
                l_rec[i] = records[r]
                l_codes[i] = codes[r]
                if has_raw:
                    l_raw[i] = raw[r]
                if has_key:
                    l_dkey[i] = dedupe_key[r]
            for i in range(n):
                # Without an order column every line is an order of its own, and lines go by time.
                l_missing[i] = has_order and l_rec[i].order_missing
                l_key[i] = 0 if l_missing[i] or not has_order else l_rec[i].order
                l_category[i] = category_rank[l_codes[i].category]
            if text_orders:
                _text_ranks(l_key, l_missing, n, order_keys, order_offsets, order_data, sub, rows)
            _line_order(l_missing, l_key, l_ts, n, by)
            for i in range(n):
                perm[lo + i] = pos[by[i]]
            repeats[g] = _repeats(n, by, l_ts, l_state, l_amount, l_bits, l_bad, l_null, l_key, l_missing,
                                  l_channel, l_category, l_raw, l_reason, keys, sub, rows)
            if g == n_customers:
                continue
            if dedupe:
                m = 0
                for i in range(n):
                    if l_reason[i] == OK:
                        rows[m] = i
                        m += 1
                _identical_after_first(m, True, dedupe, l_ts, l_state, l_amount, l_bits, l_bad, l_null, l_key,
                                       l_missing, l_channel, l_category, l_dkey, l_reason, keys, sub, rows)
            # Orders of the usable lines, in line order. An order's net is the exact sum of its lines: of one or
            # two their float sum (IEEE addition rounds the exact sum of two correctly, as round_partials does),
            # of more their partials' (76% of bench M's orders have one or two lines), and the order's id is held
            # here, not read again through its first row: customer_pass on bench M's lines in customer order
            # 2.52 -> 2.13 CPU-seconds, 1.35 -> 1.20 s (medians of 16, in turn).
            n_orders = 0
            n_lines = 0
            gross = 0.0
            o_gross = 0.0
            buys = False
            used = 0
            o_lines = 0          # lines of the order being summed so far
            o_first = 0.0        # its first two lines, and their float sum
            o_second = 0.0
            o_sum = 0.0
            o_key = 0            # its order id, and whether it had none (held here, not read again by row)
            o_missing = False
            first_ts = np.iinfo(np.int64).max
            last_ts = np.iinfo(np.int64).min
            for j in range(n):
                i = by[j]
                if l_reason[i] != OK:
                    continue
                a = l_amount[i]
                gross += abs(a)
                u_amount[n_lines] = a
                u_category[n_lines] = l_category[i]
                n_lines += 1
                first_ts = min(first_ts, l_ts[i])
                last_ts = max(last_ts, l_ts[i])
                key = l_key[i]
                missing = l_missing[i]
                if n_orders == 0 or not has_order or missing or o_missing or key != o_key:
                    if n_orders > 0:
                        # Inline: called as a function here and below, customer_pass took 0.1-0.2 CPU-seconds more.
                        net = o_sum if o_lines <= 2 else round_partials(partials, used)
                        o_amount[n_orders - 1] = 0.0 if abs(net) <= o_gross * CANCEL else net
                        buys = buys or o_amount[n_orders - 1] >= 0
                    o_key = key
                    o_missing = missing
                    o_ts[n_orders] = l_ts[i]
                    o_pos[n_orders] = i      # input order within the customer: as good as the position
                    o_channel[n_orders] = channel_column[l_channel[i]] if l_channel[i] >= 0 else -1
                    n_orders += 1
                    o_lines = 0
                    o_gross = 0.0
                if o_lines == 0:
                    o_first = a
                    o_sum = a
                elif o_lines == 1:
                    o_second = a
                    o_sum = o_first + a
                else:
                    if o_lines == 2:
                        used = add_partial(partials, 0, o_first)
                        used = add_partial(partials, used, o_second)
                    used = add_partial(partials, used, a)
                o_lines += 1
                o_gross += abs(a)
            if n_orders == 0:
                status[g] = EMPTY
            else:
                net = o_sum if o_lines <= 2 else round_partials(partials, used)
                o_amount[n_orders - 1] = 0.0 if abs(net) <= o_gross * CANCEL else net
                buys = buys or o_amount[n_orders - 1] >= 0
                if not np.isfinite(gross):
                    status[g] = AMOUNT_OVERFLOW
                elif not buys:
                    status[g] = RETURNS_ONLY
                else:
                    status[g] = OK
                if status[g] != OK:
                    for i in range(n):
                        if l_reason[i] == OK:
                            l_reason[i] = status[g]
                else:
                    span[g, 0] = first_ts
                    span[g, 1] = last_ts
                    # Orders by time, ties by the position of their first line.
                    _sort_pairs(o_ts, o_pos, n_orders, sub)
                    for j in range(n_orders):
                        s_ts[j] = o_ts[sub[j]]
                        s_amount[j] = o_amount[sub[j]]
                        s_channel[j] = o_channel[sub[j]]
                    order_row(s_ts, s_amount, s_channel, n_orders, as_of_us, features[g], shares[g])
                    line_row(u_amount, u_category, n_lines, lines[g], counts)
            if dedupe or status[g] != OK:   # otherwise no reason changed: no second visit to the rows
                for i in range(n):
                    if l_reason[i] != reason[pos[i]]:
                        reason[pos[i]] = l_reason[i]


@parallel
def text_keys(offsets, data, keys):
    """Each string's sort key (``_text_after`` compares by it first): its first 15 bytes, zeros after its end,
    big-endian in keys[i, 0] and the high bytes of keys[i, 1], and its length (16: 16 or more) in the last byte.

    Parameters
    ----------
    offsets : int64[n + 1]   # IN   string i's bytes are data[offsets[i]:offsets[i + 1]]
    data : uint8[...]        # IN
    keys : uint64[n, 2]      # OUT
    """
    for i in prange(offsets.shape[0] - 1):
        lo = offsets[i]
        size = offsets[i + 1] - lo
        hi_word = np.uint64(0)
        lo_word = np.uint64(0)
        for j in range(8):
            hi_word = (hi_word << np.uint64(8)) | np.uint64(data[lo + j] if j < size else 0)
        for j in range(8, 15):
            lo_word = (lo_word << np.uint64(8)) | np.uint64(data[lo + j] if j < size else 0)
        keys[i, 0] = hi_word
        keys[i, 1] = (lo_word << np.uint64(8)) | np.uint64(min(size, 16))


@serial
def _text_ranks(key, missing, n, sort_keys, offsets, data, idx, tmp):
    """key[:n] (text order ids, where not ``missing``) replaced by each id's rank among the customer's ids by
    their strings' UTF-8 bytes, equal strings one rank whatever their ids (engine.codes.TextIds gives equal
    strings apart from each other two): the line order of ranks over all of the bucket's order ids, without
    sorting them all (bench M with text order ids: a sort of 9 M strings on one core)."""
    m = 0
    for i in range(n):
        if not missing[i]:
            idx[m] = i
            m += 1
    in_order = True
    for j in range(1, m):
        if _text_after(key[idx[j - 1]], key[idx[j]], sort_keys, offsets, data):
            in_order = False
            break
    if not in_order:
        # Bottom-up merge sort (stable), idx and tmp in turn.
        src, dst = idx, tmp
        in_tmp = False
        width = 1
        while width < m:
            for lo in range(0, m, 2 * width):
                mid = min(lo + width, m)
                hi = min(lo + 2 * width, m)
                a, b = lo, mid
                for k in range(lo, hi):
                    if a < mid and (b >= hi or not _text_after(key[src[a]], key[src[b]], sort_keys, offsets, data)):
                        dst[k] = src[a]
                        a += 1
                    else:
                        dst[k] = src[b]
                        b += 1
            src, dst = dst, src
            in_tmp = not in_tmp
            width *= 2
        if in_tmp:
            for j in range(m):
                idx[j] = tmp[j]
    rank = -1
    prev = -1
    for j in range(m):
        code = key[idx[j]]
        if j == 0 or _text_after(code, prev, sort_keys, offsets, data):
            rank += 1
        prev = code
        key[idx[j]] = rank


@serial
def _text_after(a, b, sort_keys, offsets, data):
    """Whether id ``a``'s string comes after id ``b``'s, by bytes (a prefix first): by their ``text_keys``,
    which decide unless both strings are 16 bytes or longer with the same first 15."""
    if a == b:
        return False
    if sort_keys[a, 0] != sort_keys[b, 0]:
        return sort_keys[a, 0] > sort_keys[b, 0]
    if sort_keys[a, 1] != sort_keys[b, 1]:
        return sort_keys[a, 1] > sort_keys[b, 1]
    a_lo, a_hi = offsets[a], offsets[a + 1]
    b_lo, b_hi = offsets[b], offsets[b + 1]
    for j in range(15, min(a_hi - a_lo, b_hi - b_lo)):
        x = data[a_lo + j]
        y = data[b_lo + j]
        if x != y:
            return x > y
    return a_hi - a_lo > b_hi - b_lo


@serial
def _line_order(missing, key, ts, n, by):
    """by[:n] = the rows 0..n-1 (input order) in line order: (missing, key, ts) ascending, ties in input
    order; rows with a missing key compare by input order alone (each is an order of its own)."""
    # Whether any row comes before the one above it, without a branch per row (most customers' rows
    # are in line order already: customer_pass on bench M 0.67 -> 0.62 s in customer order).
    late = False
    for i in range(n):
        by[i] = i
    for i in range(1, n):
        mi = missing[i]
        mb = missing[i - 1]
        late |= (mb & ~mi) | (~mi & ~mb & ((key[i] < key[i - 1]) | ((key[i] == key[i - 1]) & (ts[i] < ts[i - 1]))))
    if not late:
        return
    # Nearly in order (a late return of an earlier order): insertion sort, whose cost is the number of
    # rows out of place; beyond a budget of moves, three stable sorts.
    budget = 16 * n + 256
    for i in range(1, n):
        j = i - 1
        while j >= 0 and _before(i, by[j], missing, key, ts):
            by[j + 1] = by[j]
            j -= 1
            budget -= 1
        by[j + 1] = i
        if budget < 0:
            break
    if budget >= 0:
        return
    major = np.empty(n, np.int64)
    minor = np.empty(n, np.int64)
    flag = np.empty(n, np.int64)
    for i in range(n):
        flag[i] = 1 if missing[i] else 0
        major[i] = 0 if missing[i] else key[i]
        minor[i] = 0 if missing[i] else ts[i]
    # Three stable passes, the least significant key first; ties keep input order.
    first = np.argsort(minor, kind="mergesort")
    second = first[np.argsort(major[first], kind="mergesort")]
    third = second[np.argsort(flag[second], kind="mergesort")]
    for i in range(n):
        by[i] = third[i]


@serial
def _before(a, b, missing, key, ts):
    """Row ``a`` strictly before row ``b`` in line order (a comes after b in input order)."""
    if missing[a] != missing[b]:
        return missing[b]
    if missing[a]:
        return a < b
    if key[a] != key[b]:
        return key[a] < key[b]
    if ts[a] != ts[b]:
        return ts[a] < ts[b]
    return a < b


@serial
def _repeats(n, by, ts, ts_state, amount, bits, amount_bad, amount_null, key, missing, channel, category, raw, reason,
             keys, sub, rows):
    """Rows identical on every column to an earlier row (in input order), counted. Identical rows share
    their order id and time, so in line order they are next to each other (ties in input order): only
    such runs are compared. Rows without an order id are compared through a hash of their values."""
    count = 0
    n_missing = 0
    start = 0
    while start < n:
        a = by[start]
        if missing[a]:
            rows[n_missing] = a
            n_missing += 1
            start += 1
            continue
        end = start + 1
        while end < n and not missing[by[end]] and key[by[end]] == key[a] and ts[by[end]] == ts[a]:
            end += 1
        if 1 < end - start <= _COMPARE_DIRECTLY:
            # An order's few lines (they share its id and time): compared field by field without branches,
            # cheaper than hashing each line (customer_pass on bench M: 1.01 -> 0.96 s, with the skipped
            # write-back of unchanged reasons in customer_pass).
            for j in range(start + 1, end):
                for k in range(start, j):
                    if _same_line(by[k], by[j], ts_state, amount, amount_bad, amount_null, channel, category, raw):
                        count += 1
                        break
        elif end - start > 1:
            # More lines (a bulk order's, at one time): sorted by hash, then compared within equal hashes,
            # O(m log m), where comparing each line with every earlier one was O(m^2) (an order of 200 k
            # distinct lines took minutes). Placed after any order-less rows gathered in ``rows`` (none so far
            # today: _line_order puts them last).
            run = rows[n_missing:]
            for j in range(end - start):
                run[j] = by[start + j]
            count += _identical_after_first(end - start, False, _EVERYTHING, ts, ts_state, amount, bits, amount_bad,
                                            amount_null, key, missing, channel, category, raw, reason,
                                            keys[n_missing:], sub[n_missing:], run)
        start = end
    if n_missing > 1:
        count += _identical_after_first(n_missing, False, _EVERYTHING, ts, ts_state, amount, bits, amount_bad,
                                        amount_null, key, missing, channel, category, raw, reason, keys, sub, rows)
    return count


@serial
def _identical_after_first(m, mark, fields, ts, ts_state, amount, bits, amount_bad, amount_null, key, missing,
                           channel, category, raw, reason, keys, sub, rows):
    """Of the rows ``rows[:m]`` (in input order), those identical on ``fields`` to an earlier one: counted,
    and with ``mark`` (dedupe) made DUPLICATE. Rows are sorted by a hash of the compared values, then
    compared exactly: a hash never decides alone."""
    if m < 2:
        return 0
    for j in range(m):
        keys[j] = _row_hash(rows[j], fields, ts, ts_state, amount, bits, amount_bad, amount_null, key, missing,
                            channel, category, raw)
    # By hash, ties by input order: equal rows end up together, earliest first.
    _sort_pairs(keys, rows, m, sub)
    count = 0
    start = 0
    while start < m:
        end = start + 1
        while end < m and keys[sub[end]] == keys[sub[start]]:
            end += 1
        for j in range(start + 1, end):
            rj = rows[sub[j]]
            for k in range(start, j):
                if _same_row(rows[sub[k]], rj, fields, ts, ts_state, amount, amount_bad, amount_null, key, missing,
                             channel, category, raw):
                    count += 1
                    if mark:
                        reason[rj] = DUPLICATE
                    break
        start = end
    return count


@serial
def _sort_pairs(major, minor, n, by):
    """by[:n] = the positions 0..n-1 ordered by (major, minor); insertion sort for the few rows
    a customer usually has, a stable two-pass argsort beyond."""
    late = False   # as in _line_order, without a branch per row
    for i in range(1, n):
        late |= (major[i] < major[i - 1]) | ((major[i] == major[i - 1]) & (minor[i] < minor[i - 1]))
    if not late:
        for i in range(n):
            by[i] = i
        return
    if n <= 48:
        for i in range(n):
            j = i - 1
            while j >= 0 and (major[by[j]] > major[i] or (major[by[j]] == major[i] and minor[by[j]] > minor[i])):
                by[j + 1] = by[j]
                j -= 1
            by[j + 1] = i
        return
    first = np.argsort(minor[:n], kind="mergesort")
    second = first[np.argsort(major[:n][first], kind="mergesort")]
    for i in range(n):
        by[i] = second[i]


@serial
def _row_hash(i, fields, ts, ts_state, amount, bits, amount_bad, amount_null, key, missing, channel, category, raw):
    h = np.uint64(0x9E3779B97F4A7C15)
    if fields & DEDUPE_TIME:
        h = mix64(h ^ np.uint64(ts_state[i]) ^ (np.uint64(ts[i]) if ts_state[i] != TS_MISSING else np.uint64(0)))
    if fields & DEDUPE_AMOUNT:
        a = amount[i]
        # Equal amounts hash alike: every NaN as one, -0.0 as 0.0 (they compare equal).
        b = np.uint64(0x7FF8000000000000) if np.isnan(a) else (np.uint64(0) if a == 0.0 else bits[i])
        h = mix64(h ^ b ^ np.uint64(amount_bad[i]) ^ (np.uint64(amount_null[i]) << np.uint64(1)))
    if fields & DEDUPE_ORDER:
        h = mix64(h ^ (np.uint64(0xFFFFFFFF) if missing[i] else np.uint64(key[i])))
    if fields & DEDUPE_CHANNEL:
        h = mix64(h ^ np.uint64(np.int64(channel[i])))
    if fields & DEDUPE_CATEGORY:
        h = mix64(h ^ np.uint64(np.int64(category[i])))
    if fields & DEDUPE_RAW:
        h = mix64(h ^ raw[i])
    return h


@serial
def _same_line(a, b, ts_state, amount, amount_bad, amount_null, channel, category, raw):
    """``_same_row`` on every field for two lines known to share their order id (not missing) and time."""
    x = amount[a]
    y = amount[b]
    return ((ts_state[a] == ts_state[b]) & (amount_bad[a] == amount_bad[b]) & (amount_null[a] == amount_null[b])
            & ((x == y) | (np.isnan(x) & np.isnan(y))) & (channel[a] == channel[b])
            & (category[a] == category[b]) & (raw[a] == raw[b]))


@serial
def _same_row(a, b, fields, ts, ts_state, amount, amount_bad, amount_null, key, missing, channel, category, raw):
    if fields & DEDUPE_TIME and (ts_state[a] != ts_state[b] or (ts_state[a] != TS_MISSING and ts[a] != ts[b])):
        return False
    if fields & DEDUPE_AMOUNT and (amount_bad[a] != amount_bad[b] or amount_null[a] != amount_null[b] or
                                   not (amount[a] == amount[b] or (np.isnan(amount[a]) and np.isnan(amount[b])))):
        return False
    if fields & DEDUPE_ORDER and (missing[a] != missing[b] or (not missing[a] and key[a] != key[b])):
        return False
    if fields & DEDUPE_CHANNEL and channel[a] != channel[b]:
        return False
    if fields & DEDUPE_CATEGORY and category[a] != category[b]:
        return False
    if fields & DEDUPE_RAW and raw[a] != raw[b]:
        return False
    return True
