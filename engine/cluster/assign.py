"""Nearest centroid of every row, with its distance and the margin to the second nearest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmint.engine.cluster.backend import ArrayBackend, HostBackend

__all__ = ["Assignment", "assign"]


@dataclass(frozen=True)
class Assignment:
    segment: np.ndarray    # int32[n]
    distance: np.ndarray   # float32[n], Euclidean distance to the segment's centroid
    margin: np.ndarray     # float32[n], distance to the 2nd nearest minus distance (inf if k=1)

    @property
    def inertia(self) -> float:
        return float(np.sum(self.distance.astype(np.float64) ** 2))


def assign(x: np.ndarray, centroids: np.ndarray, backend: ArrayBackend | None = None) -> Assignment:
    """Exact L2 search in batches that fit the backend (host by default), so memory stays bounded.

    On the GPU each batch is copied to the card once; results come back as host arrays.
    """
    backend = backend or HostBackend()
    k, d = centroids.shape
    index = backend.flat_index(d)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    wide = backend.to_device(centroids.astype(np.float64))
    nn = min(2, k)
    seg = np.empty(x.shape[0], np.int32)
    dist = np.empty(x.shape[0], np.float32)
    margin = np.full(x.shape[0], np.inf, np.float32)
    step = backend.batch_rows(d)
    for lo in range(0, x.shape[0], step):
        batch = backend.to_device(np.ascontiguousarray(x[lo:lo + step], dtype=np.float32))
        _, idx = backend.search(index, batch, nn)
        hi = lo + batch.shape[0]
        seg[lo:hi] = backend.to_host(idx[:, 0])
        # Faiss' BLAS distances depend on the batch's shape in the last bits; recomputed
        # per row they are the same however customers are batched (or bucketed).
        backend.nearest_distances(batch, wide, idx, dist[lo:hi], margin[lo:hi])
    return Assignment(seg, dist, margin)
