"""Bucket-by-bucket execution: memory bounded by a budget, not by the input.

One streaming pass hash-partitions the raw mapped rows by a stable hash of
the customer id, so every row of a customer lands in one bucket. Each bucket
is then cleaned (with the as-of found over all the input in one more
streaming pass) and reduced to per-customer features alone. What needs the
whole population is fitted on small gathered columns: RFM cut points and CLV
on a few columns of every customer (sorted by id, as in memory), the scaler
and k-means on the customers of lowest hash (the same customers an in-memory
run samples). Customers are then assigned and written bucket by bucket. Same
input, config and threads: the same features and segments as ``run`` in
memory (a test).

Profiles: sizes, revenue, orders and CLV totals are exact; the per-feature
distribution columns come from the PROFILE_SAMPLE customers of lowest hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from segmint.engine.analytics.clv import predict_clv
from segmint.engine.cluster.assign import Assignment, assign
from segmint.engine.cluster.device import backend_for, resolve_device
from segmint.engine.cluster.kmeans import fit_kmeans
from segmint.engine.cluster.select_k import select_k
from segmint.engine.config import RunConfig, parse_as_of
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.features.rfm import fit_rfm_cuts
from segmint.engine.features.table import add_scores, base_features, channel_counts, compute_features, top_channels
from segmint.engine.hashing import bottom_k, customer_hash
from segmint.engine.io.clean import REASONS, clean, latest_valid_ts
from segmint.engine.io.scan import scan
from segmint.engine.io.sink import check_writable, staged_dir
from segmint.engine.model import Model
from segmint.engine.preprocess import fit_scaler
from segmint.engine.profile import build_profiles
from segmint.engine.progress import Progress, StageClock

__all__ = ["run_bucketed", "assign_bucketed", "BUCKET_SEED", "PROFILE_SAMPLE"]

BUCKET_SEED = 0x5E6_B0C
PROFILE_SAMPLE = 1_000_000
_GLOBAL = ("customer_id", "recency_days", "frequency", "monetary_total",
           "lt_frequency", "lt_recency", "lt_T", "lt_monetary")


def run_bucketed(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig, n_buckets: int,
                 progress: Progress | None = None) -> Any:
    """``pipeline.run`` for input larger than memory, in ``n_buckets`` buckets."""
    from segmint.engine import pipeline as p  # the run's shared output helpers

    check_writable(out, overwrite=cfg.overwrite)
    device = resolve_device(cfg.cluster.device)
    backend = backend_for(device)
    out = Path(out)
    with _cleaned_buckets(inputs, out, cfg, n_buckets, progress) as (cfg, as_of, buckets, counts, channels, work, clock):
        gathered, candidates, filled = _features(buckets, as_of, channels, cfg, work, clock)
        cuts = fit_rfm_cuts(gathered)
        clv, clv_report = p.fit_clv_reported(gathered, cfg.clv, clock)

        def complete(table: pl.DataFrame) -> pl.DataFrame:
            table = add_scores(table, cuts, cfg.features)
            return table.hstack(predict_clv(table, clv, cfg.clv)) if clv else table

        with clock.stage("preprocess") as info:
            candidates = complete(candidates)
            feats = cfg.features.cluster_features or p.default_cluster_features(candidates.columns, channels)
            priority = customer_hash(candidates["customer_id"], cfg.cluster.seed)
            scaler = fit_scaler(candidates, feats, cfg.features.log_features, bottom_k(priority, p.SCALER_SAMPLE))
            x = scaler.transform(candidates)
            info["features"] = len(feats)
        with clock.stage("cluster") as info:
            k_scan = select_k(x, cfg.cluster, priority) if cfg.cluster.k is None else None
            k = k_scan.k if k_scan else cfg.cluster.k
            if k > gathered.height:
                msg = f"k={k} is larger than the number of customers ({gathered.height}); lower --k"
                raise ConfigError(msg)
            fit = fit_kmeans(x, k, cfg.cluster, priority, backend)
            info.update(k=k, trained_on=fit.n_train, device=device)
        with clock.stage("assign") as info:
            # Scores and CLV are computed here only if clustering uses them (they are costly at scale).
            base_cols = set(pl.read_parquet_schema(work / "features" / f"{filled[0]}.parquet"))
            prepare = complete if set(feats) - base_cols else (lambda t: t)
            labels = [assign(scaler.transform(prepare(pl.read_parquet(work / "features" / f"{b}.parquet"))),
                             fit.centroids, backend) for b in filled]
            merged = Assignment(np.concatenate([a.segment for a in labels]), np.concatenate([a.distance for a in labels]),
                                np.concatenate([a.margin for a in labels]))
            centroids, relabelled = p._order_by_size(fit.centroids, merged)
            info["inertia"] = relabelled.inertia
        threshold = np.sort(customer_hash(gathered["customer_id"], cfg.cluster.seed))[
            min(PROFILE_SAMPLE, gathered.height) - 1]
        model_cfg = dict(columns=cfg.columns, features=cfg.features, channels=channels, rfm_cuts=cuts,
                         scaler=scaler, centroids=centroids, clv=clv, clv_config=cfg.clv if clv else None)
        manifest = p.run_manifest("run", inputs, cfg, cfg.columns, as_of, counts, gathered.height) | {
            "buckets": len(buckets), "k": k, "k_scan": list(k_scan.rows) if k_scan else None, "clv": clv_report,
            "clustering": p.clustering_report(fit, cfg.cluster, device, feats, relabelled.inertia, gathered.height),
        }
        parts, start = {}, 0
        for b, a in zip(filled, labels, strict=True):
            n = a.segment.size
            parts[b] = Assignment(relabelled.segment[start:start + n], a.distance, a.margin)
            start += n

        def assigned(b: int) -> pl.DataFrame:
            return p._assigned(complete(pl.read_parquet(work / "features" / f"{b}.parquet")), parts[b])

        def model_for(profiles: pl.DataFrame) -> Model:
            return Model(**model_cfg, names=tuple(profiles["name"]),
                         provenance={"as_of": manifest["as_of"], "config_hash": manifest["config_hash"],
                                     "versions": manifest["versions"], "pseudonymized_ids": cfg.pseudonymize_ids})

        profiles = _write(out, cfg, buckets, filled, assigned, threshold, manifest, clock, work, model_for=model_for)
        return p.RunResult(out, p._summary(profiles), manifest)


def assign_bucketed(model: Model, model_dir: str, inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                    n_buckets: int, device: str, progress: Progress | None = None) -> Any:
    """``pipeline.assign_customers`` for input larger than memory: every bucket is scored with the
    model alone (its channels, cut points, CLV parameters, scaler and centroids), so the result is
    the in-memory one."""
    from segmint.engine import pipeline as p

    backend = backend_for(device)
    out = Path(out)
    with _cleaned_buckets(inputs, out, cfg, n_buckets, progress) as (cfg, as_of, buckets, counts, _, work, clock):
        filled, hashes, inertia = [], [], 0.0
        (work / "assigned").mkdir()
        with clock.stage("assign") as info:
            for b in buckets:
                if (lines := _take_lines(work, b)) is None:
                    continue
                table = compute_features(lines, as_of, model.features, channels=model.channels,
                                         rfm_cuts=model.rfm_cuts).table
                del lines
                labels = assign(model.scaler.transform(table), model.centroids, backend)
                if model.clv and model.clv_config:
                    table = table.hstack(predict_clv(table, model.clv, model.clv_config))
                p._assigned(table, labels).write_parquet(work / "assigned" / f"{b}.parquet")
                filled.append(b)
                hashes.append(customer_hash(table["customer_id"], cfg.cluster.seed))
                inertia += labels.inertia
            customers = sum(h.size for h in hashes)
            info.update(customers=customers, inertia=inertia)
        threshold = np.sort(np.concatenate(hashes))[min(PROFILE_SAMPLE, customers) - 1]
        manifest = p.run_manifest("assign", inputs, cfg, cfg.columns, as_of, counts, customers) | {
            "buckets": len(buckets), "k": model.k, "model": model_dir, "model_provenance": model.provenance,
            "clustering": {"device": device, "inertia": inertia, "features": list(model.scaler.features)},
        }
        profiles = _write(out, cfg, buckets, filled, lambda b: pl.read_parquet(work / "assigned" / f"{b}.parquet"),
                          threshold, manifest, clock, work, names=lambda pr: p._with_model_names(pr, model))
        return p.RunResult(out, p._summary(profiles), manifest)


class _Cleaned(NamedTuple):
    cfg: RunConfig            # with the resolved column mapping
    as_of: dt.datetime
    buckets: list[int]
    counts: dict[str, Any]    # run.json's "rows"
    channels: tuple[str, ...]
    work: Path
    clock: StageClock


@contextlib.contextmanager
def _cleaned_buckets(inputs, out: Path, cfg: RunConfig, n_buckets: int, progress: Progress | None):
    """Partition and clean the input into buckets in a work folder next to ``out``, removed on exit."""
    _check_bucketable(cfg)
    clock = StageClock(progress)
    work = out.parent / f".{out.name}.work-{uuid.uuid4().hex[:8]}"
    try:
        cfg, as_of, buckets = _partition(inputs, cfg, n_buckets, work, clock)
        counts, channels = _clean_buckets(buckets, cfg, as_of, work, clock)
        yield _Cleaned(cfg, as_of, buckets, counts, channels, work, clock)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_bucketable(cfg: RunConfig) -> None:
    if cfg.events is not None or cfg.customers is not None:
        msg = "--events and --customers are not supported yet when the input is processed in buckets"
        raise ConfigError(msg)
    if cfg.dedupe_on and cfg.columns.customer not in cfg.dedupe_on:
        msg = (f"in bucketed runs --dedupe-on must include the customer column ({cfg.columns.customer}) "
               f"so that duplicates share a bucket")
        raise ConfigError(msg)


def _partition(inputs, cfg: RunConfig, n_buckets: int, work: Path, clock: StageClock):
    with clock.stage("partition") as info:
        lf, columns = scan(inputs, cfg.columns)
        cfg = dataclasses.replace(cfg, columns=columns)
        as_of = parse_as_of(cfg.as_of) if cfg.as_of else latest_valid_ts(lf, cfg)
        if as_of is None:
            msg = f"no usable rows in {list(map(str, inputs))}: every row misses a customer, time or amount"
            raise InputContractError(msg)
        cust = pl.col(columns.customer)
        bucket = cust.map_batches(lambda s: pl.Series(customer_hash(s, BUCKET_SEED) % np.uint64(n_buckets),
                                                       dtype=pl.UInt64).cast(pl.UInt32),
                                  return_dtype=pl.UInt32, is_elementwise=True)
        try:
            lf.with_columns(__bucket=bucket).sink_parquet(
                pl.PartitionBy(work / "raw", key="__bucket", include_key=False), mkdir=True)
        except pl.exceptions.PolarsError as exc:
            msg = f"cannot read input {list(map(str, inputs))}: {str(exc).splitlines()[0]}"
            raise InputContractError(msg) from None
        buckets = sorted(int(d.name.split("=")[1]) for d in (work / "raw").iterdir())
        info.update(buckets=len(buckets))
    return cfg, as_of, buckets


def _clean_buckets(buckets, cfg: RunConfig, as_of, work: Path, clock: StageClock):
    rows = {"in": 0, "used": 0, "rejected": 0, "rejected_by_reason": dict.fromkeys(REASONS, 0), "repeated_lines": 0}
    channel_tables = []
    (work / "lines").mkdir()
    (work / "rejects").mkdir()
    with clock.stage("clean") as info:
        for b in buckets:
            raw = pl.read_parquet(work / "raw" / f"__bucket={b}")
            result = clean(raw, cfg, as_of=as_of, allow_empty=True)
            rows["in"] += result.rows_in
            rows["used"] += result.rows_used
            rows["repeated_lines"] += result.repeated_lines
            for reason, n in result.rejected.items():
                rows["rejected_by_reason"][reason] += n
            result.lines.write_parquet(work / "lines" / f"{b}.parquet")
            result.rejects.write_parquet(work / "rejects" / f"{b}.parquet")
            channel_tables.append(channel_counts(result.lines))
            shutil.rmtree(work / "raw" / f"__bucket={b}")
        rows["rejected"] = sum(rows["rejected_by_reason"].values())
        if rows["used"] == 0:
            msg = (f"no usable rows: all {rows['in']} rows were rejected "
                   f"({', '.join(f'{k}: {v}' for k, v in rows['rejected_by_reason'].items() if v)})")
            raise InputContractError(msg)
        info.update(used=rows["used"], rejected=rows["rejected"])
    return rows, top_channels(pl.concat(channel_tables), cfg.features.max_channels)


def _features(buckets, as_of, channels, cfg: RunConfig, work: Path, clock: StageClock):
    """Per-bucket base features to disk; returns every customer's global columns (sorted by id), the
    sampling candidates (the customers of lowest hash, enough for any global sample), and the
    buckets that hold customers."""
    from segmint.engine import pipeline as p

    need = max(p.SCALER_SAMPLE, cfg.cluster.max_points_per_centroid * (cfg.cluster.k or cfg.cluster.k_max),
               cfg.cluster.select_sample)
    gathered, filled = [], []
    cand: pl.DataFrame | None = None
    (work / "features").mkdir()
    with clock.stage("features") as info:
        for b in buckets:
            if (lines := _take_lines(work, b)) is None:
                continue
            table = base_features(lines, as_of, channels)
            del lines
            table.write_parquet(work / "features" / f"{b}.parquet")
            filled.append(b)
            gathered.append(table.select(*[c for c in _GLOBAL if c in table.columns]))
            # Keep only the `need` customers of lowest hash seen so far: bounded memory.
            cand = table if cand is None else pl.concat([cand, table])
            cand = cand[bottom_k(customer_hash(cand["customer_id"], cfg.cluster.seed), need)]
        # Concatenate without copying, drop the parts, then sort: two copies at most, not three.
        gathered_df = pl.concat(gathered, rechunk=False)
        gathered.clear()
        gathered_df = gathered_df.sort("customer_id")
        cand = cand.sort("customer_id")
        info["customers"] = gathered_df.height
    return gathered_df, cand, filled


def _take_lines(work: Path, bucket: int) -> pl.DataFrame | None:
    """The bucket's cleaned lines (None if it has none); the file is removed once read, and the
    caller holds the only reference, so ``del`` frees them."""
    path = work / "lines" / f"{bucket}.parquet"
    lines = pl.read_parquet(path)
    path.unlink()
    return lines if lines.height else None


def _write(out: Path, cfg: RunConfig, buckets, filled, assigned, threshold, manifest: dict, clock: StageClock,
           work: Path, *, model_for=None, names=None) -> pl.DataFrame:
    """Write the run directory bucket by bucket; ``assigned(b)`` is bucket b's assigned table.

    ``model_for(profiles)`` makes the model to save (run); ``names(profiles)`` renames the
    segments (assign, which keeps the model's names).
    """
    from segmint.engine import pipeline as p

    sample, totals = [], []
    with clock.stage("write"), staged_dir(out, overwrite=cfg.overwrite) as stage:
        for b in filled:
            table = assigned(b)
            totals.append(table.group_by("segment").agg(
                pl.len().alias("customers"), pl.col("monetary_total").sum().alias("revenue"),
                pl.col("frequency").sum().alias("orders"),
                *([pl.col("clv").sum().alias("clv_total")] if "clv" in table.columns else [])))
            sample.append(table.filter(pl.Series(customer_hash(table["customer_id"], cfg.cluster.seed) <= threshold)))
            p.write_segment_parts(stage, table, cfg, b)
        sampled = pl.concat(sample)
        profiles = _exact_totals(build_profiles(sampled), pl.concat(totals))
        if names is not None:
            profiles = names(profiles)
        if model_for is not None:
            model_for(profiles).save(stage / "model")
        p.write_profiles(stage, profiles)
        (stage / "rejects").mkdir()
        for b in buckets:
            rejects = pl.read_parquet(work / "rejects" / f"{b}.parquet")
            p._ids_out(rejects, cfg, cfg.columns.customer).write_parquet(stage / "rejects" / f"part-{b}.parquet")
        manifest["profiles_note"] = (f"per-feature statistics from the {sampled.height} customers of lowest hash; "
                                     f"sizes, revenue, orders and CLV totals exact")
        manifest["stages"] = clock.stages
        (stage / "run.json").write_text(json.dumps(manifest, indent=1, default=str))
    return profiles


def _exact_totals(profiles: pl.DataFrame, totals: pl.DataFrame) -> pl.DataFrame:
    exact = totals.group_by("segment").agg(pl.all().sum()).sort("segment")
    n, revenue = exact["customers"].sum(), exact["revenue"].sum()
    exact = exact.with_columns(share=pl.col("customers") / n,
                               revenue_share=pl.col("revenue") / revenue if revenue else pl.lit(0.0),
                               aov_kpi=pl.col("revenue") / pl.col("orders")).drop("orders")
    keep = [c for c in profiles.columns if c not in exact.columns or c == "segment"]
    return profiles.select(keep).join(exact, on="segment", how="left").select(profiles.columns)
