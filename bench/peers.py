"""What users would otherwise use, run on the same data: DuckDB SQL, scikit-learn, plain Faiss."""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np

__all__ = ["duckdb_aggregates", "sklearn_kmeans", "faiss_default_kmeans"]


def duckdb_aggregates(transactions: Path, threads: int) -> tuple[float, int]:
    """Seconds and rows of the plain per-customer aggregate query (count, sum, min/max time, mean)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET enable_progress_bar = false")
    t0 = time.perf_counter()
    rows = con.sql(f"""
        SELECT customer_id, count(*) AS lines, sum(amount) AS total, min(ts) AS first_ts,
               max(ts) AS last_ts, avg(amount) AS mean_amount
        FROM read_parquet('{transactions}/*.parquet')
        GROUP BY customer_id""").to_arrow_table().num_rows
    return time.perf_counter() - t0, rows


def sklearn_kmeans(x: np.ndarray, k: int, niter: int, seed: int) -> tuple[float, np.ndarray]:
    """Seconds and centroids of KMeans(init='k-means++', n_init=1) with the same k and iterations."""
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    km = KMeans(k, init="k-means++", n_init=1, max_iter=niter, tol=0, random_state=seed).fit(x)
    return time.perf_counter() - t0, km.cluster_centers_.astype(np.float32)


def faiss_default_kmeans(x: np.ndarray, k: int, niter: int, seed: int) -> tuple[float, np.ndarray]:
    """Seconds and centroids of faiss.Kmeans with its defaults (random init, 256 points per centroid)."""
    t0 = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed)
    km.train(x)
    return time.perf_counter() - t0, km.centroids
