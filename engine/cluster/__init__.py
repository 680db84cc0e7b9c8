"""Faiss k-means with greedy k-means++ seeding, assignment, and automatic k."""

from segmint.engine.cluster.assign import Assignment, assign
from segmint.engine.cluster.kmeans import KMeansResult, fit_kmeans
from segmint.engine.cluster.select_k import KScan, select_k

__all__ = ["Assignment", "assign", "KMeansResult", "fit_kmeans", "KScan", "select_k"]
