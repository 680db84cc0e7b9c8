"""Benchmark scenarios and their cached data.

Sizes are in transactions (order lines); the generator averages about 22
lines per customer, so customers = lines / 22. Data is generated once per
(scenario, seed) under the cache folder and reused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from segmint.engine.synth import GENERATOR_VERSION, generate

__all__ = ["Scenario", "SCENARIOS", "ensure_data", "cache_root"]

LINES_PER_CUSTOMER = 22


@dataclass(frozen=True)
class Scenario:
    name: str
    lines: int
    customers: int
    sklearn: bool      # scikit-learn KMeans at this size within the run's time budget
    in_process: bool   # stages timed in the bench process (needs the data in memory)
    # segmint run and the hand-written pipeline, each this many times in turn: their medians are compared
    pairs: int = 1


SCENARIOS = {
    "S": Scenario("S", 1_000_000, 1_000_000 // LINES_PER_CUSTOMER, True, True, pairs=3),
    "M": Scenario("M", 20_000_000, 20_000_000 // LINES_PER_CUSTOMER, True, True, pairs=3),
    # L does not fit in memory: only DuckDB and the end-to-end runs (bucketed) are timed.
    "L": Scenario("L", 200_000_000, 10_000_000, False, False),
}


def cache_root() -> Path:
    return Path(os.environ.get("SEGMINT_BENCH_DIR") or Path.home() / ".cache" / "segmint" / "bench")


def ensure_data(scenario: Scenario, seed: int, root: Path | None = None) -> Path:
    """The scenario's data folder, generated (without events) if not cached yet."""
    folder = (root or cache_root()) / f"{scenario.name}-seed{seed}"
    stamp = folder / "_SUCCESS"
    meta = folder / "bench.json"
    wanted = {"customers": scenario.customers, "seed": seed, "generator": GENERATOR_VERSION}
    if stamp.exists() and meta.exists() and json.loads(meta.read_text()) == wanted:
        return folder
    generate(folder, customers=scenario.customers, seed=seed, events=False, overwrite=True)
    meta.write_text(json.dumps(wanted))
    return folder
