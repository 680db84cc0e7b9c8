"""``segmint compare RUN_A RUN_B``: what changed between two runs.

- ``migration.parquet``: customers and revenue from each old segment to each new one;
  ``old_segment`` null for new customers, ``new_segment`` null for lost ones. Revenue is the
  customer's monetary_total in the new run (in the old one for lost customers), summed exactly.
- ``segments.parquet``: per segment id, its KPIs in each run and the change (new - old).
- ``drift.parquet``: per feature both runs share, the population stability index
  PSI = sum over bins of (new% - old%) ln(new% / old%), over the old run's deciles (shares
  floored at 0.0001), flagged ``stable`` below 0.1, ``moderate`` to 0.25, ``major`` above.
- ``compare.json``: all of it, ``ids`` (of the customers in both runs, how many kept their segment id and
  the share an optimal relabelling of the segments would have kept: engine.analytics.migration), and
  run.json.

Memory is bounded: both runs' assignments are read bucket by bucket (customers split by a
hash of their id), each bucket joined on its own; only counts and exact sums are kept.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segmint.engine import exact
from segmint.engine.analytics.migration import kept_ids
from segmint.engine.config import RunConfig
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.io import store
from segmint.engine.io.committed import Output, open_output
from segmint.engine.io.lease import Holder, claim
from segmint.engine.io.sink import check_not_inside, check_writable, staged_output, write_json
from segmint.engine.pairs import unique_pairs
from segmint.engine.pipeline.plan import new_run_id
from segmint.engine.pipeline.settings_diff import differences, manifest_meaning
from segmint.engine.progress import Progress, StageClock
from segmint.engine.runtime import current_rss, default_memory_limit

__all__ = ["compare_runs", "migration", "PSI_BANDS", "KPIS"]

PSI_BANDS = ((0.1, "stable"), (0.25, "moderate"), (math.inf, "major"))
KPIS = ("customers", "share", "revenue", "revenue_share", "aov_kpi", "orders_per_customer", "repurchase_rate",
        "lapsed_rate", "clv_total")
_SUMMED = ("customers", "share", "revenue", "clv_total")   # of a segment's customers: 0 where it has none
_BYTES_PER_ROW = 400
_DECILE_SAMPLE = 200_000


def compare_runs(run_a: str | Path, run_b: str | Path, out: str | Path, cfg: RunConfig | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Write the comparison of two run directories to ``out``; returns compare.json's content."""
    cfg = cfg or RunConfig()
    opts = dict(cfg.storage_options)
    run_a, run_b, out = (store.canonical(p) for p in (run_a, run_b, out))
    check_writable(out, overwrite=cfg.overwrite, options=cfg.storage_options)
    check_not_inside(out, {"the first run": [run_a], "the second run": [run_b]})
    clock = StageClock(progress)
    with clock.stage("read") as info:
        old, new = (_run(r, opts) for r in (run_a, run_b))
        manifests = [r.read_json("run.json") for r in (old, new)]
        _check_order(old, new, manifests, "OLD_RUN", "give the runs the other way round")
        prof_a, prof_b = (r.read_parquet("profiles.parquet") for r in (old, new))
        a, b = _assignments(old, new, manifests)
        differ = _settings_differ(manifests)
        # Distances to each run's own centroids are no feature of the customers ("distance" was listed as drifting).
        features = [c for c, t in a.collect_schema().items() if t.is_numeric() and c in b.collect_schema()
                    and c not in ("customer_id", "segment", "distance", "margin")]
        rows = sum(f.select(pl.len()).collect().item() for f in (a, b))
        budget = max((cfg.memory_limit or default_memory_limit()) - current_rss(), 32 * 2**20)
        buckets = cfg.buckets or max(1, -(-rows * _BYTES_PER_ROW // budget))
        edges = _deciles(a, features, rows)
        info.update(rows=rows, buckets=buckets, features=len(features))
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    run_id = new_run_id(started)
    with (claim(out, Holder.this_process(run_id, "compare", cfg.lease_seconds), opts) as lease,
          staged_output(out, lease, overwrite=cfg.overwrite, run_id=run_id, options=cfg.storage_options) as staging):
        layout = staging.layout
        with clock.stage("compare") as info:
            moves: dict[tuple[int | None, int | None], tuple[int, list[float]]] = {}
            bins = {f: np.zeros((2, cuts.size + 1 + masses.size), np.int64) for f, (cuts, masses) in edges.items()}
            for bucket in range(buckets):
                _bucket(a, b, bucket, buckets, edges, moves, bins)
                clock.tick(bucket + 1, buckets)
            table = migration_table(moves)
            drift = _drift(bins)
            segments = _segments(prof_a, prof_b)
            info.update(customers_old=int(table.filter(pl.col("old_segment").is_not_null())["customers"].sum()),
                        customers_new=int(table.filter(pl.col("new_segment").is_not_null())["customers"].sum()))
        doc = {"run_id": run_id, "old_run": str(run_a), "new_run": str(run_b), "ids": kept_ids(table),
               "migration": table.to_dicts(),
               "segments": segments.to_dicts(), "drift": drift.to_dicts(), "buckets": buckets,
               **({"settings_differ": differ} if differ else {})}
        store.write_parquet(table, layout.meta("migration.parquet"), opts)
        store.write_parquet(segments, layout.meta("segments.parquet"), opts)
        store.write_parquet(drift, layout.meta("drift.parquet"), opts)
        write_json(layout.meta("compare.json"), doc, opts)
        write_json(layout.meta("run.json"), {"command": "compare", "status": "succeeded", "stages": clock.stages,
                                             "started_at": started.isoformat(), **{k: doc[k] for k in (
                                                 "run_id", "old_run", "new_run", "buckets")}}, opts)
    return doc


def migration(run_a: str | Path, run_b: str | Path, options: dict[str, str] | None = None) \
        -> tuple[pl.DataFrame, list[str]]:
    """The migration table alone, in one bucket, and how the runs' settings differ (the report's migration
    section, which warns of them as compare does)."""
    old, new = (_run(r, options or {}) for r in (run_a, run_b))
    manifests = [r.read_json("run.json") for r in (old, new)]
    _check_order(old, new, manifests, "--compare", "give an earlier run to --compare")
    a, b = _assignments(old, new, manifests)
    moves: dict[tuple[int | None, int | None], tuple[int, list[float]]] = {}
    _bucket(a, b, 0, 1, {}, moves, {})
    return migration_table(moves), _settings_differ(manifests)


def migration_table(moves: dict[tuple[int | None, int | None], tuple[int, list[float]]]) -> pl.DataFrame:
    rows = [(old, new, n, exact.finite_total([part], "migrating revenue")) for (old, new), (n, part) in moves.items()]
    return (pl.DataFrame(rows, schema={"old_segment": pl.Int64, "new_segment": pl.Int64, "customers": pl.Int64,
                                       "revenue": pl.Float64}, orient="row")
            .sort("old_segment", "new_segment", nulls_last=True))


def _settings_differ(manifests: list[dict[str, Any]]) -> list[str]:
    """Changes of frequency, order value, CLV or status rates that a setting made, not the customers."""
    meanings = [manifest_meaning(m) for m in manifests]
    return differences(*meanings) if None not in meanings else []


def _run(run: str, opts: dict[str, str]) -> Output:
    """A committed run or assign output: only the files its commit lists are read."""
    output = open_output(run, opts)
    if not (output.has("profiles.parquet") and output.has("assignments")):
        msg = f"{run} holds no profiles and assignments: give run directories written by 'segmint run' or 'segmint assign'"
        raise InputContractError(msg)
    return output


def _check_order(old: Output, new: Output, manifests: list[dict[str, Any]], what: str, fix: str) -> None:
    """Refuse an old run as of a later time than the new one (``manifests``: their run.json): the migration
    ran backwards, the later run's newer customers counted as lost, without a word."""
    when = [m.get("as_of") for m in manifests]
    if None not in when and dt.datetime.fromisoformat(when[0]) > dt.datetime.fromisoformat(when[1]):
        msg = (f"{what} {old.location} is as of {when[0]}, after {new.location} (as of {when[1]}): the migration "
               f"runs from the earlier run; {fix}")
        raise ConfigError(msg)


def _assignments(old: Output, new: Output, manifests: list[dict[str, Any]]) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Both runs' assignments (``manifests``: their run.json), refused where their customers cannot be joined:
    one run pseudonymises its ids and the other does not (no customer matched and the migration read as every
    customer lost and new), or their ids are of two types (the join failed with an unexpected error)."""
    pseudonymised = [(m.get("config") or {}).get("pseudonymize_ids") for m in manifests]
    if None not in pseudonymised and pseudonymised[0] != pseudonymised[1]:
        which, other = (old, new) if pseudonymised[0] else (new, old)
        msg = (f"{which.location} pseudonymises customer ids (--pseudonymize-ids) and {other.location} does not, "
               f"so no customer of one can be found in the other; compare two runs made alike")
        raise InputContractError(msg)
    keys = [m.get("pseudonym_key") for m in manifests]   # absent before segmint recorded it
    if None not in keys and keys[0] != keys[1]:
        msg = (f"{old.location} and {new.location} pseudonymise customer ids with two keys (SEGMINT_ID_KEY), so no "
               f"customer of one can be found in the other; compare runs made with one key")
        raise InputContractError(msg)
    a, b = (r.scan("assignments") for r in (old, new))
    ta, tb = (f.collect_schema()["customer_id"] for f in (a, b))
    if ta != tb:
        msg = (f"customer ids are {ta} in {old.location} and {tb} in {new.location}, so their customers cannot be "
               f"joined; compare runs of inputs with ids of one type")
        raise InputContractError(msg)
    return a, b


def _deciles(a: pl.LazyFrame, features: Sequence[str], rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The old run's decile edges per feature, from a deterministic sample (every n-th row), and the values two
    deciles share (each at least a tenth of the customers: a point mass, such as the zeros of a share)."""
    step = max(1, rows // _DECILE_SAMPLE)
    sample = a.select(features).gather_every(step).collect()
    edges = {}
    for f in features:
        values = sample[f].cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
        if values.size:
            cuts, counts = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)), return_counts=True)
            edges[f] = (cuts, cuts[counts > 1])
    return edges


def _bin(values: np.ndarray, cuts: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Each value's bin: between two edges ([e_i, e_i+1)), or after them a point mass's own. A mass shared its
    bin with the values up to the next edge: with 90% of the old customers at 0, the bin [0, inf) held every
    customer of both runs, and a share that went from 0 to 0.21 on average had a PSI of 0 ("stable")."""
    index = np.searchsorted(cuts, values, side="right")
    if masses.size:
        at = np.searchsorted(masses, values)
        hit = masses[np.minimum(at, masses.size - 1)] == values
        index = np.where(hit, cuts.size + 1 + at, index)
    return index


def _bucket(a: pl.LazyFrame, b: pl.LazyFrame, bucket: int, buckets: int,
            edges: dict[str, tuple[np.ndarray, np.ndarray]], moves: dict, bins: dict) -> None:
    keep = (pl.col("customer_id").hash(0) % buckets == bucket) if buckets > 1 else pl.lit(True)
    cols = list(dict.fromkeys(["customer_id", "segment", "monetary_total", *edges]))
    old = a.filter(keep).select(cols).collect()
    new = b.filter(keep).select(cols).collect()
    for i, frame in enumerate((old, new)):
        for f, (cuts, masses) in edges.items():
            values = frame[f].cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
            bins[f][i] += np.bincount(_bin(values, cuts, masses), minlength=cuts.size + 1 + masses.size)
    joined = old.select("customer_id", pl.col("segment").alias("old"), pl.col("monetary_total").alias("m_old")).join(
        new.select("customer_id", pl.col("segment").alias("new"), pl.col("monetary_total").alias("m_new")),
        on="customer_id", how="full", coalesce=True)
    revenue = joined.select(pl.coalesce("m_new", "m_old")).to_series().to_numpy()
    # (old, new) as one integer key, -1 for a missing side.
    (olds, news), counts, inverse = unique_pairs(
        *[joined[c].cast(pl.Int64).fill_null(-1).to_numpy() for c in ("old", "new")], inverse=True)
    parts = exact.partials(inverse, revenue, olds.size)
    for i, (o, n) in enumerate(zip(olds.tolist(), news.tolist(), strict=True)):
        key = (o if o >= 0 else None, n if n >= 0 else None)
        have = moves.get(key, (0, []))
        moves[key] = (have[0] + int(counts[i]), have[1] + parts[i])


def _drift(bins: dict[str, np.ndarray]) -> pl.DataFrame:
    rows = []
    for f, (old, new) in sorted(bins.items()):
        p = np.maximum(old / max(old.sum(), 1), 1e-4)
        q = np.maximum(new / max(new.sum(), 1), 1e-4)
        psi = float(((q - p) * np.log(q / p)).sum())
        rows.append((f, psi, next(band for limit, band in PSI_BANDS if psi < limit)))
    return pl.DataFrame(rows, schema={"feature": pl.String, "psi": pl.Float64, "band": pl.String}, orient="row")


def _segments(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    kpis = [k for k in KPIS if k in a.columns and k in b.columns]
    old = a.select("segment", pl.col("name").alias("name_old"), *[pl.col(k).alias(f"{k}_old") for k in kpis])
    new = b.select("segment", pl.col("name").alias("name_new"), *[pl.col(k).alias(f"{k}_new") for k in kpis])
    both = old.join(new, on="segment", how="full", coalesce=True).sort("segment")
    # A segment one run lacks has no customers, share, revenue or CLV there (0, so a vanished segment's change
    # is -46 customers, not null), and no revenue share where that run has one (a total above 0); its rates
    # stay null.
    counted = [f"{k}_{side}" for k in _SUMMED if k in kpis for side in ("old", "new")]
    if "revenue_share" in kpis:
        counted += [f"revenue_share_{side}" for side, run in (("old", a), ("new", b))
                    if run["revenue_share"].null_count() < run.height]
    both = both.with_columns(pl.col(counted).fill_null(0))
    return both.with_columns(*[(pl.col(f"{k}_new") - pl.col(f"{k}_old")).alias(f"{k}_change") for k in kpis])
