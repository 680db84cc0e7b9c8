"""Shared fixtures: process settings restored after each test, one small synthetic dataset, CDNOW as
Parquet, a finished run, and two runs a month apart."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.pipeline import run
from segmint.engine.synth import generate
from tests.fixtures import DATA, restored_process_settings


@pytest.fixture(autouse=True)
def _restore_process_settings():
    """Every test leaves the process as it found it: a CLI invocation configures threads for the
    whole process (segmint.engine.runtime.configure sets POLARS_MAX_THREADS, NUMBA_NUM_THREADS,
    OMP_NUM_THREADS and NUMBA_CACHE_DIR in os.environ) and installs a SIGTERM handler."""
    with restored_process_settings():
        yield


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """3,000 generated customers (~70k lines)."""
    out = tmp_path_factory.mktemp("data") / "small"
    generate(out, customers=3000, seed=11)
    return out


@pytest.fixture(scope="session")
def small_cfg() -> RunConfig:
    return RunConfig(cluster=ClusterConfig(k=6, seed=3))


@pytest.fixture(scope="session")
def small_run(small_data, small_cfg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    run([small_data / "transactions"], out, small_cfg)
    return out


@pytest.fixture(scope="session")
def cdnow_parquet() -> Path:
    """The CDNOW master (tests/data/README.md); ``date`` is the yyyymmdd text of the original file."""
    return DATA / "cdnow_master.parquet"


@pytest.fixture(scope="session")
def cdnow_sample() -> Path:
    """The CDNOW 1/10 sample: ``customer_id`` (the sample id), ``date`` text, ``dollars``."""
    return DATA / "cdnow_sample.parquet"


@pytest.fixture(scope="session")
def two_runs(small_data, tmp_path_factory):
    """The small data, then a month later: 200 customers gone, amounts of the rest tripled, 100 new; run on
    both (k=5), the second with --previous the first. (root, gone ids, new ids); runs in root/a and root/b."""
    root = tmp_path_factory.mktemp("monthly")
    tx = pl.read_parquet(small_data / "transactions")
    ids = tx["customer_id"].unique().sort()
    gone, rest = ids.head(200), ids.tail(ids.len() - 200)
    newcomers = tx.filter(pl.col("customer_id").is_in(rest.head(100).implode())).with_columns(
        customer_id=pl.col("customer_id") + 5_000_000)
    later = pl.concat([tx.filter(pl.col("customer_id").is_in(rest.implode())).with_columns(amount=pl.col("amount") * 3),
                       newcomers])
    later.write_parquet(root / "later.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=5, seed=0))
    run([small_data / "transactions"], root / "a", cfg)
    run([root / "later.parquet"], root / "b", RunConfig(cluster=ClusterConfig(k=5, seed=0), previous=str(root / "a")))
    return root, gone, newcomers["customer_id"].unique()
