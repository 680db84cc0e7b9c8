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


def planted(seed: int, n: int = 20_000, k: int = 8, d: int = 6, scale: float = 4.0) -> np.ndarray:
    """Skewed planted clusters: sizes differ up to 30x, spreads 4x, like customer segments."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, scale, (k, d))
    sizes = rng.dirichlet(np.full(k, 0.7))
    labels = rng.choice(k, n, p=sizes)
    spread = rng.uniform(0.5, 2.0, k)[labels, None]
    return (centers[labels] + rng.normal(0, 1, (n, d)) * spread).astype(np.float32)


def _inertias(x: np.ndarray, k: int, seeds) -> tuple[np.ndarray, np.ndarray]:
    ours = [assign(x, fit_kmeans(x, k, ClusterConfig(k=k, niter=30, seed=s)).centroids).inertia for s in seeds]
    sk = [KMeans(k, init="k-means++", n_init=1, max_iter=30, tol=0, random_state=s).fit(x).inertia_
          for s in seeds]
    return np.array(ours), np.array(sk)


@pytest.mark.parametrize("data_seed", [1, 4, 7])
def test_inertia_no_worse_than_sklearn_on_planted_data(data_seed):
    # k-means is a local search: on one seed either side can land in a worse
    # optimum (measured: our greedy k-means++ and scikit-learn's reach the best
    # optimum equally often from one init). The bar is over seeds: with our
    # default restarts, mean inertia <= scikit-learn's single-init mean.
    ours, sk = _inertias(planted(data_seed, scale=12.0), 8, range(8))
    # Normal values of mean(ours) / mean(sk): 0.93 to 1.0.
    assert ours.mean() <= sk.mean() * (1 + 1e-6)
    # Best runs reach the same optimum, up to 30 iterations' convergence (~0.01%).
    assert ours.min() <= sk.min() * (1 + 1e-3)


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
    assert fit_kmeans(x, 4, ClusterConfig(k=4)).n_train == 5000


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


def test_select_k_finds_planted_k_and_respects_min_share():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, (5, 4))
    x = (centers[rng.integers(0, 5, 6000)] + rng.normal(0, 0.5, (6000, 4))).astype(np.float32)
    scan = select_k(x, ClusterConfig(k=None, k_min=2, k_max=9))
    assert scan.k == 5
    assert [r["k"] for r in scan.rows] == list(range(2, 10))
    strict = select_k(x, ClusterConfig(k=None, k_min=2, k_max=9, min_segment_share=0.3))
    assert all(r["min_share"] >= 0.3 for r in strict.rows if r["k"] == strict.k) or strict.k == 2
