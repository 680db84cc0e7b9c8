"""What the report reads: the run directory in bounded memory, and the optional cohort and migration tables.

Sizes, value, lifecycle shares and the per-segment distributions come from the
profiles (exact KPIs, one row per segment); funnel and data-quality counts from
run.json. The assignments are only aggregated, never loaded: the RFM grid and
the CLV histogram are lazy scans of two columns each, grouped into at most a few
hundred rows, so memory does not grow with the number of customers. Counts are
integers and the bins are fixed before the scan, so the result is the same on
every read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segmint.engine.errors import InputContractError
from segmint.engine.io import store
from segmint.engine.io.committed import open_output
from segmint.engine.io.sources import first_line
from segmint.engine.report.traits import candidates

__all__ = ["RunData", "ClvHistogram", "read_run", "read_cohorts", "check_cohorts", "check_migration",
           "COHORT_COLUMNS", "MIGRATION_COLUMNS"]

COHORT_COLUMNS = ("cohort", "months_since_first", "retention", "complete_month")
MIGRATION_COLUMNS = ("old_segment", "new_segment", "customers", "revenue")
CLV_BINS = 40
# The histogram's first bin starts this far below the largest CLV; smaller values (near-certain churners)
# are counted in it rather than stretching the log axis over decades nobody reads.
_CLV_RANGE = 1e-4


@dataclass(frozen=True)
class ClvHistogram:
    edges: np.ndarray          # float64[CLV_BINS + 1], log-spaced; values below edges[0] are in bin 0
    counts: np.ndarray         # int64[k, CLV_BINS]: customers per segment (profile row order) and bin
    missing: int               # customers without a CLV value


@dataclass(frozen=True)
class RunData:
    manifest: dict[str, Any]           # run.json
    profiles: pl.DataFrame             # profiles.parquet, sorted by segment id (ids need not be 0..k-1)
    rfm: np.ndarray                    # int64[5, 5]: customers by R score (rows, 1..5) x F score (columns, 1..5)
    rfm_names: dict[tuple[int, int], str]   # (r, f) -> RFM segment name, from the run's grid
    clv: ClvHistogram | None
    ranks: dict[int, dict[str, tuple[float, float]]]   # segment -> trait feature -> shares below, above its median

    @property
    def k(self) -> int:
        return self.profiles.height


def read_run(run_dir: str | Path) -> RunData:
    """Read a finished ``segmint run`` or ``segmint assign`` directory (local): only the files its commit lists."""
    output = open_output(store.local_only(run_dir, "segmint report's run directory"))
    missing = [name for name in ("run.json", "profiles.parquet", "assignments") if not output.has(name)]
    if missing:
        msg = (f"{output.location} is not a finished segmint run (no {', '.join(missing)}); give the --out folder of "
               f"segmint run or segmint assign")
        raise InputContractError(msg)
    manifest = output.read_json("run.json")
    if manifest.get("command") not in ("run", "assign"):
        msg = (f"{output.location}/run.json was written by segmint {manifest.get('command')}, not run or assign; "
               f"give the --out folder of segmint run or segmint assign")
        raise InputContractError(msg)
    profiles = output.read_parquet("profiles.parquet").sort("segment")
    scan = output.scan("assignments")
    clv = _clv_histogram(scan, profiles["segment"].to_list()) if "clv" in scan.collect_schema().names() else None
    return RunData(manifest=manifest, profiles=profiles, rfm=_rfm_grid(scan), rfm_names=_rfm_names(manifest),
                   clv=clv, ranks=_ranks(scan, profiles))


def read_cohorts(path: str | Path) -> pl.DataFrame:
    """The long table of ``segmint cohorts``: its ``cohorts.parquet``, or the folder that holds it (local)."""
    path = store.local_only(path, "segmint report's cohort table")
    file = path / "cohorts.parquet" if path.is_dir() else path
    if not file.is_file():
        msg = f"no cohort table at {file}; give the cohorts.parquet written by segmint cohorts (or its --out folder)"
        raise InputContractError(msg)
    try:
        table = pl.read_parquet(file, glob=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        msg = (f"cannot read the cohort table {file} ({first_line(exc)}); give the cohorts.parquet written by "
               f"segmint cohorts")
        raise InputContractError(msg) from None
    return check_cohorts(table)


def check_cohorts(table: pl.DataFrame) -> pl.DataFrame:
    """The cohort table, sorted; refused when a column of ``COHORT_COLUMNS`` is missing."""
    _require(table, COHORT_COLUMNS, "the cohort table", "the cohorts.parquet written by segmint cohorts")
    if table.height == 0:
        msg = "the cohort table is empty; give the cohorts.parquet written by segmint cohorts"
        raise InputContractError(msg)
    return table.sort("cohort", "months_since_first")


def check_migration(table: pl.DataFrame) -> pl.DataFrame:
    """The migration table (null old_segment: new customers; null new_segment: lost ones)."""
    _require(table, MIGRATION_COLUMNS, "the migration table", "one row per (old_segment, new_segment) pair")
    if table["customers"].null_count() or (table["customers"] < 0).any():
        msg = "the migration table has null or negative customers; give a count of customers on every row"
        raise InputContractError(msg)
    return table


def _require(table: pl.DataFrame, columns: tuple[str, ...], what: str, fix: str) -> None:
    absent = [c for c in columns if c not in table.columns]
    if absent:
        msg = f"{what} lacks column(s) {', '.join(absent)}; give {fix} ({', '.join(columns)})"
        raise InputContractError(msg)


def _rfm_grid(scan: pl.LazyFrame) -> np.ndarray:
    cells = (scan.select("r_score", "f_score").group_by("r_score", "f_score").len()
             .collect().sort("r_score", "f_score"))
    grid = np.zeros((5, 5), np.int64)
    for r, f, n in cells.iter_rows():
        grid[r - 1, f - 1] = n
    return grid


def _rfm_names(manifest: dict[str, Any]) -> dict[tuple[int, int], str]:
    grid = manifest.get("config", {}).get("features", {}).get("rfm_grid") or []
    return {(r, f): name for name, rs, fs in grid for r in rs for f in fs}


def _ranks(scan: pl.LazyFrame, profiles: pl.DataFrame) -> dict[int, dict[str, tuple[float, float]]]:
    """For each segment's trait candidates: the shares of all customers strictly below and strictly above the
    segment's median (one scan of those columns, sums only)."""
    wanted = {row["segment"]: {f: row[f"{f}_median"] for f, _ in candidates(row)} for row in profiles.to_dicts()}
    exprs, keys = [], []
    for seg, medians in wanted.items():
        for f, median in medians.items():
            # As numbers: a true/false attribute has a median (0, 0.5 or 1) but no is_finite (exit 1).
            value = pl.col(f).cast(pl.Float64)
            col = value.filter(value.is_finite())
            exprs += [(col < median).sum(), (col > median).sum(), col.len()]
            keys.append((seg, f))
    if not exprs:
        return {seg: {} for seg in wanted}
    counts = scan.select([e.alias(str(i)) for i, e in enumerate(exprs)]).collect().row(0)
    out: dict[int, dict[str, tuple[float, float]]] = {seg: {} for seg in wanted}
    for i, (seg, f) in enumerate(keys):
        below, above, n = counts[3 * i: 3 * i + 3]
        out[seg][f] = (below / n, above / n) if n else (0.0, 0.0)
    return out


def _clv_histogram(scan: pl.LazyFrame, ids: list[int]) -> ClvHistogram | None:
    clv = pl.col("clv")
    bounds = scan.select(clv.filter(clv > 0).min().alias("lo"), clv.max().alias("hi"),
                         clv.null_count().alias("missing")).collect().row(0, named=True)
    hi, missing = bounds["hi"], bounds["missing"]
    if hi is None or not math.isfinite(hi) or hi <= 0:
        return None
    lo = max(bounds["lo"], hi * _CLV_RANGE)
    if lo >= hi:  # every customer has the same CLV: one decade around it
        lo = hi / 10
    log_lo, step = math.log10(lo), (math.log10(hi) - math.log10(lo)) / CLV_BINS
    index = ((clv.clip(lo, hi).log10() - log_lo) / step).floor().cast(pl.Int64).clip(0, CLV_BINS - 1)
    cells = (scan.select("segment", "clv").filter(clv.is_not_null())
             .group_by(pl.col("segment").cast(pl.Int64), index.alias("bin")).len()
             .collect().sort("segment", "bin"))
    row = {seg: i for i, seg in enumerate(ids)}
    counts = np.zeros((len(ids), CLV_BINS), np.int64)
    for seg, b, n in cells.iter_rows():
        counts[row[seg], b] = n
    return ClvHistogram(edges=np.geomspace(lo, hi, CLV_BINS + 1), counts=counts, missing=missing)
