"""Map: one bucket's rows to clean lines, per-customer features and small side results.

``map_bucket`` is a function of (the bucket's files, the plan, the run-wide as-of and
channel vocabulary): it writes the bucket's rejects (and funnel, with events) to the
output, its feature table to ``work/features/bucket-B.parquet``, and returns counts
that add up across buckets. With one bucket the as-of and the vocabulary are derived
here, from the same rows the partition pass would have seen.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
import polars as pl

from segmint.engine.analytics.attributes import attach
from segmint.engine.analytics.cohorts import CohortPartials, cohort_partials
from segmint.engine.analytics.funnel import EVENT_FEATURES, event_features, funnel_table
from segmint.engine.features.table import customer_features, top_channels
from segmint.engine.hashing import customer_hash
from segmint.engine.io import store
from segmint.engine.io.clean import EVENT_REASONS, REASONS, RowStats, clean, clean_events
from segmint.engine.io.ids import customer_expr
from segmint.engine.io.sink import Layout
from segmint.engine.pipeline.partition import bucket_rows
from segmint.engine.pipeline.plan import Plan

__all__ = ["MapJob", "BucketResult", "Counts", "map_bucket", "features_path", "HASH"]

# The per-customer sampling hash, stored with the features (samples are sets of customers).
HASH = "__hash"


@dataclass(frozen=True)
class MapJob:
    plan: Plan
    bucket: int
    as_of: dt.datetime | None           # None: derive from this (only) bucket
    channels: tuple[str, ...] | None    # None: derive from this (only) bucket
    mode: str                           # "features", "cohorts" or "clean" (validate)
    layout: Layout | None               # where rejects and funnel parts go; None writes nothing


@dataclass
class Counts:
    """Counts that add up across buckets (run.json's ``rows``, ``events`` and ``customers_table``)."""

    rows_in: int = 0
    rows_used: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    rejected_amount: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in REASONS})
    repeats: int = 0
    customers: int = 0
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    events_in: int = 0
    events_used: int = 0
    events_rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_REASONS, 0))
    funnel: dict[str, int] = field(default_factory=dict)
    without_customer_row: int = 0

    def add(self, other: Counts) -> None:
        for name in ("rows_in", "rows_used", "repeats", "customers", "events_in", "events_used",
                     "without_customer_row"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("rejected", "events_rejected", "funnel"):
            mine = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n
        for reason, parts in other.rejected_amount.items():
            self.rejected_amount[reason] = self.rejected_amount[reason] + parts
        times = [t for t in (self.first_ts, other.first_ts) if t is not None]
        self.first_ts = min(times) if times else None
        times = [t for t in (self.last_ts, other.last_ts) if t is not None]
        self.last_ts = max(times) if times else None


@dataclass(frozen=True)
class BucketResult:
    bucket: int
    counts: Counts
    as_of: dt.datetime
    channels: tuple[str, ...] | None
    stats: RowStats | None = None                 # one bucket: what the partition pass would have returned
    cohorts: CohortPartials | None = None         # mode "cohorts"
    has_customers: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # where the bucket's time went
    files: tuple[str, ...] = ()                   # output parts written (relative to the output's root)


def map_bucket(job: MapJob) -> BucketResult:
    plan, cfg = job.plan, job.plan.cfg
    t0 = time.perf_counter()
    raw = bucket_rows(plan, "tx", job.bucket)
    t1 = time.perf_counter()
    cleaned = clean(raw, cfg, as_of=job.as_of, now=plan.now)
    del raw
    seconds = {"read": t1 - t0, "clean": time.perf_counter() - t1}
    as_of = cleaned.as_of
    channels = job.channels
    if channels is None and cleaned.stats is not None:
        channels = top_channels(cleaned.stats.channels, cfg.features.max_channels)
    counts = Counts(rows_in=cleaned.rows_in, rows_used=cleaned.rows_used, rejected=cleaned.rejected,
                    rejected_amount=cleaned.rejected_amount, repeats=cleaned.repeats,
                    customers=cleaned.lines["customer_id"].n_unique(),
                    first_ts=cleaned.lines["ts"].min(), last_ts=cleaned.lines["ts"].max())
    files: list[str] = []
    if job.layout is not None:
        files.append(job.layout.write_part(cleaned.rejects, "rejects", job.bucket))
    result = dict(bucket=job.bucket, counts=counts, as_of=as_of, channels=channels, stats=cleaned.stats,
                  has_customers=cleaned.rows_used > 0, seconds=seconds)
    if job.mode == "clean":
        return BucketResult(**result, files=tuple(files))
    if job.mode == "cohorts":
        return BucketResult(**result, cohorts=cohort_partials(cleaned.lines, as_of), files=tuple(files))
    t2 = time.perf_counter()
    table = customer_features(cleaned.lines, as_of, channels or (), cfg.features)
    seconds["features"] = time.perf_counter() - t2
    del cleaned
    table = _with_events(table, plan, job, as_of, counts, files)
    table = _with_attributes(table, plan, job.bucket, counts)
    table = table.with_columns(pl.Series(HASH, customer_hash(table["customer_id"], cfg.cluster.seed)))
    store.write_parquet(table, features_path(plan, job.bucket), plan.options, scratch=True)
    return BucketResult(**result, files=tuple(files))


def features_path(plan: Plan, bucket: int) -> str:
    return store.join(plan.work, "features", f"bucket-{bucket:05d}.parquet")


def _with_events(table: pl.DataFrame, plan: Plan, job: MapJob, as_of: dt.datetime, counts: Counts,
                 files: list[str]) -> pl.DataFrame:
    src = plan.cfg.events
    if src is None or plan.events is None:
        return table
    raw = bucket_rows(plan, "events", job.bucket)
    ev = clean_events(raw, src, as_of, future_after=None if plan.cfg.as_of else plan.now)
    del raw
    funnel = funnel_table(table, event_features(ev.events, as_of))
    counts.events_in += ev.rows_in
    counts.events_used += ev.events.height
    counts.events_rejected = ev.rejected
    counts.funnel = {str(k): int(v) for k, v in funnel.group_by("funnel_stage").len().iter_rows()}
    if job.layout is not None:
        files.append(job.layout.write_part(funnel, "funnel", job.bucket))
        files.append(job.layout.write_part(ev.rejects, "event_rejects", job.bucket))
    return table.join(funnel.select("customer_id", "funnel_stage", *EVENT_FEATURES), on="customer_id",
                      how="left", maintain_order="left")


def _with_attributes(table: pl.DataFrame, plan: Plan, bucket: int, counts: Counts) -> pl.DataFrame:
    src = plan.cfg.customers
    if src is None or plan.customers is None:
        return table
    raw = bucket_rows(plan, "customers", bucket)
    raw = raw.with_columns(customer_expr(raw.schema, src.customer).alias(src.customer))
    table, missing = attach(table, raw, src.customer, src.attributes)
    counts.without_customer_row += missing
    return table
