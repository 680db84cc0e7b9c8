"""``segmint bench --scenario GPU``: segmint's GPU k-means and assignment against ``faiss.Kmeans(gpu=True)``
and Faiss' CPU k-means, on the same matrix from the same initial centroids.

The matrix is a planted Gaussian mixture (float32); the initial centroids are
greedy k-means++ on a 100k-row sample, as segmint seeds. Figures: seconds to copy
the matrix to the card, seconds of Lloyd iterations for each contender (after one
untimed warm-up each, so CUDA start-up is not counted), the inertia each reports
for its last iteration and the inertia of its final centroids over every row, and
seconds to assign ``assign_rows`` rows (the matrix repeated) with distances and margins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from segmint.bench.timing import StageTimer
from segmint.engine.cluster.assign import assign
from segmint.engine.cluster.backend import ArrayBackend
from segmint.engine.cluster.kmeans import kmeanspp_init
from segmint.engine.cluster.lloyd import lloyd

__all__ = ["GpuScenario", "GPU_SCENARIO", "run_gpu_benchmark"]

INIT_SAMPLE = 100_000
PLANTED_CLUSTERS = 64


@dataclass(frozen=True)
class GpuScenario:
    rows: int
    dim: int
    k: int
    niter: int
    assign_rows: int
    cpu: bool          # also time Faiss' CPU k-means (minutes at the full size)


# The target: 10M x 16, k=256, 20 iterations; 100M customers assigned.
GPU_SCENARIO = GpuScenario(rows=10_000_000, dim=16, k=256, niter=20, assign_rows=100_000_000, cpu=True)


def run_gpu_benchmark(sc: GpuScenario, backend: ArrayBackend, *, seed: int = 0, progress=print) -> dict[str, Any]:
    """Run the scenario with ``backend`` holding the data (the card; the host backend in tests)."""
    progress(f"data: {sc.rows:,} x {sc.dim} planted mixture, k={sc.k}, {sc.niter} iterations")
    x = planted_matrix(sc.rows, sc.dim, seed)
    init = kmeanspp_init(x[:INIT_SAMPLE], sc.k, seed)
    res: dict[str, Any] = {"scenario": "GPU", "title": f"scenario GPU: {sc.rows:,} x {sc.dim}, k={sc.k}, "
                           f"{sc.niter} iterations, {backend.name}", "config": asdict(sc), "seed": seed,
                           "stages": {}, "clustering": {}}

    stage = StageTimer(res["stages"], progress)
    lloyd(backend, backend.to_device(x[:10_000]), init[: min(sc.k, 10_000)], 1, seed)  # warm-up
    resident = stage("segmint: copy to device", lambda: _synced(backend, backend.to_device(x)))
    runs = {"segmint": lambda: lloyd(backend, resident, init, sc.niter, seed)}
    if backend.name == "gpu":
        _faiss_kmeans(x[:10_000], init[: min(sc.k, 10_000)], 1, seed, gpu=True)  # warm-up
        runs["faiss.Kmeans(gpu=True)"] = lambda: _faiss_kmeans(x, init, sc.niter, seed, gpu=True)
    if sc.cpu:
        runs["faiss CPU"] = lambda: _faiss_kmeans(x, init, sc.niter, seed, gpu=False)
    final = {}
    for name, fit in runs.items():
        final[name], train_inertia = stage(f"{name}: k-means", fit)
        res["clustering"][name] = {"train_inertia": train_inertia}
    del resident
    for name, centroids in final.items():
        res["clustering"][name]["inertia"] = assign(x, centroids, backend).inertia
    reps = -(-sc.assign_rows // sc.rows)
    many = np.tile(x, (reps, 1))[: sc.assign_rows]
    labels = stage(f"segmint: assign {sc.assign_rows:,} rows", lambda: assign(many, final["segmint"], backend))
    res["assigned"] = int(labels.segment.size)
    res["ratios"] = _ratios(res)
    return res


def planted_matrix(rows: int, dim: int, seed: int) -> np.ndarray:
    """float32[rows, dim]: unit Gaussians around PLANTED_CLUSTERS centres, drawn in blocks to bound memory."""
    rng = np.random.default_rng([seed, 16])
    centres = rng.normal(0, 4, (PLANTED_CLUSTERS, dim)).astype(np.float32)
    out = np.empty((rows, dim), np.float32)
    for lo in range(0, rows, 1_000_000):
        hi = min(rows, lo + 1_000_000)
        out[lo:hi] = centres[rng.integers(PLANTED_CLUSTERS, size=hi - lo)]
        out[lo:hi] += rng.standard_normal((hi - lo, dim), dtype=np.float32)
    return out


def _faiss_kmeans(x: np.ndarray, init: np.ndarray, niter: int, seed: int, *, gpu: bool) -> tuple[np.ndarray, float]:
    k, d = init.shape
    km = faiss.Kmeans(d, k, niter=niter, seed=seed, gpu=gpu, max_points_per_centroid=-(-x.shape[0] // k),
                      min_points_per_centroid=1)
    inertia = float(km.train(x, init_centroids=init))
    return km.centroids, inertia


def _synced(backend: ArrayBackend, arr: Any) -> Any:
    if backend.name == "gpu":
        backend.xp.cuda.runtime.deviceSynchronize()
    return arr


def _ratios(res: dict[str, Any]) -> dict[str, float]:
    st, cl = res["stages"], res["clustering"]
    ours = st["segmint: k-means"]["seconds"]
    out = {}
    for peer in ("faiss.Kmeans(gpu=True)", "faiss CPU"):
        if peer in cl:
            out[f"{peer} time / segmint time"] = round(st[f"{peer}: k-means"]["seconds"] / ours, 2)
            out[f"segmint / {peer} inertia"] = round(cl["segmint"]["inertia"] / cl[peer]["inertia"], 6)
    out["segmint k-means seconds"] = ours
    out[f"segmint assign seconds ({res['assigned']:,} rows)"] = st[f"segmint: assign {res['assigned']:,} rows"]["seconds"]
    return out
