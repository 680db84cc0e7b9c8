"""Shared fixtures: one small synthetic dataset, CDNOW as Parquet, and a finished run."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.pipeline import run
from segmint.engine.synth import generate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cdnow"


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


def cdnow_master() -> Path:
    path = SHARED / "CDNOW_master.txt"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def cdnow_parquet(tmp_path_factory) -> Path:
    """CDNOW_master.txt as Parquet, the date left as the yyyymmdd text it is in the file."""
    rows = [line.split() for line in cdnow_master().read_text().splitlines()[1:] if line.strip()]
    df = pl.DataFrame({
        "customer_id": [int(r[0]) for r in rows],
        "date": [r[1] for r in rows],
        "number_of_cds": [int(r[2]) for r in rows],
        "dollar_value": [float(r[3]) for r in rows],
    })
    out = tmp_path_factory.mktemp("cdnow") / "cdnow.parquet"
    df.write_parquet(out)
    return out


@pytest.fixture(scope="session")
def cdnow_sample(tmp_path_factory) -> Path:
    """CDNOW_sample.txt as Parquet: master id, sample id (the summary file's ID), date text, dollars."""
    path = SHARED / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    out = tmp_path_factory.mktemp("cdnow_sample") / "sample.parquet"
    pl.DataFrame({"customer_id": [int(r[1]) for r in rows], "date": [r[2] for r in rows],
                  "dollars": [float(r[4]) for r in rows]}).write_parquet(out)
    return out
