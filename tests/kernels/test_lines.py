"""chunk_tally against NumPy on random chunks: usable rows' latest time, channel counts, rejected rows."""

from __future__ import annotations

import numpy as np
import pytest

from segmint.kernels.lines import OK, chunk_tally


@pytest.mark.parametrize(("n", "ok_share", "with_channel"), [(0, 1.0, True), (1, 1.0, True), (1, 0.0, True),
                                                             (5_000, 0.9, True), (5_000, 0.0, False),
                                                             (5_000, 0.5, False)])
def test_chunk_tally_matches_numpy(n, ok_share, with_channel):
    rng = np.random.default_rng(n)
    # reasons as the map holds them: a field of 40-byte records, so a strided view
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
