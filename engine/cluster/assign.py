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
    """Nearest centroid of each row, in batches that fit the backend (host by default), so memory
    stays bounded. On the host the distances are exact float64 sums (kernels.distances); on the GPU
    each batch is copied to the card once, and results come back as host arrays.
    """
    backend = backend or HostBackend()
    index = backend.centroid_index(np.asarray(centroids, dtype=np.float64))
    seg = np.empty(x.shape[0], np.int32)
    dist = np.empty(x.shape[0], np.float32)
    margin = np.full(x.shape[0], np.inf, np.float32)
    step = backend.batch_rows(centroids.shape[1])
    for lo in range(0, x.shape[0], step):
        batch = backend.to_device(np.ascontiguousarray(x[lo:lo + step], dtype=np.float32))
        hi = lo + batch.shape[0]
        backend.nearest(batch, index, seg[lo:hi], dist[lo:hi], margin[lo:hi])
    return Assignment(seg, dist, margin)
