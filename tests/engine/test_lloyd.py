"""The GPU path's Lloyd iterations and device choice, run on the host backend (NumPy + Faiss CPU).

The same functions run on the card with CuPy arrays (tests/engine/test_gpu.py); here
they are checked against Faiss' CPU k-means from the same initial centroids, and the
centroid update against a plain per-row loop.
"""

import faiss
import numpy as np
import pytest

from segmint.engine.cluster import device as device_mod
from segmint.engine.cluster.assign import assign
from segmint.engine.cluster.backend import HostBackend, gpu_missing
from segmint.engine.cluster.kmeans import fit_kmeans, kmeanspp_init
from segmint.engine.cluster.lloyd import cluster_sums, lloyd
from segmint.engine.config import ClusterConfig
from segmint.engine.errors import ConfigError
from tests.fixtures import faiss_lloyd, planted


def reference_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((k, x.shape[1]))
    counts = np.zeros(k, np.int64)
    for row, c in zip(x, labels, strict=True):
        sums[c] += row.astype(np.float64)
        counts[c] += 1
    return sums, counts


@pytest.mark.parametrize("n, k", [(1, 1), (1, 5), (7, 3), (500, 40), (2000, 7)])
def test_cluster_sums_equal_a_plain_loop(n, k):
    rng = np.random.default_rng(n * 31 + k)
    x = rng.normal(5, 3, (n, 4)).astype(np.float32)
    # Labels cover only part of the range: empty clusters in the middle and at both ends.
    labels = rng.integers(1, max(2, k - 1), n) if k > 2 else rng.integers(0, k, n)
    sums, counts = cluster_sums(np, x, labels, k)
    want_sums, want_counts = reference_sums(x, labels, k)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(sums, want_sums, rtol=1e-12, atol=1e-9)
    assert np.all(sums[counts == 0] == 0)


@pytest.mark.parametrize("data_seed, k", [(1, 8), (4, 16), (0, 8)])
def test_lloyd_matches_faiss_cpu_from_the_same_init(data_seed, k):
    x = planted(data_seed, n=30_000, k=8, d=6, scale=6.0)
    init = kmeanspp_init(x, k, seed=data_seed)
    ours, ours_inertia = lloyd(HostBackend(), x, init, niter=20, seed=data_seed)
    theirs, their_inertia = faiss_lloyd(x, init, niter=20, seed=data_seed)
    # The bar for the GPU path: inertia equal to the CPU path's within 0.1%.
    assert abs(ours_inertia / their_inertia - 1) < 1e-3
    # Measured: centroids agree to about 2e-5 (float64 vs Faiss' float32 sums).
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert abs(assign(x, ours).inertia / assign(x, theirs).inertia - 1) < 1e-3
    assert ours.dtype == np.float32 and ours.shape == init.shape


def test_lloyd_refills_empty_clusters_like_faiss():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (5_000, 4)).astype(np.float32)
    init = kmeanspp_init(x, 6, seed=1)
    init[4] = 1e4      # nearest to no point
    init[5] = init[0]  # a duplicate: loses every tie to centroid 0
    for centroids in (lloyd(HostBackend(), x, init, niter=10, seed=3)[0], faiss_lloyd(x, init, 10, 3)[0]):
        sizes = np.bincount(assign(x, centroids).segment, minlength=6)
        assert np.all(sizes > 0), sizes
        assert np.isfinite(centroids).all()
        assert np.abs(centroids).max() < 10


def test_lloyd_with_every_point_a_centroid_keeps_them():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    centroids, inertia = lloyd(HostBackend(), x, x.copy(), niter=3, seed=0)
    np.testing.assert_array_equal(centroids, x)
    assert inertia == 0.0


def test_lloyd_is_deterministic():
    x = planted(2, n=10_000)
    init = kmeanspp_init(x, 12, seed=0)
    a = lloyd(HostBackend(), x, init, niter=15, seed=0)
    b = lloyd(HostBackend(), x, init, niter=15, seed=0)
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]


def test_fit_kmeans_on_a_backend_matches_the_cpu_path():
    x = planted(7, n=40_000, scale=8.0)
    cfg = ClusterConfig(k=8, niter=25, nredo=2, max_points_per_centroid=2_000, seed=4)
    cpu = fit_kmeans(x, 8, cfg)
    host = fit_kmeans(x, 8, cfg, backend=HostBackend())
    assert host.n_train == cpu.n_train == 16_000 and host.n_init == cpu.n_init
    assert abs(host.train_inertia / cpu.train_inertia - 1) < 1e-3


def test_assign_on_small_batches_equals_one_batch():
    class TinyBatches(HostBackend):
        def batch_rows(self, d: int) -> int:
            return 97

    x = planted(3, n=2_000)
    centroids = kmeanspp_init(x, 5, seed=0)
    whole, batched = assign(x, centroids), assign(x, centroids, TinyBatches())
    for field in ("segment", "distance", "margin"):
        assert getattr(whole, field).tobytes() == getattr(batched, field).tobytes()


def test_device_choice(monkeypatch):
    monkeypatch.setattr(device_mod, "gpu_missing", lambda: "CuPy is not installed")
    assert device_mod.resolve_device("cpu") == "cpu"
    assert device_mod.resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="no usable GPU: CuPy is not installed"):
        device_mod.resolve_device("gpu")
    monkeypatch.setattr(device_mod, "gpu_missing", lambda: None)
    assert device_mod.resolve_device("auto") == "gpu"
    assert device_mod.resolve_device("gpu") == "gpu"
    assert device_mod.resolve_device("cpu") == "cpu"
    assert device_mod.backend_for("cpu") is None


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="this machine's Faiss sees a GPU")
def test_gpu_missing_names_faiss_when_it_is_the_cpu_build():
    assert "Faiss sees no GPU" in gpu_missing()
