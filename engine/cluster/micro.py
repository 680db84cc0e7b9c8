"""Micro-segments: a second level of k-means inside each segment (Faiss' two-level clustering).

Each segment's customers in the profile sample are clustered again, in the same scaled
space, into ``micro_k`` groups (or, with ``auto``, the k in 2..8 of best silhouette on
at most 2,000 of them). A micro-segment smaller than ``min_segment_share`` of its
segment or than ``min_segment_size`` customers is dissolved: its centroid is dropped,
so each of its customers goes to the nearest remaining sibling (one micro-segment can
spread over several); what was dissolved is counted. Micro-segments are numbered by decreasing size within their
segment and named ``<segment>.<nn>``, e.g. ``3.07``. Scoring a customer picks the
nearest micro centroid of its own segment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from segmint.engine.cluster.assign import assign
from segmint.engine.cluster.kmeans import fit_kmeans
from segmint.engine.cluster.select_k import silhouette
from segmint.engine.config import ClusterConfig
from segmint.engine.hashing import bottom_k

__all__ = ["MicroModel", "fit_micro", "assign_micro", "micro_names"]

_AUTO_RANGE = range(2, 9)
_AUTO_ROWS = 2_000


@dataclass(frozen=True)
class MicroModel:
    centroids: tuple[np.ndarray, ...]   # per segment row: float32[m, d], micro 0 the largest

    def to_dict(self) -> list[list[list[float]]]:
        return [c.astype(np.float64).tolist() for c in self.centroids]

    @classmethod
    def from_dict(cls, doc: list[list[list[float]]], d: int, k: int) -> MicroModel:
        """Checked as written (``k`` segments of ``d`` features): a list one short gave the last segment's
        customers micro-segment 0 of no centroid, and two centroids run together were reshaped into two."""
        if not isinstance(doc, list) or len(doc) != k:
            raise ValueError(f"micro must hold the centroids of each of the {k} segments")
        centroids = []
        for rows in doc:
            c = np.asarray(rows, dtype=np.float64)
            if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] != d or not np.isfinite(c).all():
                raise ValueError(f"micro centroids must be finite rows of {d} numbers, at least one per segment")
            centroids.append(c.astype(np.float32))
        return cls(tuple(centroids))


def fit_micro(x: np.ndarray, rows: np.ndarray, priority: np.ndarray, cfg: ClusterConfig,
              segments: np.ndarray) -> tuple[MicroModel, dict]:
    """Micro centroids for each segment row (``segments``: their centroids), from the sample ``x`` (scaled) and
    its segment ``rows``. A segment with no customer in the sample is one micro-segment, at its own centroid:
    segments after the last one seen had none (a model its loader refuses), one before it a centroid of NaN."""
    centroids, report = [], []
    for r in range(segments.shape[0]):
        members = np.flatnonzero(rows == r)
        if members.size == 0:
            centroids.append(segments[r: r + 1].astype(np.float32))
            report.append({"k": 1, "merged": 0})
            continue
        sub, pri = x[members], priority[members]
        k = _choose_k(sub, pri, cfg) if cfg.micro_k == "auto" else min(int(cfg.micro_k), len(members))
        if k < 2:
            centroids.append(sub.mean(axis=0, keepdims=True).astype(np.float32))
            report.append({"k": 1, "merged": 0})
            continue
        fit = fit_kmeans(sub, k, dataclasses.replace(cfg, nredo=1), pri)
        kept, merged = _merge_small(sub, fit.centroids, cfg)
        centroids.append(kept)
        report.append({"k": k, "merged": merged})
    return MicroModel(tuple(centroids)), {"micro_k": cfg.micro_k, "segments": report,
                                          "merged": sum(r["merged"] for r in report)}


def assign_micro(x: np.ndarray, rows: np.ndarray, micro: MicroModel) -> np.ndarray:
    """The micro number (within its segment) of each row of ``x`` whose segment row is ``rows``."""
    out = np.zeros(x.shape[0], np.int32)
    for r, cents in enumerate(micro.centroids):
        members = np.flatnonzero(rows == r)
        if members.size and cents.shape[0] > 1:
            out[members] = assign(np.ascontiguousarray(x[members]), cents).segment
    return out


def micro_names(segment: np.ndarray, micro: np.ndarray) -> list[str]:
    return [f"{s}.{m:02d}" for s, m in zip(segment.tolist(), micro.tolist(), strict=True)]


def _choose_k(x: np.ndarray, priority: np.ndarray, cfg: ClusterConfig) -> int:
    if x.shape[0] < 2 * min(_AUTO_RANGE):
        return 1
    sample = bottom_k(priority, _AUTO_ROWS)
    best, best_k = -np.inf, 1
    for k in _AUTO_RANGE:
        if k >= sample.size:
            break
        fit = fit_kmeans(x[sample], k, dataclasses.replace(cfg, nredo=1), priority[sample])
        labels = assign(np.ascontiguousarray(x[sample]), fit.centroids).segment
        score = silhouette(x[sample], labels)
        if score > best:
            best, best_k = score, k
    return best_k


def _merge_small(x: np.ndarray, centroids: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, int]:
    """Drop centroids whose groups are too small (their members join the nearest kept one), largest first."""
    floor = max(cfg.min_segment_share * x.shape[0], cfg.min_segment_size)
    merged = 0
    while centroids.shape[0] > 1:
        sizes = np.bincount(assign(x, centroids).segment, minlength=centroids.shape[0])
        smallest = int(np.argmin(sizes))
        if sizes[smallest] >= floor:
            break
        centroids = np.delete(centroids, smallest, axis=0)
        merged += 1
    sizes = np.bincount(assign(x, centroids).segment, minlength=centroids.shape[0])
    return np.ascontiguousarray(centroids[np.argsort(-sizes, kind="stable")], dtype=np.float32), merged

