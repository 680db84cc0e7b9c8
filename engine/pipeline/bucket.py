"""Map: one bucket's rows to clean lines, per-customer features and small side results.

``map_bucket`` is a function of (the bucket's files, the plan, the run-wide as-of and
channel vocabulary): it writes the bucket's rejects (and funnel, with events) to the
output, its feature table to ``work/features/bucket-B.arrow`` (``features_path``), and returns counts
that add up across buckets. With one bucket the as-of and the vocabulary are derived
here, from the same rows the partition pass would have seen. A job that ``keep``s its
table (the only bucket, mapped in the process that goes on to fit and score it) returns
it instead of writing it: the stages after read it with ``feature_frame`` either way.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from segmint.engine import exact
from segmint.engine.analytics.attributes import attach
from segmint.engine.analytics.cohorts import CohortPartials, cohort_partials
from segmint.engine.analytics.funnel import EVENT_FEATURES, event_features, funnel_table
from segmint.engine.features.build import channel_columns, map_lines
from segmint.engine.hashing import customer_hash
from segmint.engine.io import store
from segmint.engine.io.clean import EVENT_REASONS, REASONS, clean_events, reason_column
from segmint.engine.io.ids import customer_expr
from segmint.engine.io.sink import Layout
from segmint.engine.pipeline.partition import (Releases, bucket_chunks, bucket_rows, bucket_source, read_tables,
                                               reread)
from segmint.engine.pipeline.plan import Plan

__all__ = ["MapJob", "BucketResult", "Counts", "Shares", "map_bucket", "feature_frame", "scan_features",
           "read_features", "release_features", "features_path", "HASH", "SCRATCH_FORMAT"]

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)

# The per-customer sampling hash, stored with the features (samples are sets of customers).
HASH = "__hash"


@dataclass(frozen=True)
class MapJob:
    plan: Plan
    bucket: int
    as_of: dt.datetime | None           # None: derive from this (only) bucket
    channels: tuple[str, ...] | None    # None: this bucket's most common (the run's, settled after the map)
    mode: str                           # "features", "cohorts" or "clean" (validate)
    layout: Layout | None               # where rejects and funnel parts go; None writes nothing
    keep: bool = False                  # return the feature table in the result instead of writing it
    releases: Releases | None = None    # removes the bucket's scratch files once mapped (partition.Releases)


@dataclass
class Counts:
    """Counts that add up across buckets (run.json's ``rows``, ``events`` and ``customers_table``)."""

    rows_in: int = 0
    rows_used: int = 0
    rows_after_as_of: int = 0           # of a valid time after a given --as-of, whatever their reason
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    rejected_amount: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in REASONS})
    repeats: int = 0
    customers: int = 0
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    events_in: int = 0
    events_used: int = 0
    events_set_aside: int = 0           # valid events of customers rejected whole (returns only): in no output
    customers_with_events: int = 0      # customers of the output with a usable event
    events_rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_REASONS, 0))
    funnel: dict[str, int] = field(default_factory=dict)
    without_customer_row: int = 0
    customer_rows_in: int = 0              # customers-table rows read (a bucket's scratch lost reads fewer)
    customer_rows_without_id: int = 0      # customers-table rows left out: an empty id cell
    customer_rows_unmatched: int = 0       # customers-table rows left out: no customer of the output
    channel_lines: dict[str, int] = field(default_factory=dict)   # usable lines per channel value

    def add(self, other: Counts) -> None:
        for name in ("rows_in", "rows_used", "rows_after_as_of", "repeats", "customers", "events_in", "events_used",
                     "events_set_aside", "customers_with_events", "without_customer_row", "customer_rows_in",
                     "customer_rows_without_id", "customer_rows_unmatched"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("rejected", "events_rejected", "funnel", "channel_lines"):
            mine = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n
        for reason, parts in other.rejected_amount.items():
            self.rejected_amount[reason] = self.rejected_amount[reason] + parts
        times = [t for t in (self.first_ts, other.first_ts) if t is not None]
        self.first_ts = min(times) if times else None
        times = [t for t in (self.last_ts, other.last_ts) if t is not None]
        self.last_ts = max(times) if times else None

    def reported_amounts(self) -> dict[str, float | None]:
        """Per reason, the sum of the rejected rows' finite amounts; None beyond the float range
        (amount_overflow rows, by definition) and for non_finite_amount and unparseable_amount rows, which have
        none that was read (0.0 read as rows that carried nothing: 36% of an export's money lost read "0.00")."""
        unread = ("non_finite_amount", "unparseable_amount")
        return {r: None if r in unread and self.rejected[r] else exact.reported([parts])
                for r, parts in self.rejected_amount.items()}


@dataclass(frozen=True)
class Shares:
    """The channel shares of a feature table mapped before the run's channels were known: its columns are of
    ``met`` (the channels most common in its bucket), the run's of ``run``. ``apply`` gives the table the run's
    columns: a channel of the bucket's keeps its values (a share counts the customer's purchases in that channel
    among all of them, whatever the other columns: kernels.sequence.order_row), and a channel the bucket has no
    line of is 0.0 for each of its customers, as the map gives it."""

    met: tuple[str, ...]
    run: tuple[str, ...]

    def apply(self, frame: FrameT) -> FrameT:
        names = frame.collect_schema().names()
        met = dict(zip(self.met, channel_columns(self.met), strict=True))
        shares = [pl.col(met[ch]).alias(name) if ch in met else pl.lit(0.0, pl.Float64).alias(name)
                  for ch, name in zip(self.run, channel_columns(self.run), strict=True)]
        rest = [name for name in names if name not in met.values()]
        at = rest.index("activity_status")   # the shares come just before it (features.build._feature_table)
        return frame.select(*rest[:at], *shares, *rest[at:])


@dataclass(frozen=True)
class BucketResult:
    bucket: int
    counts: Counts
    as_of: dt.datetime
    channels: tuple[str, ...] | None
    latest: dt.datetime | None = None             # the latest time of its rows with no row-level reason
    cohorts: CohortPartials | None = None         # mode "cohorts"
    has_customers: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # where the bucket's time went
    files: tuple[str, ...] = ()                   # output parts written (relative to the output's root)
    table: pl.DataFrame | None = None             # the feature table of a job that keeps it (never recorded)
    shares: Shares | None = None                  # its table's shares, where they are not of ``channels``


def map_bucket(job: MapJob) -> BucketResult:
    result = _map(job)
    if job.releases is not None:
        job.releases.release(job.plan, job.bucket)
    return result


def feature_frame(plan: Plan, mapped: BucketResult) -> pl.LazyFrame:
    """A mapped bucket's feature table: the one its job kept, else its scratch file."""
    frame = mapped.table.lazy() if mapped.table is not None else scan_features(plan, mapped.bucket)
    return mapped.shares.apply(frame) if mapped.shares is not None else frame


# The scratch's format, in the --resume fingerprint: an attempt that wrote other files (the feature tables as LZ4
# Parquet on a local disk before a7c9bf6; the partition's columns at full width before engine.io.narrowing) is not
# resumed by one that would read these.
SCRATCH_FORMAT = 3


def scan_features(plan: Plan, bucket: int) -> pl.LazyFrame:
    """A bucket's feature table as its map job wrote it (``features_path``), for the columns or rows a stage
    takes of every bucket at once (the fit's samples): read into memory, not mapped, as mapped pages of the
    29 buckets of scenario L would stay resident until the last column of each file was dropped (its
    fit stage's peak 1.70 -> 1.82 GB)."""
    path = features_path(plan, bucket)
    if path.endswith(".parquet"):
        return store.scan_parquet(path, plan.options)
    return pl.scan_ipc(store.local(path), glob=False)


def read_features(plan: Plan, bucket: int, shares: Shares | None = None) -> pl.DataFrame:
    """The whole feature table of one bucket (the score's), its ``shares`` applied; a local file is
    memory-mapped, not read: a bucket at a time, its pages are released when its table is."""
    path = features_path(plan, bucket)
    if path.endswith(".parquet"):
        frame = store.read_parquet(path, plan.options)
    else:
        frame = pl.from_arrow(store.read_ipc(path, plan.options))
        assert isinstance(frame, pl.DataFrame)
    return shares.apply(frame) if shares is not None else frame


def release_features(plan: Plan, bucket: int) -> None:
    """Remove a bucket's feature table once it is scored, where the score cannot run again (as
    partition.Releases does the partition's scratch; a mapped file stays readable until unmapped)."""
    if plan.work:
        store.remove([features_path(plan, bucket)], plan.options)


def features_path(plan: Plan, bucket: int) -> str:
    """Uncompressed Arrow IPC on a local disk, LZ4 Parquet on an object store or where ``compress_scratch``
    asks for it (a slow disk, a network volume): 345 k customers (an L bucket) of 24 feature columns took
    0.07-0.08 s to write as Parquet and 0.02-0.04 s to read; as IPC 0.02 s to write, 0.005 s to read the fit's
    columns, 0.002 s to map."""
    suffix = "parquet" if store.is_remote(plan.work) or plan.cfg.compress_scratch else "arrow"
    return store.join(plan.work, "features", f"bucket-{bucket:05d}.{suffix}")


def _map(job: MapJob) -> BucketResult:
    plan, cfg = job.plan, job.plan.cfg
    source = bucket_source(plan, "tx", job.bucket)
    parts = bucket_chunks(plan, source, job.bucket)
    start = time.perf_counter()
    dictionary = [c for c in (cfg.columns.channel, cfg.columns.category) if c]
    mapped = map_lines(lambda made: read_tables(plan, source, dictionary, parts, made),
                       sum(chunk.rows for chunk in parts), plan.read_schema("tx"), cfg, as_of=job.as_of,
                       now=plan.now, channels=job.channels, mode=job.mode,
                       reread=lambda positions: reread(plan, source, positions, parts),
                       reason_column=reason_column(list(source.columns)))
    seconds = {"read": mapped.read_seconds, "lines": time.perf_counter() - start - mapped.read_seconds}
    counts = Counts(rows_in=mapped.rows_in, rows_used=mapped.rows_used, rows_after_as_of=mapped.rows_after_as_of,
                    rejected=mapped.rejected,
                    rejected_amount=mapped.rejected_amount, repeats=mapped.repeats, customers=mapped.customers,
                    first_ts=mapped.first_ts, last_ts=mapped.last_ts, channel_lines=mapped.channel_counts)
    files: list[str] = []
    if job.layout is not None:
        files.append(job.layout.write_part(mapped.rejects, "rejects", job.bucket))
    result = dict(bucket=job.bucket, counts=counts, as_of=mapped.as_of,
                  channels=mapped.channels if job.mode == "features" or job.channels is not None else job.channels,
                  latest=mapped.latest, has_customers=mapped.rows_used > 0, seconds=seconds)
    if job.mode == "clean":
        return BucketResult(**result, files=tuple(files))
    if job.mode == "cohorts":
        return BucketResult(**result, cohorts=cohort_partials(mapped.grouped, mapped.as_of), files=tuple(files))
    table = _with_events(mapped.table, mapped.set_aside, plan, job, mapped.as_of, counts, files)
    table = _with_attributes(table, plan, job.bucket, counts)
    table = table.with_columns(pl.Series(HASH, customer_hash(table["customer_id"], cfg.cluster.seed)))
    if job.keep:
        return BucketResult(**result, files=tuple(files), table=table)
    start = time.perf_counter()
    _write_features(table, features_path(plan, job.bucket), plan)
    seconds["write"] = time.perf_counter() - start
    return BucketResult(**result, files=tuple(files))


def _write_features(table: pl.DataFrame, path: str, plan: Plan) -> None:
    if path.endswith(".parquet"):
        store.write_parquet(table, path, plan.options, scratch=True)
    else:
        # One dictionary per column: an IPC file takes no other, and a Categorical stacked from frames may
        # hold one per chunk ("Dictionary replacement detected"; Parquet writes either).
        store.write_ipc(table.to_arrow().unify_dictionaries(), path, plan.options)


def _with_events(table: pl.DataFrame, set_aside: pl.Series, plan: Plan, job: MapJob, as_of: dt.datetime,
                 counts: Counts, files: list[str]) -> pl.DataFrame:
    src = plan.cfg.events
    if src is None or plan.events is None:
        return table
    raw = bucket_rows(plan, "events", job.bucket)
    ev = clean_events(raw, src, as_of, future_after=None if plan.cfg.as_of else plan.now)
    del raw
    funnel = funnel_table(table, event_features(ev.events, as_of), set_aside)
    # Counted apart from the used ones: such a customer is in no output (funnel_table leaves them out).
    aside = int(ev.events["customer_id"].is_in(set_aside.implode()).sum()) if set_aside.len() else 0
    counts.events_in += ev.rows_in
    counts.events_used += ev.events.height - aside
    counts.events_set_aside += aside
    counts.customers_with_events += int(table["customer_id"].is_in(ev.events["customer_id"].implode()).sum())
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
    counts.customer_rows_in += raw.height
    raw = raw.with_columns(customer_expr(raw.schema, src.customer).alias(src.customer))
    attached = attach(table, raw, src.customer, src.attributes)
    counts.without_customer_row += attached.without_a_row
    counts.customer_rows_without_id += attached.rows_without_id
    counts.customer_rows_unmatched += attached.rows_unmatched
    return attached.table
