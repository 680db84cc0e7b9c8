"""Compile every Numba kernel ahead of a batch job (``segmint warmup``).

Each kernel runs once on tiny inputs; with ``cache=True`` the machine code is
written to NUMBA_CACHE_DIR, so later processes start without compiling. Cache
files are keyed to the CPU model: warm up on the machine that runs the job. The
map's kernels are compiled by mapping tiny tables of the column types the map meets
(integer and text ids, integer and text order ids, no order column, text and dictionary
channels), so that every specialisation a run uses is in the cache.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import polars as pl

from segmint.kernels.clv import (bgnbd_triple_sums, customer_triples, discounted_value, gamma_gamma_customer_terms,
                                 logs)
from segmint.kernels.codes import (dictionary_codes, direct_codes, int_codes, key_range, rehash, text_codes, text_hash,
                                   text_ids, view_indices)
from segmint.kernels.distances import nearest_centroids
from segmint.kernels.exact_sum import (MAX_PARTIALS, add_partial, group_partials, net_sum, round_partials,
                                       segment_sums)
from segmint.kernels.hashing import hash_buckets, hash_int64, hash_utf8, mix64
from segmint.kernels.kmeanspp import kmeanspp_greedy
from segmint.kernels.lines import chunk_tally, row_reasons
from segmint.kernels.moments import column_moments
from segmint.kernels.radix import DIGITS, count_top_digits, keys_with_top_digits, radix_sort, value_of_rank
from segmint.kernels.sequence import CATEGORY_SCRATCH, ORDER_FEATURES, line_row, order_row, sort_within
from segmint.kernels.synth import simulate_purchases

__all__ = ["warmup"]


def warmup(skip: tuple[str, ...] = ()) -> dict[str, float]:
    """Seconds spent compiling (or loading from cache) each kernel but those named in ``skip``."""
    one = np.ones(1)
    first = np.zeros(1, np.int32)
    offsets = np.array([0, 1], np.int64)
    calls = {
        "map": _map_tiny_tables,
        "narrowing": _narrow_tiny_table,
        "kmeanspp_greedy": lambda: (kmeanspp_greedy(np.ones((2, 2), np.float32), 0, np.zeros((1, 2)),
                                                    np.empty(2, np.int64)),
                                    kmeanspp_greedy(np.ones((2, 2)), 0, np.zeros((1, 2)), np.empty(2, np.int64))),
        "bgnbd_triple_sums": lambda: bgnbd_triple_sums(first, first, first, one, one, one, one * 2, 1.0, 1.0, 1.0, 1.0,
                                                       np.empty((1, 5))),
        "customer_triples": lambda: customer_triples(first, 1, first, 1),
        "gamma_gamma_customer_terms": lambda: gamma_gamma_customer_terms(one, one, one * 0, 1.0, 1.0, 1.0, np.empty((1, 4))),
        "logs": lambda: logs(one),
        "discounted_value": lambda: discounted_value(np.ones((1, 1)), np.zeros(1, np.intp), one, one, one,
                                                     np.empty(1), np.empty(1)),
        "simulate_purchases": lambda: simulate_purchases(
            0, np.zeros(1, np.int64), np.zeros(1), one, one * 0.5, np.zeros(1), np.zeros(1, np.int64), 1.0,
            one, one * 0.1, one * 2, np.ones((1, 1)), one, 1),
    }
    ints = np.zeros(1, np.int64)
    calls |= {
        "sort_within": lambda: (sort_within(offsets, ints, ints, np.empty(1, np.int64)),
                                sort_within(offsets, ints, np.zeros(1, np.int32), np.empty(1, np.int64))),  # cohorts
        "hash_int64": lambda: (hash_int64(ints, 0, np.empty(1, np.uint64)),
                               hash_int64(_readonly(ints), 0, np.empty(1, np.uint64))),
        "hash_utf8": lambda: [hash_utf8(o, d, 0, np.empty(1, np.uint64))
                              for o, d in ((offsets, np.zeros(1, np.uint8)),
                                           (_readonly(offsets), _readonly(np.zeros(1, np.uint8))))],
        "hash_buckets": lambda: hash_buckets(np.ones(1, np.uint64), 52, 3, np.empty(1, np.int32)),
        "group_partials": lambda: (group_partials(ints, one, np.zeros((1, MAX_PARTIALS)), np.zeros(1, np.int64)),
                                   group_partials(ints, _readonly(one), np.zeros((1, MAX_PARTIALS)),
                                                  np.zeros(1, np.int64))),
        "segment_sums": lambda: segment_sums(one, offsets, np.empty(1)),
        "nearest_centroids": lambda: nearest_centroids(np.ones((1, 1), np.float32), np.ones((1, 2)),
                                                       np.empty(1, np.int32), np.empty(1, np.float32),
                                                       np.empty(1, np.float32)),
        # The partition pass's reasons, the code tables' growth, and the building blocks the map's
        # kernels inline (callable on their own: tests and scoring one customer call them).
        "row_reasons": lambda: [row_reasons(np.zeros(1, np.int32), ints, np.zeros(1, np.uint8), amount,
                                            np.zeros(1, np.bool_), 1, 1, np.empty(1, np.uint8))
                                for amount in (one, _readonly(one))],
        # The partition's tally of a chunk's reasons (contiguous, where the map's are a field of its records),
        # times as made from Arrow's (writable) or parsed from text (read-only).
        "chunk_tally": lambda: [chunk_tally(np.zeros(1, np.uint8), ts, np.zeros(1, np.int32),
                                            np.zeros(1, np.int64)) for ts in (ints, _readonly(ints))],
        # Codes of keys the map reads from Arrow (read-only, through the tiny tables) and of keys computed
        # in NumPy (the CLV's distinct values and pairs, writable).
        "int_codes": lambda: [int_codes(keys, np.zeros(1, np.bool_), np.zeros(16, np.int64), np.full(16, -1, np.int32),
                                        np.zeros(2, np.int64), 0, np.empty(1, np.int32)) for keys in (ints, _readonly(ints))],
        "direct_codes": lambda: [direct_codes(keys, np.zeros(1, np.bool_), 0, np.full(1, -1, np.int32),
                                              np.zeros(2, np.int64), 0, np.empty(1, np.int32))
                                 for keys in (ints, _readonly(ints))],
        "key_range": lambda: [key_range(keys, np.zeros(1, np.bool_)) for keys in (ints, _readonly(ints))],
        # Text from Arrow: read-only where memory-mapped (the partition's scratch files).
        "text_codes": lambda: [text_codes(o, d, np.zeros(1, np.bool_), np.zeros(16, np.uint64),
                                          np.full(16, -1, np.int32), np.zeros(2, np.uint64), np.zeros(3, np.int64),
                                          np.zeros(2, np.uint8), 0, np.empty(1, np.int32))
                               for o in (offsets, _readonly(offsets))
                               for d in (np.zeros(1, np.uint8), _readonly(np.zeros(1, np.uint8)))],
        "text_ids": lambda: [text_ids(o, d, np.zeros(1, np.bool_), np.zeros(3, np.int64), np.zeros(2, np.uint8), 0,
                                      np.empty(1, np.int32))
                             for o in (offsets, _readonly(offsets))
                             for d in (np.zeros(1, np.uint8), _readonly(np.zeros(1, np.uint8)))],
        # Polars' text of channels and categories in a frame of many rows (Model.predict's): its views, read-only.
        "view_indices": lambda: view_indices(_readonly(np.zeros(2, np.uint64)), np.zeros(1, np.bool_),
                                             np.zeros(32, np.uint64), np.full(16, -1, np.int32),
                                             np.zeros(16, np.uint64), np.empty(1, np.int32)),
        # Parquet dictionaries' int32 indices, the partition scratch's int8 and int16 ones and Polars' uint32 ones (a
        # frame's Categorical columns), read-only as Arrow gives them.
        "dictionary_codes": lambda: [dictionary_codes(_readonly(np.zeros(1, dtype)), np.zeros(0, np.bool_),
                                                      np.zeros(1, np.int32), np.empty(1, np.int32))
                                     for dtype in (np.int8, np.int16, np.int32, np.uint32)]
        # and view_indices' numbers, coded in place (engine.codes.TextCodes).
        + [dictionary_codes(np.zeros(1, np.int32), np.zeros(0, np.bool_), np.zeros(1, np.int32),
                            np.empty(1, np.int32))],
        "rehash": lambda: (rehash(ints, 1, np.zeros(2, np.int64), np.full(2, -1, np.int32), True),
                           rehash(np.zeros(1, np.uint64), 1, np.zeros(2, np.uint64), np.full(2, -1, np.int32), False)),
        "text_hash": lambda: text_hash(np.zeros(1, np.uint8), 0, 1),
        "column_moments": lambda: column_moments(np.ones((1, 2))),   # the scaler's statistics
        "radix_sort": lambda: [radix_sort(v, np.empty(1), np.empty(1, np.uint64)) for v in (one, _readonly(one))],
        # The RFM cut points' (engine.quantiles): float and integer columns' chunks, read-only as Polars gives them.
        "count_top_digits": lambda: [count_top_digits(v, np.zeros(DIGITS, np.int64))
                                     for v in (one, _readonly(one), ints, _readonly(ints))],
        "keys_with_top_digits": lambda: [keys_with_top_digits(v, np.ones(DIGITS, np.bool_), np.empty(1, np.uint64),
                                                              np.zeros(DIGITS, np.int64))
                                         for v in (one, _readonly(one), ints, _readonly(ints))],
        "value_of_rank": lambda: value_of_rank(np.ones(1, np.uint64), 0, np.empty(1, np.uint64)),
        "mix64": lambda: mix64(np.uint64(1)),
        "add_partial": lambda: add_partial(np.zeros(MAX_PARTIALS), 0, 1.0),
        "round_partials": lambda: round_partials(np.zeros(MAX_PARTIALS), 1),
        "net_sum": lambda: net_sum(np.zeros(MAX_PARTIALS), 1, 1.0),
        "order_row": lambda: order_row(ints, one, np.zeros(1, np.int32), 1, 0, np.empty(len(ORDER_FEATURES)),
                                       np.empty(1)),
        "line_row": lambda: line_row(one, np.zeros(1, np.int32), 1, np.empty(3), np.empty(CATEGORY_SCRATCH, np.int64)),
    }
    seconds = {}
    for name, call in calls.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        call()
        seconds[name] = round(time.perf_counter() - t0, 3)
    return seconds


def _map_tiny_tables() -> None:
    """The map (engine.features.table.features_of) on two rows of each column type it reads fast."""
    from segmint.engine.config import Columns, RunConfig
    from segmint.engine.features.table import features_of

    when = dt.datetime(2024, 1, 1)
    # Two customers, as in any real bucket (the map gives one customer's outputs a spare row for the same layout).
    rows = {"ts": [when, when + dt.timedelta(days=3)] * 2, "amount": [1.0, 2.0] * 2, "channel": ["a", "b"] * 2,
            "category": ["x", "x"] * 2}
    for customer, order in (([1, 1, 2, 2], [7, 8, 9, 10]), (["a", "a", "b", "b"], ["o1", "o2", "o3", "o4"]),
                            ([1, 1, 2, 2], None)):
        frame = pl.DataFrame({"customer_id": customer, **rows, **({"order_id": order} if order else {})})
        cfg = RunConfig(columns=Columns(order="order_id" if order else None))
        for mode in ("features", "cohorts"):
            features_of(frame, cfg, as_of=when + dt.timedelta(days=5), now=when + dt.timedelta(days=5),
                        channels=None, mode=mode)
    # One customer of one line, as Model.predict may score: the records' fields of one line are contiguous, a
    # specialisation of its own (the first one-line customer's call compiled it).
    one = pl.DataFrame({"customer_id": [1], "order_id": [7], **{k: v[:1] for k, v in rows.items()}})
    features_of(one, RunConfig(columns=Columns(order="order_id")), as_of=when + dt.timedelta(days=5),
                now=when + dt.timedelta(days=5), channels=None, mode="arrays")
    # Every cell as text, as CSV files are read: the values parsed by the contract's expressions.
    text = pl.DataFrame({"customer_id": ["1", "1", "2", "2"], "order_id": ["o1", "o2", "o3", "o4"],
                         **{name: [str(v) for v in values] for name, values in rows.items()}})
    features_of(text, RunConfig(columns=Columns(order="order_id")), as_of=when + dt.timedelta(days=5),
                now=when + dt.timedelta(days=5), channels=None, mode="features")


def _narrow_tiny_table() -> None:
    """The partition's scratch narrowed and widened back (engine.io.narrowing), with nulls and without."""
    import pyarrow as pa

    from segmint.engine.io.narrowing import narrow, widen

    when = dt.datetime(2024, 1, 1)
    for mask in (None, np.array([False, True])):
        widen(narrow(pa.table({"id": pa.array([1, 2], pa.int64(), mask=mask),
                               "ts": pa.array([when, when], pa.timestamp("us"), mask=mask),
                               "amount": pa.array([1.0, 2.5], pa.float64(), mask=mask)})))


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view: arrays read from Arrow are, and Numba compiles a kernel once per array type."""
    view = array.view()
    view.flags.writeable = False
    return view
