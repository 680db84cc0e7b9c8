"""Segment matching on the customers two runs share, centroids deciding the rest; against brute force."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from segmint.engine.cluster.matching import match_segments, optimal_overlap
from segmint.engine.preprocess import Scaler

SCALER = Scaler(features=("f0", "f1"), log=(False, False), mean=(0.0, 0.0), std=(1.0, 1.0))


def _previous(centroids, ids):
    return SimpleNamespace(scaler=SCALER, centroids=np.asarray(centroids, np.float32), segment_ids=tuple(ids),
                           names=tuple(f"name {i}" for i in ids), next_segment_id=max(ids) + 1,
                           provenance={"run_id": "before"})


def _brute_force(table: np.ndarray) -> int:
    """The largest sum of a one-to-one pairing of rows and columns, by trying every one."""
    rows, cols = table.shape
    if rows <= cols:
        return max(sum(table[r, c] for r, c in enumerate(p)) for p in itertools.permutations(range(cols), rows))
    return _brute_force(table.T)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 4)])
def test_optimal_overlap_is_the_best_relabelling(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        table = rng.integers(0, 50, shape)
        assert optimal_overlap(table) == _brute_force(table)


def test_customers_decide_the_pairs_wherever_the_centroids_lie():
    # The previous segments 10..14 hold the same customers as new rows in the order perm, but every
    # previous centroid lies far from every new one: centroids alone would keep no id.
    perm = [3, 0, 4, 1, 2]
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 15, (5, 5))
    shared[np.arange(5), perm] += 400
    new = rng.normal(0, 1, (5, 2))
    m = match_segments(new, SCALER, shared.sum(axis=1) + 50, _previous(new[::-1] + 10.0, range(10, 15)), 1.0, shared)
    assert list(m.ids) == [10 + p for p in perm]
    assert m.names == (None,) * 5  # far from the previous centroids: ids kept, names made afresh
    report = m.report
    assert report["method"] == "customers" and report["new_ids"] == [] and report["vanished_ids"] == []
    assert {p["by"] for p in report["pairs"]} == {"customers"}
    kept = report["shared_customers"]
    assert kept["kept_id"] == sum(shared[r, p] for r, p in enumerate(perm)) == _brute_force(shared)
    assert kept["kept_share"] == kept["optimal_share"] == pytest.approx(_brute_force(shared) / shared.sum(), abs=1e-6)


def test_a_segment_of_newcomers_is_new_unless_its_centroid_is_a_previous_one():
    # Previous segments 0..3; now segments 1 and 2 have merged into row 1, and row 3 is 500 newcomers
    # with 4 returning customers from segment 2: the optimal pairing gives row 3 segment 2's id.
    shared = np.array([[300, 2, 0, 1], [3, 250, 240, 0], [0, 1, 2, 280], [0, 0, 4, 0]])
    sizes = shared.sum(axis=1) + np.array([20, 30, 10, 500])
    centroids = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [9.0, 9.0]])
    previous = _previous([[0.0, 0.1], [3.1, 0.0], [3.5, 0.5], [0.1, 3.0]], range(4))
    m = match_segments(centroids, SCALER, sizes, previous, 1.0, shared)
    assert list(m.ids) == [0, 1, 3, 4] and m.vanished == (2,) and m.next_id == 5
    assert m.report["new_ids"] == [4]
    # The same newcomers in a segment lying where segment 2 was: the centroids keep its id.
    near = centroids.copy()
    near[3] = [3.4, 0.4]
    m = match_segments(near, SCALER, sizes, previous, 1.0, shared)
    assert list(m.ids) == [0, 1, 3, 2] and m.vanished == ()
    assert [p["by"] for p in m.report["pairs"]] == ["customers", "customers", "centroids", "customers"]


def test_without_shared_customers_the_centroids_match_and_the_report_says_why():
    previous = _previous([[0.0, 0.0], [5.0, 5.0]], (7, 3))
    m = match_segments(np.array([[5.2, 5.0], [0.0, 0.3], [-6.0, 2.0]]), SCALER, np.array([10, 20, 5]), previous, 1.0,
                       None, "ids matched on centroids: because")
    assert list(m.ids) == [3, 7, 8] and m.names[:2] == ("name 3", "name 7")
    assert m.report["method"] == "centroids" and m.report["note"] == "ids matched on centroids: because"
    assert "shared_customers" not in m.report
