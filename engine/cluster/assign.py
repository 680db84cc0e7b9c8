"""Nearest centroid of every row, with its distance and the margin to the second nearest."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

__all__ = ["Assignment", "assign", "BATCH_ROWS"]

BATCH_ROWS = 1_000_000


@dataclass(frozen=True)
class Assignment:
    segment: np.ndarray    # int32[n]
    distance: np.ndarray   # float32[n], Euclidean distance to the segment's centroid
    margin: np.ndarray     # float32[n], distance to the 2nd nearest minus distance (inf if k=1)

    @property
    def inertia(self) -> float:
        return float(np.sum(self.distance.astype(np.float64) ** 2))


def assign(x: np.ndarray, centroids: np.ndarray) -> Assignment:
    """Exact L2 search in batches of BATCH_ROWS rows (memory stays bounded)."""
    k, d = centroids.shape
    index = faiss.IndexFlatL2(d)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    nn = min(2, k)
    seg = np.empty(x.shape[0], np.int32)
    dist = np.empty(x.shape[0], np.float32)
    margin = np.full(x.shape[0], np.inf, np.float32)
    for lo in range(0, x.shape[0], BATCH_ROWS):
        batch = np.ascontiguousarray(x[lo:lo + BATCH_ROWS], dtype=np.float32)
        _, idx = index.search(batch, nn)
        hi = lo + batch.shape[0]
        seg[lo:hi] = idx[:, 0]
        # Faiss' BLAS distances depend on the batch's shape in the last bits; recomputed
        # per row they are the same however customers are batched (or bucketed).
        d1 = _row_distance(batch, centroids[idx[:, 0]])
        dist[lo:hi] = d1
        if nn == 2:
            margin[lo:hi] = _row_distance(batch, centroids[idx[:, 1]]) - d1
    return Assignment(seg, dist, margin)


def _row_distance(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    diff = x.astype(np.float64) - c.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float32)
