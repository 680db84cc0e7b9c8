"""``segmint bench --scenario S|M|L``: every stage timed against its peers on the same data, in one run.

segmint runs through its public API (``segmint.engine.pipeline.run``), so the stages
timed are the ones ``segmint run`` takes; their seconds and peak RSS come from its
run.json, of the run of median time where it runs more than once (the scenario's ``pairs``,
each followed by DuckDB's aggregate query). Peers on the same data, in the same process:
DuckDB's aggregate query (the median of ``QUERY_RUNS``), and k-means at the default k (inertia,
ARI against the planted personas) and at k=64 for segmint, scikit-learn and Faiss defaults on the run's
standardised matrix
(the model's scaler applied to its assignments), each over seeds 0-4 after one untimed call: time from the
start of the fit to every customer labelled (scikit-learn's fit labels them), mean
inertia and ARI. Last, ``segmint run`` end to end in
a child process (wall time, peak RSS), and beside it the pipeline a user writes by hand
(bench/handwritten.py: DuckDB features, StandardScaler, scikit-learn KMeans k=8, partitioned Parquet),
also in a child process; where the data fits in memory, ``segmint features`` in a child process too.
Ratios are segmint / peer for times (below 1 = segmint faster) and segmint / scikit-learn for inertia
(below 1 = better). Then issue #19's targets, each met or not in this run (bench/targets.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl

from segmint.bench import handwritten
from segmint.bench.peers import duckdb_aggregates, duckdb_features, faiss_default_kmeans, sklearn_kmeans
from segmint.bench.scenarios import SCENARIOS, ensure_data
from segmint.bench.targets import target_table, targets
from segmint.bench.timing import StageTimer, median_index
from segmint.engine.cluster import assign, fit_kmeans
from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.model import Model
from segmint.engine.pipeline import run
from segmint.engine.runtime import set_by_segmint, vm_hwm
from segmint.engine.warmup import warmup

__all__ = ["run_benchmark", "ratio_table"]

SPEED_K = 64
# DuckDB's aggregate query, every target's yardstick, timed at least this many times (its median; as often as
# segmint's in-process run where that runs more often): one query on bench M took 0.63-2.31 s from bench to bench,
# and five queries of one process 0.57-0.67 s, so that one bench's ratios fell either side of the bounds by
# its chance alone.
QUERY_RUNS = 3
KMEANS_SEEDS = range(5)


def run_benchmark(scenario: str, *, seed: int = 0, data_root: Path | None = None,
                  progress=print) -> dict[str, Any]:
    """Run one scenario; returns every figure (also what ``--out`` writes as JSON)."""
    sc = SCENARIOS[scenario]
    threads = numba.get_num_threads()
    progress(f"data: scenario {sc.name} ({sc.customers:,} customers, about {sc.lines:,} lines)")
    data = ensure_data(sc, seed, data_root)
    tx = data / "transactions"
    warmup()
    _read_once(data)
    cfg = RunConfig(cluster=ClusterConfig(seed=seed))
    res: dict[str, Any] = {"scenario": sc.name, "seed": seed, "threads": threads, "stages": {}}

    stage = StageTimer(res["stages"], progress)

    def query() -> int:
        return stage("duckdb aggregate query", lambda: duckdb_aggregates(tx, threads))[1]

    queried = _in_process(res, tx, data, cfg, sc, stage, progress, query) if sc.in_process else []
    queried += [query() for _ in range(QUERY_RUNS - len(queried))]
    res.setdefault("customers", queried[-1])
    if sc.in_process:   # the map's own work in SQL: minutes on L's 224 M lines, so in-process scenarios only
        stage("duckdb same-features query", lambda: duckdb_features(tx, threads))
    if not sc.in_process:
        # Before the hand-written pipeline, not after it: the development machine (a VM that gives the memory a
        # process frees back to its host) ran L's 2 GB run 44.4 s on average right after the pipeline's 14 GB
        # and 42.7 s after another segmint run, its map slower in each of four pairs (bench/README.md).
        res["end_to_end_2GB"] = _end_to_end(tx, seed, threads, progress, "2GB")
    res["end_to_end"], res["handwritten"] = _in_turn(lambda: _end_to_end(tx, seed, threads, progress),
                                                     lambda: _handwritten(tx, seed, threads, progress), sc.pairs)
    if sc.in_process:   # the map's own command, as a user runs it: minutes on L, so in-process scenarios only
        res["features"], res["handwritten_features"] = _in_turn(
            lambda: _end_to_end(tx, seed, threads, progress, command="features"),
            lambda: _handwritten(tx, seed, threads, progress, features_only=True), sc.pairs)
    res.setdefault("lines", res["end_to_end"]["rows_in"])
    res["ratios"] = _ratios(res, res["stages"]["duckdb aggregate query"]["seconds"])
    res["targets"] = targets(res)
    res["title"] = (f"scenario {res['scenario']}: {res['customers']:,} customers, {res['lines']:,} lines, "
                    f"{res['threads']} threads")
    return res


def _in_process(res: dict[str, Any], tx: Path, data: Path, cfg: RunConfig, sc, stage, progress,
                query: Callable[[], int]) -> list[int]:
    """``segmint run`` in this process ``sc.pairs`` times, each followed by DuckDB's aggregate query (``query``),
    so that a drift of the machine falls on both: the stages are those of the run of median time. Then the
    clusterings on its assignments. Returns what each query gave."""
    with tempfile.TemporaryDirectory(dir=tx.parent) as tmp:
        results, queried = [], []
        for i in range(sc.pairs):
            results.append(stage("segmint run (in process)", lambda i=i: run([tx], Path(tmp) / f"run-{i}", cfg)))
            queried.append(query())
        timed = res["stages"]["segmint run (in process)"]
        result = results[median_index(timed.get("runs_seconds", [timed["seconds"]]))]
        del results
        for name, figures in result.manifest["stages"].items():
            res["stages"][f"segmint {name}"] = {k: figures[k] for k in ("seconds", "peak_rss_mb")}
            progress(f"{'  ' + name:<36} {figures['seconds']:9.3f} s")
        res.update(lines=result.manifest["rows"]["in"], customers=result.manifest["customers"])
        assigned = pl.read_parquet(Path(result.out) / "assignments")
        x = Model.load(result.out).scaler.transform(assigned)
        personas = (assigned.select("customer_id").join(pl.read_parquet(data / "personas.parquet"), on="customer_id",
                                                        how="left", maintain_order="left")["persona"].to_numpy())
    res["clustering"] = {}
    for k in (cfg.cluster.k, SPEED_K):
        res["clustering"][f"k={k}"] = _clusterings(x, k, cfg.cluster, personas, sc.sklearn and x.shape[0] <= 2_000_000,
                                                   stage)
    return queried


def _read_once(data: Path) -> None:
    """Every file of the scenario read once, untimed, so that every timed run and peer finds it in the page
    cache: segmint's in-process run goes first, and after the cache was dropped it alone read from disk
    (bench M's map 2.73 and 2.74 s without this read, 2.67 s with it)."""
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass


def ratio_table(res: dict[str, Any]) -> str:
    """Markdown table of the ratios (the figures quoted), then absolute times."""
    lines = [f"### {res['title']}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in res["ratios"].items()]
    lines += ["", "| stage | seconds | peak RSS MiB |", "|---|---|---|"]
    lines += [f"| {name} | {v['seconds']}{_each(v)} | {v['peak_rss_mb']} |" for name, v in res["stages"].items()]
    for key, label in (("end_to_end", "segmint run (end to end, child process)"),
                       ("handwritten", "hand-written DuckDB + scikit-learn pipeline (child process)"),
                       ("end_to_end_2GB", "segmint run --memory-limit 2GB (child process)"),
                       ("features", "segmint features (child process)"),
                       ("handwritten_features", "hand-written DuckDB features to Parquet (child process)")):
        if key in res:
            cpu = res[key].get("cpu_seconds")
            lines += [f"| {label} | {res[key]['seconds']}{_each(res[key])}{'' if cpu is None else f'; CPU {cpu} s'} | "
                      f"{res[key]['peak_rss_mb']} |"]
    if res.get("targets"):
        lines += ["", *target_table(res["targets"])]
    return "\n".join(lines)


def _each(figures: dict[str, Any]) -> str:
    runs = figures.get("runs_seconds", [])
    return f" (median of {', '.join(map(str, runs))})" if len(runs) > 1 else ""


def _clusterings(x: np.ndarray, k: int, cfg: ClusterConfig, personas: np.ndarray, with_sklearn: bool, stage):
    """Per method: mean inertia and ARI over KMEANS_SEEDS; the stage holds the time of all seeds."""
    from sklearn.metrics import adjusted_rand_score

    def label(centroids: np.ndarray):
        return assign(x, centroids)

    runs = {"segmint": lambda s: label(fit_kmeans(x, k, dataclasses.replace(cfg, seed=s)).centroids),
            "faiss defaults": lambda s: label(faiss_default_kmeans(x, k, cfg.niter, s)[1])}
    if with_sklearn:
        runs["scikit-learn"] = lambda s: sklearn_kmeans(x, k, cfg.niter, s)[1]   # labelled by its fit
    out: dict[str, Any] = {}
    for name, fit in runs.items():
        fit(0)  # untimed: a first call starts thread pools (scikit-learn k=8 on M: 1.6 s, then 0.65 s)
        results = stage(f"{name} k-means k={k}", lambda: [fit(s) for s in KMEANS_SEEDS])
        labelled = [r if name != "scikit-learn" else label(r) for r in results]
        out[name] = {"inertia": float(np.mean([a.inertia for a in labelled])),
                     "ari_vs_personas": float(np.mean([adjusted_rand_score(personas, a.segment) for a in labelled])),
                     "seeds": len(KMEANS_SEEDS)}
    return out


def _in_turn(ours: Callable[[], dict[str, Any]], peer: Callable[[], dict[str, Any]],
             pairs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A segmint command and its peer, ``pairs`` times in turn, each its run of median wall time (with every
    run's seconds and the highest peak RSS): on bench M one run of each moved by 0.2-0.7 s from run to run, and a
    ratio from one of each fell either side of 1 by chance; in turn, a drift of the machine falls on both."""
    mine, theirs = [], []
    for _ in range(pairs):
        mine.append(ours())
        theirs.append(peer())
    return _median_run(mine), _median_run(theirs)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (its CPU seconds too), with every run's seconds and CPU seconds and the highest
    peak RSS."""
    middle = runs[median_index([r["seconds"] for r in runs])]
    return middle | {"runs_seconds": [r["seconds"] for r in runs], "runs_cpu_seconds": [r["cpu_seconds"] for r in runs],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def _end_to_end(tx: Path, seed: int, threads: int, progress, memory_limit: str | None = None,
                command: str = "run") -> dict[str, Any]:
    """``segmint run`` (or ``command``: features) in a child process: its wall time and peak RSS, and its
    run.json stages."""
    with tempfile.TemporaryDirectory(dir=tx.parent) as tmp:
        cmd = [sys.executable, "-m", "segmint.cli.app", "--threads", str(threads), command, str(tx),
               "--out", f"{tmp}/{command}", *(["--seed", str(seed)] if command == "run" else []), "--json",
               *(["--memory-limit", memory_limit] if memory_limit else [])]
        seconds, peak_kb, _, cpu = _child(cmd, f"segmint {command} (end to end)", progress)
        manifest = json.loads((Path(tmp) / command / "run.json").read_text())
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(peak_kb / 1024, 1), "cpu_seconds": round(cpu, 3),
            "command": " ".join(cmd[2:]),
            "buckets": manifest.get("buckets", 1), "rows_in": manifest["rows"]["in"],
            "stages": manifest.get("stages")}


def _handwritten(tx: Path, seed: int, threads: int, progress, features_only: bool = False) -> dict[str, Any]:
    """The hand-written DuckDB + scikit-learn pipeline (bench/handwritten.py) in a child process; with
    ``features_only``, its DuckDB step alone written to Parquet: the features command a user writes instead."""
    with tempfile.TemporaryDirectory(dir=tx.parent) as tmp:
        # Run as the user's own script runs: from its file, not through segmint's package (whose import
        # sets segmint's runtime defaults), and without the variables segmint set in this process (NumPy's
        # pages, OpenMP's spin, OpenBLAS' threads: engine.runtime).
        cmd = [sys.executable, str(Path(handwritten.__file__)), str(tx),
               f"{tmp}/{'features.parquet' if features_only else 'segments'}", "--threads", str(threads),
               *(["--features-only"] if features_only else ["--seed", str(seed)])]
        env = {var: value for var, value in os.environ.items() if var not in set_by_segmint()}
        name = f"hand-written {'features' if features_only else 'pipeline'} (end to end)"
        seconds, peak_kb, out, cpu = _child(cmd, name, progress, env)
    done = json.loads(out)
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(peak_kb / 1024, 1), "cpu_seconds": round(cpu, 3),
            "command": " ".join(cmd[1:]),
            "steps": done["seconds"], "customers": done["customers"]}


def _child(cmd: list[str], name: str, progress,
           env: dict[str, str] | None = None) -> tuple[float, int, str, float]:
    """Wall seconds, peak RSS (KiB), stdout and CPU seconds of ``cmd`` (in ``env``, default this process's);
    RuntimeError naming its last error line."""
    t0 = time.perf_counter()
    peak_kb, rc, out, err, cpu = _run_watching_rss(cmd, env)
    seconds = time.perf_counter() - t0
    if rc != 0:
        msg = f"{name} failed ({rc}): {err.strip().splitlines()[-1:]}"
        raise RuntimeError(msg)
    progress(f"{name:<36} {seconds:9.2f} s")
    return seconds, peak_kb, out, cpu


def _run_watching_rss(cmd: list[str], env: dict[str, str] | None) -> tuple[int, int, str, str, float]:
    """Run ``cmd``; its peak RSS in KiB from /proc VmHWM, polled every 50 ms (it resets at exec,
    unlike a forked child's ru_maxrss, which counts the parent's pages from before the exec). Its end is
    seen as it comes, not at the next poll (a sleep between polls timed either side up to 50 ms late).
    Also its CPU seconds, user and system, of every thread and of the processes it waited for: what a user
    pays for on a cluster billed by the CPU-second (RUSAGE_CHILDREN before and after it: this process waits for
    no other child meanwhile)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        peak = 0
        while True:
            peak = max(peak, vm_hwm(proc.pid) // 1024)
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                continue
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        out.seek(0)
        err.seek(0)
        return peak, proc.returncode, out.read(), err.read(), cpu


def _against(ours: dict[str, Any], peer: dict[str, Any], name: str) -> dict[str, float]:
    """A child process's wall time, CPU seconds and peak RSS over its peer's."""
    return {f"{name} ({label})": round(ours[key] / peer[key], 3)
            for label, key in (("time", "seconds"), ("CPU seconds", "cpu_seconds"), ("peak RSS", "peak_rss_mb"))}


def _ratios(res: dict[str, Any], duck_s: float) -> dict[str, Any]:
    st = res["stages"]
    e2e, hand = res["end_to_end"], res["handwritten"]
    peer = _against(e2e, hand, "end to end / hand-written pipeline")
    if "segmint map" not in st:
        out = {"end to end / duckdb query (time)": round(e2e["seconds"] / duck_s, 3), **peer}
        if "end_to_end_2GB" in res:
            out["end to end with --memory-limit 2GB / duckdb query (time)"] = round(
                res["end_to_end_2GB"]["seconds"] / duck_s, 3)
            out["end to end with --memory-limit 2GB, peak RSS GiB"] = round(res["end_to_end_2GB"]["peak_rss_mb"] / 1024, 2)
        out["end to end, peak RSS GiB"] = round(res["end_to_end"]["peak_rss_mb"] / 1024, 2)
        return out
    out: dict[str, Any] = {
        "map (read + clean + features) / duckdb query (time)": round(st["segmint map"]["seconds"] / duck_s, 3),
        "map / duckdb same-features query (time)": round(st["segmint map"]["seconds"]
                                                          / st["duckdb same-features query"]["seconds"], 3),
        "end to end / duckdb query (time)": round(e2e["seconds"] / duck_s, 3),
        **peer,
        "segmint features / duckdb query (time)": round(res["features"]["seconds"] / duck_s, 3),
        **_against(res["features"], res["handwritten_features"], "segmint features / hand-written features command"),
        "fit + cluster + score + profile (seconds)": round(sum(st[f"segmint {name}"]["seconds"]
                                                               for name in ("fit", "cluster", "score", "profile")), 3),
    }
    for key, runs in res["clustering"].items():
        seg = runs["segmint"]
        seg_s = st[f"segmint k-means {key}"]["seconds"]
        for name, method in runs.items():   # the peers' too: on S at k=8 both matched the personas better
            out[f"ARI vs personas, {name} {key}"] = round(method["ari_vs_personas"], 4)
        if "scikit-learn" in runs:
            out[f"scikit-learn time / segmint time, {key}"] = round(st[f"scikit-learn k-means {key}"]["seconds"] / seg_s, 2)
            out[f"segmint / scikit-learn inertia, {key}"] = round(seg["inertia"] / runs["scikit-learn"]["inertia"], 4)
        out[f"segmint / faiss-defaults inertia, {key}"] = round(seg["inertia"] / runs["faiss defaults"]["inertia"], 4)
    return out

