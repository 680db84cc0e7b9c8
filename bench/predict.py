"""``segmint bench --scenario PREDICT``: real-time scoring with ``Model.predict``.

A model is fitted (``segmint run``) on 100,000 generated customers; then, in this process,
``predict`` scores one customer's history at a time for 200 customers (latency: median and
95th percentile, after one untimed call), and every customer's history in one call
(throughput in customers per second). Issue #14's targets: under 5 ms, at least 100,000 a second;
issue #19 asks 300,000 a second (each met or not in the run: bench/targets.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl

from segmint.bench.scenarios import LINES_PER_CUSTOMER, Scenario, ensure_data
from segmint.bench.targets import targets
from segmint.bench.timing import StageTimer
from segmint.engine.config import RunConfig
from segmint.engine.model import Model
from segmint.engine.pipeline import run

__all__ = ["PREDICT_SCENARIO", "run_predict_benchmark"]

PREDICT_SCENARIO = Scenario("PREDICT", 100_000 * LINES_PER_CUSTOMER, 100_000, False, True)
LATENCY_CUSTOMERS = 200


def run_predict_benchmark(scenario: Scenario = PREDICT_SCENARIO, *, seed: int = 0, data_root: Path | None = None,
                          progress=print) -> dict[str, Any]:
    data = ensure_data(scenario, seed, data_root)
    res: dict[str, Any] = {"scenario": scenario.name, "seed": seed, "threads": numba.get_num_threads(), "stages": {}}
    stage = StageTimer(res["stages"], progress)
    tx = pl.read_parquet(data / "transactions")
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        stage("segmint run (the model)", lambda: run([data / "transactions"], Path(tmp) / "run", RunConfig()))
        model = Model.load(Path(tmp) / "run")
    ids = tx["customer_id"].unique().sort()
    histories = tx.filter(pl.col("customer_id").is_in(ids[:LATENCY_CUSTOMERS].implode())).partition_by(
        "customer_id", as_dict=True)
    one = [histories[(c,)] for c in ids[:LATENCY_CUSTOMERS]]
    model.predict(one[0])  # the first call loads what scoring needs; the target is for calls after it

    def latencies() -> list[float]:
        out = []
        for history in one:
            t0 = time.perf_counter()
            model.predict(history)
            out.append(time.perf_counter() - t0)
        return out

    seconds = stage(f"predict one customer x {LATENCY_CUSTOMERS}", latencies)
    scored = stage(f"predict {ids.len():,} customers in one call", lambda: model.predict(tx))
    every = res["stages"][f"predict {ids.len():,} customers in one call"]["seconds"]
    res["ratios"] = {"predict one customer, median ms": round(float(np.median(seconds)) * 1000, 2),
                     "predict one customer, p95 ms": round(float(np.percentile(seconds, 95)) * 1000, 2),
                     "predict throughput, customers per second": round(scored.height / every)}
    res["customers"], res["lines"] = scored.height, tx.height
    res["targets"] = targets(res)
    res["title"] = (f"scenario {scenario.name}: {scored.height:,} customers, {tx.height:,} lines, "
                    f"{res['threads']} threads")
    return res
