"""``segmint bench --scenario M --executor ray``: Ray's overhead against the local executor, and a
scaling model measured with 1 and 2 workers.

On this machine, in this process, with the same buckets: ``segmint run`` through the local
executor, then through a local Ray of this process's CPUs with one task at a time (one worker
with every CPU: Ray's overhead against local), then through a Ray of one CPU (one worker of
one CPU) and of two CPUs with tasks of one CPU (two workers of one CPU: the scaling step).
Ray's start-up is timed apart (a cluster starts once per job). The one-worker run's bucket
work (partition, map, score) divided by its lines gives seconds per line per worker; the rest
(plan, fits, profiles, commit) does not grow with the lines. The model predicts a run as
``fixed + lines x seconds_per_line / workers``, checked against the two-worker run, then
applied to 1 B lines on 32 workers of one CPU.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numba

from segmint.bench.scenarios import SCENARIOS, ensure_data
from segmint.bench.timing import StageTimer
from segmint.engine.config import RunConfig
from segmint.engine.pipeline import run

__all__ = ["run_ray_benchmark", "BUCKETS"]

# Enough buckets that two workers have work to share; the same for every executor.
BUCKETS = 8
_BUCKET_STAGES = ("partition", "map", "score")


def run_ray_benchmark(scenario: str, *, seed: int = 0, data_root: Path | None = None, progress=print) -> dict[str, Any]:
    from segmint.engine.pipeline.ray_executor import RayExecutor, start_local_ray

    sc = SCENARIOS[scenario]
    data = ensure_data(sc, seed, data_root)
    threads = numba.get_num_threads()
    res: dict[str, Any] = {"scenario": sc.name, "seed": seed, "threads": threads, "buckets": BUCKETS, "stages": {}}
    stage = StageTimer(res["stages"], progress)
    cfg = RunConfig(buckets=BUCKETS)
    manifests: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, executor: Any) -> None:
        label = f"segmint run, {name}"
        with tempfile.TemporaryDirectory(dir=data) as tmp:
            manifests[name] = stage(label, lambda: run([data / "transactions"], Path(tmp) / "run", cfg,
                                                       executor=executor)).manifest
        seconds[name] = res["stages"][label]["seconds"]

    timed("local", "local")
    # Each Ray is started apart (timed once: a cluster starts once per job); the executors join it.
    for cpus, workers in dict.fromkeys(((threads, 1), (1, 1), (1, 2))):   # one run each, also for 1 thread
        t0 = time.perf_counter()
        start_local_ray(num_cpus=cpus * workers, object_store_memory=128 * 2**20)
        res.setdefault("ray_start_seconds", round(time.perf_counter() - t0, 3))
        try:
            timed(_name(workers, cpus), RayExecutor(cpus_per_task=cpus))
        finally:
            import ray

            ray.shutdown()
    one, two = _name(1, 1), _name(2, 1)
    lines = manifests["local"]["rows"]["in"]
    bucket_work = sum(manifests[one]["stages"][s]["seconds"] for s in _BUCKET_STAGES)
    fixed = seconds[one] - bucket_work
    per_line = bucket_work / lines
    predicted_two = fixed + lines * per_line / 2
    at_scale = fixed + 1e9 * per_line / 32
    res["runs"] = {name: {"seconds": seconds[name], "stages": {s: v["seconds"] for s, v in m["stages"].items()}}
                   for name, m in manifests.items()}
    res["model"] = {"fixed_seconds": round(fixed, 3), "seconds_per_line_per_1cpu_worker": per_line,
                    "predicted_2_workers_seconds": round(predicted_two, 3),
                    "predicted_1B_lines_32_workers_seconds": round(at_scale, 1)}
    res["ratios"] = {
        f"{_name(1, threads)} / local, time": round(seconds[_name(1, threads)] / seconds["local"], 3),
        "ray start-up, seconds (once per job)": res["ray_start_seconds"],
        "2 workers / 1 worker (1 CPU each), time": round(seconds[two] / seconds[one], 3),
        "2 workers: measured / predicted, time": round(seconds[two] / predicted_two, 3),
        "predicted 1 B lines on 32 workers of 1 CPU, minutes": round(at_scale / 60, 1),
    }
    res["customers"], res["lines"] = manifests["local"]["customers"], lines
    res["title"] = (f"scenario {sc.name} through Ray: {res['customers']:,} customers, {lines:,} lines, "
                    f"{BUCKETS} buckets, {threads} threads")
    return res


def _name(workers: int, cpus: int) -> str:
    return f"ray, {workers} worker{'s' * (workers > 1)} of {cpus} CPU{'s' * (cpus > 1)}"
