"""k-means: greedy k-means++ seeding (a Numba kernel) followed by Lloyd iterations.

On the CPU the iterations are Faiss' (``faiss.Kmeans``); on the GPU they run with
the training sample copied to the card once (engine.cluster.lloyd), from the
same seeding, so both paths start from the same centroids.

Faiss seeds at random by default, and its plain k-means++ lacks the greedy
candidate step; both give worse optima on skewed customer data (measured:
``python -m segmint.bench.kmeans_init``). Restarts run on a small seeding sample
and only the best goes on to the training sample: most of the gain of restarts
for a fraction of their cost (bench/README.md). Faiss trains on at most
``max_points_per_centroid * k`` points; we draw that sample ourselves so
that the count is known and reported (``KMeansResult.n_train``), never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmint.engine.cluster.backend import ArrayBackend
from segmint.engine.cluster.lloyd import lloyd
from segmint.engine.config import ClusterConfig
from segmint.engine.errors import ConfigError
from segmint.engine.hashing import bottom_k
from segmint.kernels.hashing import hash_int64
from segmint.kernels.kmeanspp import kmeanspp_greedy

__all__ = ["KMeansResult", "fit_kmeans", "kmeanspp_init", "row_priority"]


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray     # float32[k, d]
    train_inertia: float      # sum of squared distances over the training sample
    n_train: int              # points the centroids were trained on
    n_init: int               # points k-means++ seeding saw


def fit_kmeans(x: np.ndarray, k: int, cfg: ClusterConfig, priority: np.ndarray | None = None,
               backend: ArrayBackend | None = None, init: np.ndarray | None = None) -> KMeansResult:
    """Cluster the rows of ``x`` (float32[n, d]) into ``k`` centroids.

    The training sample is the ``max_points_per_centroid * k`` rows of lowest
    ``priority`` (a stable hash of each row's customer; by default of its
    position), and the seeding sample the ``init_points_per_centroid * k`` lowest
    of those, so samples are sets of customers, whatever their row order. Each of
    ``nredo`` restarts (seeds ``seed, seed + 1, ...``) seeds by k-means++ and runs
    Lloyd on the seeding sample; the one of lowest inertia there is carried to the
    training sample for the final ``niter`` iterations. Same input, config and thread
    count: same centroids. ``backend`` (engine.cluster.backend) runs the iterations
    with the samples resident there; None runs Faiss' CPU k-means. ``init`` (float[k, d])
    starts from given centroids instead (a warm start from a previous model) and iterates on
    every row of ``x``: without restarts to pay for, every row costs little, and a
    ``max_points_per_centroid`` sample drawn by another seed would move about 1% of the
    customers between two runs on the same data (bench/README.md, stable ids).
    """
    n = x.shape[0]
    if k > n:
        msg = f"k={k} is larger than the number of customers ({n}); lower --k"
        raise ConfigError(msg)
    run = (lambda pts, start, seed: lloyd(backend, backend.to_device(pts), start, cfg.niter, seed)) if backend \
        else (lambda pts, start, seed: _faiss_kmeans(pts, start, cfg.niter, seed))
    if init is not None:
        centroids, inertia = run(np.ascontiguousarray(x, dtype=np.float32),
                                 np.ascontiguousarray(init, dtype=np.float32), cfg.seed)
        return KMeansResult(centroids, inertia, n, 0)
    priority = row_priority(n, cfg.seed) if priority is None else priority
    train_rows = bottom_k(priority, cfg.max_points_per_centroid * k)
    train = x[train_rows]
    init_rows = bottom_k(priority[train_rows], cfg.init_points_per_centroid * k)
    # Restarts are cheap on the seeding sample; only the best is carried to the training sample.
    sample = train[init_rows]
    starts = [run(sample, kmeanspp_init(sample, k, cfg.seed + redo), cfg.seed + redo) for redo in range(cfg.nredo)]
    start = min(starts, key=lambda fit: fit[1])[0]
    centroids, inertia = run(train, start, cfg.seed)
    return KMeansResult(centroids, inertia, train.shape[0], init_rows.size)


def kmeanspp_init(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ centres (float32[k, d]) chosen among the rows of ``x``."""
    rng = np.random.default_rng([seed, 3])
    n_trials = 2 + int(np.log(k))
    first = int(rng.integers(x.shape[0]))
    uniforms = rng.random((max(k - 1, 0), n_trials))
    idx = np.empty(k, np.int64)
    kmeanspp_greedy(x, first, uniforms, idx)
    return np.ascontiguousarray(x[idx], dtype=np.float32)


def _faiss_kmeans(train: np.ndarray, init: np.ndarray, niter: int, seed: int) -> tuple[np.ndarray, float]:
    import faiss  # loaded when clustering starts, not with the pipeline

    k, d = init.shape
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, verbose=False,
                      max_points_per_centroid=max(1, -(-train.shape[0] // k)), min_points_per_centroid=1)
    inertia = float(km.train(train, init_centroids=init))
    return km.centroids.copy(), inertia


def row_priority(n: int, seed: int) -> np.ndarray:
    """Sampling priority of rows by position, for callers without customer ids."""
    out = np.empty(n, np.uint64)
    hash_int64(np.arange(n, dtype=np.int64), seed, out)
    return out
