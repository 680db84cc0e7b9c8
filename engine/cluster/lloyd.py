"""Lloyd iterations with the data resident on one backend (the card, for the GPU path).

``faiss.Kmeans(gpu=True)`` copies the training data to the card on every
iteration; here it is copied once by the caller. Each iteration follows Faiss'
``Clustering::train`` step for step, so that from the same initial centroids the
result matches the CPU path: exact nearest centroid (Faiss flat index), inertia
summed in float64, new centroids as cluster means, empty clusters refilled by
splitting a cluster picked with probability growing with its size.

The centroid update sorts rows by cluster and takes differences of a float64
running sum: no atomic additions, so the same input gives the same bits on every
run, on the host and on the card.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segmint.engine.cluster.backend import ArrayBackend

__all__ = ["lloyd", "cluster_sums"]

# Faiss' relative perturbation of a split centroid and the salt of its split RNG.
SPLIT_EPS = 1.0 / 1024.0
_SPLIT_SALT = 15486557


def lloyd(backend: ArrayBackend, x: Any, init: np.ndarray, niter: int, seed: int) -> tuple[np.ndarray, float]:
    """``niter`` Lloyd iterations over ``x`` (float32[n, d] on ``backend``) from ``init`` (float32[k, d]).

    Returns the final centroids (host float32[k, d]) and the inertia of the last
    assignment step (sum of squared distances, as Faiss reports it).
    """
    d = x.shape[1]
    k = init.shape[0]
    centroids = np.array(init, dtype=np.float32, order="C")
    index = backend.flat_index(d)
    rng = np.random.default_rng([seed, _SPLIT_SALT])
    inertia = 0.0
    for _ in range(niter):
        index.reset()
        index.add(centroids)
        dist, labels = backend.search(index, x, 1)
        inertia = float(backend.xp.sum(dist, dtype=backend.xp.float64))
        sums, counts = cluster_sums(backend.xp, x, labels[:, 0], k)
        counts = backend.to_host(counts)
        filled = counts > 0
        centroids[filled] = (backend.to_host(sums)[filled] / counts[filled, None]).astype(np.float32)
        _split_empty(centroids, counts, rng)
    return centroids, inertia


def cluster_sums(xp: Any, x: Any, labels: Any, k: int) -> tuple[Any, Any]:
    """Per-cluster float64 sums of the rows of ``x`` and row counts (int64[k]), empty clusters 0."""
    counts = xp.bincount(labels, minlength=k)
    order = xp.argsort(labels)
    running = xp.cumsum(x[order], axis=0, dtype=xp.float64)
    ends = xp.cumsum(counts)
    return _before(running, ends) - _before(running, ends - counts), counts


def _before(running: Any, stop: Any) -> Any:
    """Sum of the first ``stop[c]`` sorted rows, per cluster c (0 where stop is 0)."""
    at = running[stop - 1]
    at[stop == 0] = 0.0
    return at


def _split_empty(centroids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> None:
    """Faiss' ``split_clusters``: an empty centroid takes a copy of a cluster picked with probability
    proportional to (size - 1), both moved apart by SPLIT_EPS; sizes are taken as split in half."""
    k, d = centroids.shape
    sign = np.where(np.arange(d) % 2 == 0, 1.0, -1.0).astype(np.float32)
    for ci in np.flatnonzero(counts == 0):
        weight = np.maximum(counts - 1, 0).astype(np.float64)
        if weight.sum() == 0:  # every non-empty cluster holds one point: nothing to split
            break
        cj = int(rng.choice(k, p=weight / weight.sum()))
        centroids[ci] = centroids[cj] * (1 + sign * SPLIT_EPS)
        centroids[cj] = centroids[cj] * (1 - sign * SPLIT_EPS)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]
