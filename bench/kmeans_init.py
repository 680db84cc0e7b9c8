"""Seeding choices on a run's customers: ``python -m segmint.bench.kmeans_init RUN_DIR --k 8 32``.

Compares, on the standardised features of a finished run, final inertia over
all customers (relative to scikit-learn KMeans(init='k-means++', n_init=1),
same k and 30 iterations) and wall time of: segmint's clustering (greedy
k-means++ seeding, 3 restarts), the same with one restart, Faiss with its
random and its plain k-means++ init at segmint's sample size, and Faiss with
all its defaults. Three seeds each.
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np
import polars as pl

from segmint.engine.cluster.assign import assign
from segmint.engine.cluster.kmeans import fit_kmeans
from segmint.engine.config import ClusterConfig
from segmint.engine.model import Model

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--k", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    from sklearn.cluster import KMeans

    x = Model.load(args.run_dir).scaler.transform(pl.read_parquet(f"{args.run_dir}/assignments"))
    d = x.shape[1]
    report = {"customers": x.shape[0], "dims": d}
    for k in args.k:
        rows: dict[str, list[tuple[float, float]]] = {}

        def timed(name, fn):
            t0 = time.perf_counter()
            centroids = fn()
            rows.setdefault(name, []).append((assign(x, centroids).inertia, time.perf_counter() - t0))

        def faiss_fit(seed, **kw):
            km = faiss.Kmeans(d, k, niter=30, seed=seed, **kw)
            km.train(x)
            return km.centroids

        for seed in range(args.seeds):
            timed("segmint", lambda: fit_kmeans(x, k, ClusterConfig(k=k, seed=seed)).centroids)
            timed("segmint nredo=1", lambda: fit_kmeans(x, k, ClusterConfig(k=k, seed=seed, nredo=1)).centroids)
            timed("faiss random init", lambda: faiss_fit(seed, max_points_per_centroid=4096))
            timed("faiss k-means++ init", lambda: faiss_fit(
                seed, max_points_per_centroid=4096, init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS))
            timed("faiss defaults", lambda: faiss_fit(seed))
            t0 = time.perf_counter()
            sk = KMeans(k, init="k-means++", n_init=1, max_iter=30, tol=0, random_state=seed).fit(x)
            rows.setdefault("sklearn", []).append((sk.inertia_, time.perf_counter() - t0))
        base = np.mean([i for i, _ in rows["sklearn"]])
        report[f"k={k}"] = {name: {"inertia_vs_sklearn_mean": round(float(np.mean([i for i, _ in v]) / base), 4),
                                   "inertia_vs_sklearn_worst": round(float(max(i for i, _ in v) / base), 4),
                                   "seconds_mean": round(float(np.mean([t for _, t in v])), 3)}
                            for name, v in rows.items()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
