"""The pipeline a user walks: scan -> clean -> features -> preprocess -> cluster -> assign -> profile -> write.

Each public function here is what one CLI command calls; library users call
them directly (README, "Python API").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import polars as pl

from segmint.engine.analytics.clv import ClvParams, fit_clv, predict_clv
from segmint.engine.analytics.abtest import evaluate, split_groups
from segmint.engine.analytics.attributes import attach, segment_mix
from segmint.engine.analytics.cohorts import cohort_table, retention_pivot
from segmint.engine.analytics.funnel import EVENT_FEATURES, event_features, funnel_table
from segmint.engine.cluster.assign import Assignment, assign
from segmint.engine.cluster.device import backend_for, resolve_device
from segmint.engine.cluster.kmeans import KMeansResult, fit_kmeans
from segmint.engine.cluster.select_k import select_k
from segmint.engine.config import ClusterConfig, ClvConfig, Columns, RunConfig, config_hash, to_dict
from segmint.engine.errors import InputContractError
from segmint.engine.features.table import FeatureTable, channel_columns, compute_features
from segmint.engine.hashing import bottom_k, customer_hash
from segmint.engine.io.clean import CleanResult, clean, clean_events
from segmint.engine.io.pseudonym import pseudonymize, require_key
from segmint.engine.io.scan import check_customer, check_time, read_columns, read_input, scan
from segmint.engine.io.sink import check_writable, staged_dir, staged_file
from segmint.engine.model import Model, versions
from segmint.engine.preprocess import fit_scaler
from segmint.engine.profile import SUMMARY_FEATURES, build_profiles
from segmint.engine.progress import Progress, StageClock

__all__ = ["RunResult", "ValidationReport", "run", "assign_customers", "compute_feature_table",
           "compute_clv", "compute_cohorts", "abtest_split", "abtest_evaluate", "validate",
           "default_cluster_features", "clustering_report", "plan_buckets", "run_manifest",
           "write_segment_parts", "write_profiles"]

# The scaler is fitted on at most this many customers (all of them below it).
SCALER_SAMPLE = 1_000_000
# Peak memory per input row of an in-memory run, measured on scenario M
# (20.4 M rows, 3.9 GiB peak RSS: about 190 bytes a row), rounded up.
BYTES_PER_ROW = 250
# Smaller buckets are faster, not only leaner: on scenario L (224 M rows) 29 buckets of
# about 8 M rows ran in 351 s against 431 s for 10 buckets of 22 M (bench/README.md).
MAX_BUCKET_ROWS = 8_000_000
_BASE_CLUSTER_FEATURES = ("recency_days", "tenure_days", "frequency", "aov", "ipt_mean_days",
                          "refund_share")


@dataclass(frozen=True)
class RunResult:
    out: Path
    summary: pl.DataFrame        # one row per segment: id, name, size, shares, key feature means
    manifest: dict[str, Any]     # the content of run.json


@dataclass(frozen=True)
class ValidationReport:
    rows_in: int
    rows_used: int
    rejected: dict[str, int]
    repeated_lines: int
    customers: int
    first_ts: dt.datetime
    last_ts: dt.datetime
    as_of: dt.datetime


def run(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
        progress: Progress | None = None) -> RunResult:
    """Segment the customers in ``inputs`` and write the run directory ``out`` atomically.

    Input that would not fit ``cfg.memory_limit`` (or ``cfg.buckets`` > 1) runs bucket by bucket
    (engine.bucketed), with the same result.
    """
    check_writable(out, overwrite=cfg.overwrite)
    n_buckets = cfg.buckets or plan_buckets(inputs, cfg)
    if n_buckets > 1:
        from segmint.engine.bucketed import run_bucketed

        return run_bucketed(inputs, out, cfg, n_buckets, progress)
    device = resolve_device(cfg.cluster.device)
    backend = backend_for(device)
    clock = StageClock(progress)
    cleaned = _scan_and_clean(inputs, cfg, clock)
    with clock.stage("features") as info:
        ft = compute_features(cleaned.lines, cleaned.as_of, cfg.features)
        info["customers"] = ft.table.height
    side = _side_tables(ft.table, cleaned, cfg, clock)
    clv, clv_report, features = _clv_stage(side.features, cfg.clv, clock)
    with clock.stage("preprocess") as info:
        feats = cfg.features.cluster_features or default_cluster_features(features.columns, ft.channels)
        # Samples are sets of customers chosen by a stable hash of their id.
        priority = customer_hash(features["customer_id"], cfg.cluster.seed)
        scaler = fit_scaler(features, feats, cfg.features.log_features, bottom_k(priority, SCALER_SAMPLE))
        x = scaler.transform(features)
        info["features"] = len(feats)
    with clock.stage("cluster") as info:
        scan = select_k(x, cfg.cluster, priority) if cfg.cluster.k is None else None
        k = scan.k if scan else cfg.cluster.k
        fit = fit_kmeans(x, k, cfg.cluster, priority, backend)
        info.update(k=k, trained_on=fit.n_train, device=device)
    with clock.stage("assign") as info:
        centroids, labels = _order_by_size(fit.centroids, assign(x, fit.centroids, backend))
        info["inertia"] = labels.inertia
    with clock.stage("profile"):
        table = _assigned(features, labels)
        profiles = build_profiles(table)
        if cfg.customers:
            side.files["segment_mix.parquet"] = (segment_mix(table, cfg.customers.attributes), None)
    model = Model(columns=cleaned.columns, features=cfg.features, channels=ft.channels,
                  rfm_cuts=ft.rfm_cuts, scaler=scaler, centroids=centroids,
                  names=tuple(profiles["name"]), clv=clv, clv_config=cfg.clv if clv else None,
                  provenance={"as_of": cleaned.as_of.isoformat(), "config_hash": config_hash(cfg),
                              "versions": versions(), "pseudonymized_ids": cfg.pseudonymize_ids})
    manifest = _manifest("run", inputs, cfg, cleaned, ft) | {
        "k": k,
        "k_scan": list(scan.rows) if scan else None,
        "clv": clv_report,
        **side.report,
        "clustering": clustering_report(fit, cfg.cluster, device, feats, labels.inertia, ft.table.height),
    }
    _write_run(out, cfg, table, profiles, cleaned, model, manifest, clock, side.files)
    return RunResult(Path(out), _summary(profiles), manifest)


def assign_customers(model_dir: str | Path, inputs: Sequence[str | Path], out: str | Path,
                     cfg: RunConfig, progress: Progress | None = None) -> RunResult:
    """Score the customers in ``inputs`` with a saved model; same layout as ``run``.

    The model fixes the column mapping, feature settings, channel vocabulary,
    RFM cut points, scaler and centroids; ``cfg`` supplies as-of, dedupe,
    pseudonymisation, overwrite, device and the memory budget (input that would
    not fit it is scored bucket by bucket, with the same result).
    """
    check_writable(out, overwrite=cfg.overwrite)
    device = resolve_device(cfg.cluster.device)
    model = Model.load(model_dir)
    cfg = dataclasses.replace(cfg, columns=model.columns, features=model.features)
    n_buckets = cfg.buckets or plan_buckets(inputs, cfg)
    if n_buckets > 1:
        from segmint.engine.bucketed import assign_bucketed

        return assign_bucketed(model, str(model_dir), inputs, out, cfg, n_buckets, device, progress)
    backend = backend_for(device)
    clock = StageClock(progress)
    cleaned = _scan_and_clean(inputs, cfg, clock)
    with clock.stage("features") as info:
        ft = compute_features(cleaned.lines, cleaned.as_of, model.features,
                              channels=model.channels, rfm_cuts=model.rfm_cuts)
        info["customers"] = ft.table.height
    features = ft.table
    if model.clv and model.clv_config:
        with clock.stage("clv"):
            features = features.hstack(predict_clv(features, model.clv, model.clv_config))
    with clock.stage("assign") as info:
        labels = assign(model.scaler.transform(ft.table), model.centroids, backend)
        info["inertia"] = labels.inertia
    with clock.stage("profile"):
        table = _assigned(features, labels)
        profiles = _with_model_names(build_profiles(table), model)
    manifest = _manifest("assign", inputs, cfg, cleaned, ft) | {
        "k": model.k, "model": str(model_dir), "model_provenance": model.provenance,
        "clustering": {"device": device, "inertia": labels.inertia, "features": list(model.scaler.features)},
    }
    _write_run(out, cfg, table, profiles, cleaned, None, manifest, clock)
    return RunResult(Path(out), _summary(profiles), manifest)


def compute_feature_table(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                          progress: Progress | None = None) -> pl.DataFrame:
    """Write the per-customer feature table to the Parquet file ``out`` (atomically)."""
    _, table, clock = _features_for(inputs, out, cfg, progress)
    with clock.stage("write"), staged_file(out, overwrite=cfg.overwrite) as tmp:
        _ids_out(table, cfg).write_parquet(tmp)
    return table


def compute_clv(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                progress: Progress | None = None) -> ClvParams:
    """Fit BG/NBD + Gamma-Gamma and write ``out/clv_params.json`` and ``out/clv.parquet``."""
    cleaned, table, clock = _features_for(inputs, out, cfg, progress)
    with clock.stage("clv") as info:
        params = fit_clv(table, cfg.clv)
        info.update(r=params.r, alpha=params.alpha, a=params.a, b=params.b)
    out_table = table.select("customer_id", "lt_frequency", "lt_recency", "lt_T", "lt_monetary").hstack(
        predict_clv(table, params, cfg.clv))
    with clock.stage("write"), staged_dir(out, overwrite=cfg.overwrite) as stage:
        (stage / "clv_params.json").write_text(json.dumps(params.to_dict() | {
            "as_of": cleaned.as_of.isoformat(), "horizon": cfg.clv.horizon,
            "discount_rate": cfg.clv.discount_rate}, indent=1))
        _ids_out(out_table, cfg).write_parquet(stage / "clv.parquet")
        _write_rejects(stage, cleaned, cfg)
    return params


def compute_cohorts(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                    progress: Progress | None = None) -> pl.DataFrame:
    """Write ``out/cohorts.parquet`` (long) and ``out/retention_pivot.parquet``; returns the long table."""
    check_writable(out, overwrite=cfg.overwrite)
    clock = StageClock(progress)
    cleaned = _scan_and_clean(inputs, cfg, clock)
    with clock.stage("cohorts") as info:
        table = cohort_table(cleaned.lines, cleaned.as_of.date())
        info["cohorts"] = table["cohort"].n_unique()
    with clock.stage("write"), staged_dir(out, overwrite=cfg.overwrite) as stage:
        table.write_parquet(stage / "cohorts.parquet")
        retention_pivot(table).write_parquet(stage / "retention_pivot.parquet")
        _write_rejects(stage, cleaned, cfg)
    return table


def abtest_split(run_dir: str | Path, out: str | Path, *, ratio: float, salt: str,
                 overwrite: bool = False) -> pl.DataFrame:
    """Write ``out`` (Parquet: customer_id, segment, group) for the customers of a run."""
    check_writable(out, overwrite=overwrite)
    groups = split_groups(_read_table(Path(run_dir) / "assignments", "run assignments"), ratio, salt)
    with staged_file(out, overwrite=overwrite) as tmp:
        groups.write_parquet(tmp)
    return groups


def abtest_evaluate(assignments: str | Path, outcomes: str | Path, out: str | Path, *,
                    cost_per_contact: float, overwrite: bool = False) -> pl.DataFrame:
    """Write ``out/abtest.parquet`` and ``out/abtest.json``: per-segment and overall lift."""
    check_writable(out, overwrite=overwrite)
    result = evaluate(_read_table(assignments, "assignments"), _read_table(outcomes, "outcomes"),
                      cost_per_contact)
    with staged_dir(out, overwrite=overwrite) as stage:
        result.write_parquet(stage / "abtest.parquet")
        (stage / "abtest.json").write_text(json.dumps(result.to_dicts(), indent=1))
    return result


def validate(inputs: Sequence[str | Path], cfg: RunConfig,
             progress: Progress | None = None) -> ValidationReport:
    """Check the contract and count data-quality issues; writes nothing."""
    cleaned = _scan_and_clean(inputs, cfg, StageClock(progress))
    ts = cleaned.lines["ts"]
    return ValidationReport(
        rows_in=cleaned.rows_in, rows_used=cleaned.rows_used, rejected=cleaned.rejected,
        repeated_lines=cleaned.repeated_lines, customers=cleaned.lines["customer_id"].n_unique(),
        first_ts=ts.min(), last_ts=ts.max(), as_of=cleaned.as_of)


def plan_buckets(inputs: Sequence[str | Path], cfg: RunConfig) -> int:
    """Buckets needed so that one holds at most memory_limit / BYTES_PER_ROW input rows, and,
    once the input is bucketed at all, at most MAX_BUCKET_ROWS."""
    lf, _ = scan(inputs, cfg.columns)
    try:
        rows = lf.select(pl.len()).collect().item()
    except pl.exceptions.PolarsError as exc:
        msg = f"cannot read input {list(map(str, inputs))}: {str(exc).splitlines()[0]}"
        raise InputContractError(msg) from None
    limit = cfg.memory_limit or default_memory_limit()
    n = max(1, -(-rows * BYTES_PER_ROW // limit))
    return n if n == 1 else max(n, -(-rows // MAX_BUCKET_ROWS))


def default_memory_limit() -> int:
    """A quarter of the memory this process may use (cgroup limit or MemAvailable): room for the
    budgeted data, Polars' and NumPy's working copies, and whatever else runs on the machine."""
    candidates = []
    try:
        cg = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if cg != "max":
            candidates.append(int(cg))
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return (min(candidates) if candidates else 8 * 2**30) // 4


def default_cluster_features(columns: Sequence[str], channels: Sequence[str]) -> tuple[str, ...]:
    """Behavioural defaults: timing, frequency, basket value, refunds, category breadth, channel mix."""
    extra = ("category_entropy",) if "category_entropy" in columns else ()
    return (*_BASE_CLUSTER_FEATURES, *extra, *channel_columns(channels))


def clustering_report(fit: KMeansResult, cfg: ClusterConfig, device: str, features: Sequence[str],
                      inertia: float, customers: int) -> dict[str, Any]:
    """The ``clustering`` section of run.json, training sample stated."""
    return {
        "device": device, "features": list(features), "n_train": fit.n_train, "n_init_sample": fit.n_init,
        "niter": cfg.niter, "nredo": cfg.nredo, "train_inertia": fit.train_inertia, "inertia": inertia,
        "note": (f"centroids trained on {fit.n_train} of {customers} customers "
                 f"(max_points_per_centroid={cfg.max_points_per_centroid}); every customer is assigned"),
    }


def _features_for(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                  progress: Progress | None) -> tuple[CleanResult, pl.DataFrame, StageClock]:
    """The shared start of the feature-table commands: output check, scan, clean, features."""
    check_writable(out, overwrite=cfg.overwrite)
    clock = StageClock(progress)
    cleaned = _scan_and_clean(inputs, cfg, clock)
    with clock.stage("features") as info:
        table = compute_features(cleaned.lines, cleaned.as_of, cfg.features).table
        info["customers"] = table.height
    return cleaned, table, clock


def _scan_and_clean(inputs: Sequence[str | Path], cfg: RunConfig, clock: StageClock) -> CleanResult:
    if cfg.pseudonymize_ids:
        require_key()
    with clock.stage("scan") as info:
        raw, columns = read_input(inputs, cfg.columns)
        info["rows"] = raw.height
    with clock.stage("clean") as info:
        cleaned = clean(raw, dataclasses.replace(cfg, columns=columns))
        info.update(used=cleaned.rows_used, rejected=sum(cleaned.rejected.values()))
    return cleaned


@dataclass
class _Side:
    """What the optional events and customers tables add to a run."""

    features: pl.DataFrame                                  # the feature table, enriched, same row order
    files: dict[str, tuple[pl.DataFrame, str | None]]       # relative path -> (table, id column to pseudonymise)
    report: dict[str, Any]                                  # for run.json


def _side_tables(features: pl.DataFrame, cleaned: CleanResult, cfg: RunConfig, clock: StageClock) -> _Side:
    side = _Side(features, {}, {})
    if cfg.events is not None:
        src = cfg.events
        with clock.stage("events") as info:
            raw = read_columns(src.paths, src.columns())
            check_customer(raw.schema, src.customer, "the events input")
            check_time(raw.schema, src.time, src.time_format, "the events input", "--event-time-format")
            ev = clean_events(raw, src, cleaned.as_of)
            funnel = funnel_table(features, event_features(ev.events, cleaned.as_of))
            side.features = features.join(funnel.select("customer_id", "funnel_stage", *EVENT_FEATURES),
                                          on="customer_id", how="left", maintain_order="left")
            side.files["funnel.parquet"] = (funnel, "customer_id")
            side.files["rejects/events-part-0.parquet"] = (ev.rejects, src.customer)
            stages = dict(funnel.group_by("funnel_stage").len().iter_rows())
            side.report["events"] = {"rows": {"in": ev.rows_in, "used": ev.events.height,
                                              "rejected": sum(ev.rejected.values()),
                                              "rejected_by_reason": ev.rejected},
                                     "funnel": {str(k): int(v) for k, v in sorted(stages.items())}}
            info.update(rows=ev.rows_in, prospects=funnel.height - features.height)
    if cfg.customers is not None:
        src = cfg.customers
        with clock.stage("customers") as info:
            raw = read_columns(src.paths, {src.customer: "--customers-id-col",
                                           **{a: "--customer-attrs" for a in src.attributes}})
            side.features, missing = attach(side.features, raw, src.customer, src.attributes)
            side.report["customers_table"] = {"attributes": list(src.attributes), "without_a_row": missing}
            info["without_a_row"] = missing
    return side


def _clv_stage(table: pl.DataFrame, cfg: ClvConfig,
               clock: StageClock) -> tuple[ClvParams | None, dict[str, Any], pl.DataFrame]:
    """Fit and predict CLV; data that cannot support a fit is reported, not fatal to segmentation."""
    params, report = fit_clv_reported(table, cfg, clock)
    return params, report, table.hstack(predict_clv(table, params, cfg)) if params else table


def fit_clv_reported(table: pl.DataFrame, cfg: ClvConfig, clock: StageClock) -> tuple[ClvParams | None, dict]:
    """The CLV fit and what run.json says of it (the parameters, or why it was skipped)."""
    if not cfg.enabled:
        return None, {"skipped": "disabled in config"}
    with clock.stage("clv") as info:
        try:
            params = fit_clv(table, cfg)
        except InputContractError as exc:
            info["skipped"] = str(exc)
            return None, {"skipped": str(exc)}
        info.update(r=params.r, alpha=params.alpha, a=params.a, b=params.b)
        return params, params.to_dict()


def _order_by_size(centroids: np.ndarray, a: Assignment) -> tuple[np.ndarray, Assignment]:
    """Renumber segments by decreasing size (ties by old id): segment 0 is the largest."""
    k = centroids.shape[0]
    order = np.argsort(-np.bincount(a.segment, minlength=k), kind="stable")
    new_id = np.empty(k, np.int32)
    new_id[order] = np.arange(k, dtype=np.int32)
    return centroids[order], Assignment(new_id[a.segment], a.distance, a.margin)


def _assigned(features: pl.DataFrame, a: Assignment) -> pl.DataFrame:
    return features.select(
        "customer_id",
        pl.Series("segment", a.segment),
        pl.Series("distance", a.distance),
        pl.Series("margin", a.margin),
        pl.exclude("customer_id"),
    )


def _with_model_names(profiles: pl.DataFrame, model: Model) -> pl.DataFrame:
    # Scored customers keep the training names of their segments.
    names = dict(enumerate(model.names))
    return profiles.with_columns(name=pl.col("segment").replace_strict(names, return_dtype=pl.String))


def _ids_out(table: pl.DataFrame, cfg: RunConfig, column: str = "customer_id") -> pl.DataFrame:
    if not cfg.pseudonymize_ids:
        return table
    return table.with_columns(pseudonymize(table[column]).alias(column))


def _summary(profiles: pl.DataFrame) -> pl.DataFrame:
    return profiles.select("segment", "name", "customers", "share", "revenue_share",
                           *[f"{f}_mean" for f in SUMMARY_FEATURES],
                           *(["clv_total"] if "clv_total" in profiles.columns else []))


def run_manifest(command: str, inputs: Sequence[str | Path], cfg: RunConfig, columns: Columns, as_of: dt.datetime,
                 rows: dict[str, Any], customers: int) -> dict[str, Any]:
    """The part of run.json every run and assign writes, in memory or bucketed (``columns``: the
    resolved column mapping); the writer adds the stage times."""
    return {
        "command": command,
        "inputs": [str(p) for p in inputs],
        "columns": dataclasses.asdict(columns),
        "as_of": as_of.isoformat(),
        "rows": rows,
        "customers": customers,
        "seed": cfg.cluster.seed,
        "threads": numba.get_num_threads(),
        "versions": versions(),
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
    }


def _manifest(command: str, inputs: Sequence[str | Path], cfg: RunConfig, cleaned: CleanResult,
              ft: FeatureTable) -> dict[str, Any]:
    rows = {"in": cleaned.rows_in, "used": cleaned.rows_used, "rejected": sum(cleaned.rejected.values()),
            "rejected_by_reason": cleaned.rejected, "repeated_lines": cleaned.repeated_lines}
    return run_manifest(command, inputs, cfg, cleaned.columns, cleaned.as_of, rows, ft.table.height)


def _read_table(path: str | Path, what: str) -> pl.DataFrame:
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path)
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read the {what} file {path}: {str(exc).splitlines()[0]}"
        raise InputContractError(msg) from None


def write_segment_parts(stage: Path, table: pl.DataFrame, cfg: RunConfig, part: int) -> None:
    """``stage/assignments/segment=S/part-{part}.parquet`` for every segment S of ``table``."""
    table = _ids_out(table, cfg)
    for seg in sorted(table["segment"].unique().to_list()):
        folder = stage / "assignments" / f"segment={seg}"
        folder.mkdir(parents=True, exist_ok=True)
        table.filter(pl.col("segment") == seg).write_parquet(folder / f"part-{part}.parquet")


def write_profiles(stage: Path, profiles: pl.DataFrame) -> None:
    profiles.write_parquet(stage / "profiles.parquet")
    (stage / "profiles.json").write_text(json.dumps(profiles.to_dicts(), indent=1, default=str))


def _write_rejects(stage: Path, cleaned: CleanResult, cfg: RunConfig) -> None:
    (stage / "rejects").mkdir()
    _ids_out(cleaned.rejects, cfg, cleaned.columns.customer).write_parquet(stage / "rejects" / "part-0.parquet")


def _write_run(out: str | Path, cfg: RunConfig, table: pl.DataFrame, profiles: pl.DataFrame,
               cleaned: CleanResult, model: Model | None, manifest: dict[str, Any],
               clock: StageClock, files: dict[str, tuple[pl.DataFrame, str | None]] | None = None) -> None:
    with clock.stage("write"), staged_dir(out, overwrite=cfg.overwrite) as stage:
        write_segment_parts(stage, table, cfg, 0)
        write_profiles(stage, profiles)
        if model is not None:
            model.save(stage / "model")
        _write_rejects(stage, cleaned, cfg)
        for name, (frame, id_col) in (files or {}).items():
            (frame if id_col is None else _ids_out(frame, cfg, id_col)).write_parquet(stage / name)
        manifest["stages"] = clock.stages
        (stage / "run.json").write_text(json.dumps(manifest, indent=1, default=str))
