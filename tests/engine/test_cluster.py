"""Clustering quality against scikit-learn, the auto-k scores, and determinism."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import davies_bouldin_score, silhouette_score

from segmint.engine.cluster.assign import assign
from segmint.engine.cluster.kmeans import fit_kmeans
from segmint.engine.cluster.select_k import davies_bouldin, select_k, silhouette
from segmint.engine.config import ClusterConfig
from segmint.engine.errors import ConfigError
from tests.fixtures import planted


def _inertias(x: np.ndarray, k: int, seeds) -> tuple[np.ndarray, np.ndarray]:
    ours = [assign(x, fit_kmeans(x, k, ClusterConfig(k=k, niter=30, seed=s)).centroids).inertia for s in seeds]
    sk = [KMeans(k, init="k-means++", n_init=1, max_iter=30, tol=0, random_state=s).fit(x).inertia_
          for s in seeds]
    return np.array(ours), np.array(sk)


# One planted set in the fast suite; the other two with -m slow.
@pytest.mark.parametrize("data_seed", [1, *(pytest.param(s, marks=pytest.mark.slow) for s in (4, 7))])
def test_inertia_no_worse_than_sklearn_on_planted_data(data_seed):
    # k-means is a local search: on one seed either side can land in a worse
    # optimum (measured: our greedy k-means++ and scikit-learn's reach the best
    # optimum equally often from one init). The bar is over seeds: with our
    # default restarts, mean inertia <= scikit-learn's single-init mean.
    ours, sk = _inertias(planted(data_seed, scale=12.0), 8, range(8))
    # Normal values of mean(ours) / mean(sk): 0.93 to 1.0.
    assert ours.mean() <= sk.mean() * (1 + 1e-6)
    # Best runs reach the same optimum, up to training on a sample (1024 rows per centroid,
    # 8,192 of these 20,000): measured 0.12% above full-data Lloyd's best.
    assert ours.min() <= sk.min() * (1 + 2e-3)


def test_mean_inertia_no_worse_than_sklearn_on_overlapping_data():
    ours, sk = _inertias(planted(0), 8, range(6))
    # Overlapping clusters have many local optima; scikit-learn's own runs spread
    # by 15% across seeds. Normal value of the mean ratio: about 0.98.
    assert ours.mean() <= sk.mean()


def test_mean_inertia_no_worse_than_sklearn_on_generated_customers(small_run):
    import polars as pl

    from segmint.engine.model import Model

    model = Model.load(small_run)
    x = model.scaler.transform(pl.read_parquet(small_run / "assignments"))
    ours, sk = [], []
    for seed in range(4):
        ours.append(assign(x, fit_kmeans(x, 8, ClusterConfig(k=8, seed=seed)).centroids).inertia)
        sk.append(KMeans(8, init="k-means++", n_init=1, max_iter=30, tol=0, random_state=seed).fit(x).inertia_)
    # Normal value: about 0.98 (local optima differ per seed; restarts win on average).
    assert np.mean(ours) <= np.mean(sk)


def test_training_sample_is_reported():
    x = planted(0, n=5000)
    fit = fit_kmeans(x, 4, ClusterConfig(k=4, max_points_per_centroid=100))
    assert fit.n_train == 400
    assert fit_kmeans(x, 8, ClusterConfig(k=8)).n_train == 5000    # 1024 per centroid: every row


def test_fit_is_deterministic():
    x = planted(1)
    a = fit_kmeans(x, 8, ClusterConfig(k=8, seed=5)).centroids
    b = fit_kmeans(x, 8, ClusterConfig(k=8, seed=5)).centroids
    np.testing.assert_array_equal(a, b)


def test_k_larger_than_customers_is_a_config_error():
    with pytest.raises(ConfigError, match="k=10 is larger than the number of customers"):
        fit_kmeans(planted(0, n=5), 10, ClusterConfig(k=10))


def test_assign_distance_and_margin():
    centroids = np.array([[0, 0], [10, 0], [0, 20]], np.float32)
    x = np.array([[1, 0], [9, 0], [0, 19], [5, 0]], np.float32)
    a = assign(x, centroids)
    assert a.segment.tolist() == [0, 1, 2, 0] or a.segment.tolist() == [0, 1, 2, 1]
    np.testing.assert_allclose(a.distance, [1, 1, 1, 5])
    np.testing.assert_allclose(a.margin[:3], [8, 8, 18])
    assert a.margin[3] == pytest.approx(0)


def test_silhouette_and_davies_bouldin_match_sklearn():
    x = planted(2, n=1500)
    labels = KMeans(5, n_init=1, random_state=0).fit(x).labels_.astype(np.int32)
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels), rel=1e-5)
    assert davies_bouldin(x, labels) == pytest.approx(davies_bouldin_score(x, labels), rel=1e-5)


def _four_segments() -> np.ndarray:
    """Four well-separated segments holding 40, 30, 20 and 10% of 1,000 rows; the 10% one lies
    nearest the 20% one, so k=3 merges those two (shares 40, 30, 30%)."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0, 0], [20, 0, 0, 0], [0, 20, 0, 0], [0, 20, 12, 0]], float)
    labels = np.repeat(np.arange(4), [400, 300, 200, 100])
    return (centers[labels] + rng.normal(0, 1, (labels.size, 4))).astype(np.float32)


def _scan(min_segment_share: float):
    scan = select_k(_four_segments(), ClusterConfig(k=None, k_min=2, k_max=5, min_segment_share=min_segment_share))
    assert [r["k"] for r in scan.rows] == [2, 3, 4, 5]
    return scan.k, {r["k"]: r["eligible"] for r in scan.rows}, {r["k"]: r["min_share"] for r in scan.rows}


def test_select_k_finds_the_planted_k():
    k, eligible, min_share = _scan(0.02)
    assert k == 4 and all(eligible.values())
    assert min_share[4] == pytest.approx(0.1)  # the planted segments exactly


def test_select_k_passes_over_a_k_whose_smallest_segment_is_below_min_share():
    # Measured silhouettes: k=4 0.84, k=3 0.81; k=4 would win but keeps a 10% segment.
    k, eligible, min_share = _scan(0.15)
    assert k == 3
    assert eligible == {2: True, 3: True, 4: False, 5: False}
    assert min_share[3] == pytest.approx(0.3)


def test_select_k_falls_back_to_k_min_when_no_k_is_eligible():
    # No clustering into 2 or more segments keeps every one above 55%.
    k, eligible, _ = _scan(0.55)
    assert k == 2 and not any(eligible.values())


@pytest.mark.parametrize(("select_sample", "k_max", "min_share", "k", "eligible", "fallback"), [
    # The scan and the final fit agree: no fallback (slow: the other two cover eligibility both ways).
    pytest.param(100, 8, 0.015, 4, [True, True, True, False, False], None, marks=pytest.mark.slow),
    # On a 200-customer scan sample k=8 keeps every segment above 1.5% and scores best, but its
    # final fit on all 3,000 customers does not: the next eligible k by silhouette (6) is kept.
    (200, 8, 0.015, 6, [True] * 5, ("k=8 left a segment below 1.5% after", "; k=6 kept")),
    # Nothing eligible: k_min.
    (100, 4, 0.6, 4, [False], ("no k in 4..4 kept every segment above 60%", "; k_min=4 used")),
])
def test_auto_k_run_reports_eligibility_and_any_fallback(small_data, tmp_path, select_sample, k_max, min_share,
                                                          k, eligible, fallback):
    import json

    import polars as pl

    from segmint.engine.config import RunConfig
    from segmint.engine.pipeline import run

    cfg = RunConfig(cluster=ClusterConfig(k=None, k_min=4, k_max=k_max, min_segment_share=min_share, seed=3,
                                          select_sample=select_sample))
    run([small_data / "transactions"], tmp_path / "run", cfg)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [r["k"] for r in manifest["k_scan"]] == list(range(4, k_max + 1))
    assert [r["eligible"] for r in manifest["k_scan"]] == eligible
    assert manifest["k"] == k
    note = manifest["clustering"].get("k_auto")
    if fallback is None:
        assert note is None
    else:
        assert note.startswith(fallback[0]) and note.endswith(fallback[1]), note
    sizes = pl.read_parquet(tmp_path / "run" / "assignments")["segment"].value_counts()["count"]
    assert sizes.len() == k
    if any(eligible):  # the kept k respects the minimum share on every customer, not only the scan sample
        assert sizes.min() / sizes.sum() >= min_share


def test_micro_segments_of_a_segment_without_customers_in_the_sample_are_its_centroid():
    # Segments after the last one with customers in the profile sample had no micro centroids (a model its loader
    # refuses), and one before it a centroid of NaN (a run that could not write its model).
    from segmint.engine.cluster.micro import MicroModel, assign_micro, fit_micro

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    rows = np.where(x[:, 0] > 0, 0, 2).astype(np.int32)   # segments 1 and 3 have no customer in the sample
    segments = rng.normal(size=(4, 3)).astype(np.float32)
    micro, report = fit_micro(x, rows, rng.random(400), ClusterConfig(micro_k=3, seed=1), segments)
    assert len(micro.centroids) == 4 and all(np.isfinite(c).all() for c in micro.centroids)
    np.testing.assert_array_equal(micro.centroids[1], segments[1:2])
    np.testing.assert_array_equal(micro.centroids[3], segments[3:4])
    assert [r["k"] for r in report["segments"]][1::2] == [1, 1]
    again = MicroModel.from_dict(micro.to_dict(), 3, 4)   # the loader takes what the fit writes
    assert all((a == b).all() for a, b in zip(again.centroids, micro.centroids, strict=True))
    assert (assign_micro(x[:5], np.full(5, 3, np.int32), micro) == 0).all()


def test_silhouette_holds_a_few_megabytes_of_distances_at_a_time():
    # Blocks of 1,000 rows held 160 MB of distances three times over on the 20,000 customers k = "auto" scores:
    # a run at --memory-limit 450MB peaked at 526 MB (helper sweep).
    import tracemalloc

    rng = np.random.default_rng(3)
    x = rng.normal(size=(12_000, 4)).astype(np.float32)
    labels = rng.integers(0, 5, 12_000)
    tracemalloc.start()
    value = silhouette(x, labels)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 48 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert value == pytest.approx(silhouette_score(x[:3000], labels[:3000]), abs=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_assignment_renumbered_for_reordered_centroids_is_assign_to_the_bit(seed):
    """The second level reuses the k-means check's assignment with the centroids renumbered: the same arrays as
    assigning afresh to the centroids in their new order, rows tied between two centroids (the lowest number wins,
    so a renumbering can change which) included; none on a device backend."""
    from segmint.engine.cluster.backend import HostBackend
    from segmint.engine.pipeline.fit import _reordered

    rng = np.random.default_rng(seed)
    # Whole-numbered points and centroids: a point halfway between two centroids is exactly as far from each, and
    # two equal centroids tie for every point nearest to them.
    centroids = rng.integers(-6, 7, (9, 4)).astype(np.float32)
    centroids[8] = centroids[3]
    x = rng.integers(-8, 9, (3_000, 4)).astype(np.float32)
    x[:40] = (centroids[0] + centroids[1]) / 2 + np.float32(0.0)
    fitted = assign(x, centroids)
    assert (fitted.margin == 0).sum() >= 40
    for order in (rng.permutation(9), np.arange(9)[::-1], np.arange(9)):
        again = np.ascontiguousarray(centroids[order])
        want = assign(x, again)
        got = _reordered(fitted, order, x, again, None)
        assert np.array_equal(got.segment, want.segment)
        assert np.array_equal(got.distance, want.distance) and np.array_equal(got.margin, want.margin)
    assert _reordered(fitted, order, x, again, HostBackend()) is None
