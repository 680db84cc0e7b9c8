"""Compile every Numba kernel ahead of a batch job (``segmint warmup``).

Each kernel runs once on tiny inputs; with ``cache=True`` the machine code is
written to NUMBA_CACHE_DIR, so later processes start without compiling. Cache
files are keyed to the CPU model: warm up on the machine that runs the job.
"""

from __future__ import annotations

import time

import numpy as np

from segmint.kernels.clv import bgnbd_customer_terms, gamma_gamma_customer_terms, nbd_customer_terms
from segmint.kernels.distances import nearest_distances
from segmint.kernels.exact_sum import MAX_PARTIALS, group_partials, segment_sums
from segmint.kernels.grouping import group_rows, sort_segments, take
from segmint.kernels.hashing import hash_int64, hash_utf8
from segmint.kernels.kmeanspp import kmeanspp_greedy
from segmint.kernels.sequence import ORDER_FEATURES, line_features, order_features, sort_within
from segmint.kernels.synth import simulate_purchases

__all__ = ["warmup"]


def warmup(skip: tuple[str, ...] = ()) -> dict[str, float]:
    """Seconds spent compiling (or loading from cache) each kernel but those named in ``skip``."""
    one = np.ones(1)
    offsets = np.array([0, 1], np.int64)
    calls = {
        "order_features": lambda: order_features(offsets, np.zeros(1, np.int64), one, np.zeros(1, np.int32), 0,
                                                 np.empty((1, len(ORDER_FEATURES))), np.empty((1, 1))),
        "line_features": lambda: line_features(offsets, one, np.zeros(1, np.int32), np.empty((1, 3))),
        "kmeanspp_greedy": lambda: (kmeanspp_greedy(np.ones((2, 2), np.float32), 0, np.zeros((1, 2)),
                                                    np.empty(2, np.int64)),
                                    kmeanspp_greedy(np.ones((2, 2)), 0, np.zeros((1, 2)), np.empty(2, np.int64))),
        "bgnbd_customer_terms": lambda: bgnbd_customer_terms(one, one, one * 2, 1.0, 1.0, 1.0, 1.0, np.empty((1, 5))),
        "nbd_customer_terms": lambda: nbd_customer_terms(one, one * 2, 1.0, 1.0, np.empty((1, 3))),
        "gamma_gamma_customer_terms": lambda: gamma_gamma_customer_terms(one, one, 1.0, 1.0, 1.0, np.empty((1, 4))),
        "simulate_purchases": lambda: simulate_purchases(
            0, np.zeros(1, np.int64), np.zeros(1), one, one * 0.5, np.zeros(1), np.zeros(1, np.int64), 1.0,
            one, one * 0.1, one * 2, np.ones((1, 1)), one, 1),
    }
    ints = np.zeros(1, np.int64)
    calls |= {
        "group_rows": lambda: group_rows(ints, 1, np.empty(1, np.int64), np.empty(2, np.int64)),
        "sort_segments": lambda: sort_segments(offsets, np.zeros(1, np.int64), ints, ints),
        # One specialisation per column type the feature table gathers.
        "take": lambda: [take(np.zeros(1, t), ints, np.empty(1, t)) for t in (np.int64, np.float64, np.int32)],
        "sort_within": lambda: sort_within(offsets, ints, ints, np.empty(1, np.int64)),
        "hash_int64": lambda: hash_int64(ints, 0, np.empty(1, np.uint64)),
        "hash_utf8": lambda: hash_utf8(offsets, np.zeros(1, np.uint8), 0, np.empty(1, np.uint64)),
        "group_partials": lambda: group_partials(ints, one, np.zeros((1, MAX_PARTIALS)), np.zeros(1, np.int64)),
        "segment_sums": lambda: segment_sums(one, offsets, np.empty(1)),
        "nearest_distances": lambda: nearest_distances(np.ones((1, 1), np.float32), np.ones((1, 1)),
                                                       np.zeros((1, 2), np.int64), np.empty(1, np.float32),
                                                       np.empty(1, np.float32)),
    }
    seconds = {}
    for name, call in calls.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        call()
        seconds[name] = round(time.perf_counter() - t0, 3)
    return seconds
