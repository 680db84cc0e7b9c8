"""Partition: one streaming pass that puts every row in its customer's bucket.

A row's bucket is a function of its customer id alone (a stable hash, never
Polars' own), so a customer's rows, events and attributes all meet in one bucket,
and each bucket can be mapped on its own. The hash picks one of ``SLOTS`` slots,
and slots are dealt to buckets (``slot % buckets``). Each chunk job writes
``work/<table>/bucket=B/chunk-C.parquet`` (names fixed by the job: a retry
overwrites them) and returns what the run needs of all rows: the latest valid
time (the as-of) and the channel counts. With one bucket there is no pass at
all: the map reads the input itself.

Reading is where ids are made canonical and, with ``--pseudonymize-ids``,
replaced by their pseudonyms: no raw id reaches any file segmint writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import numpy as np
import polars as pl

from segmint.engine.hashing import customer_hash
from segmint.engine.io import store
from segmint.engine.io.clean import RowStats, row_stats
from segmint.engine.io.ids import check_integral_ids, customer_expr
from segmint.engine.io.pseudonym import pseudonymize
from segmint.engine.io.sources import Chunk, read_chunks
from segmint.engine.pipeline.plan import Plan

__all__ = ["PartitionJob", "partition_chunk", "read_rows", "bucket_rows", "bucket_of", "id_column",
           "SLOTS", "BUCKET_SEED"]

SLOTS = 4096
BUCKET_SEED = 0x5E6_B0C


@dataclass(frozen=True)
class PartitionJob:
    plan: Plan
    role: str       # tx, events or customers
    index: int      # chunk number within that table


def partition_chunk(job: PartitionJob) -> RowStats | None:
    """Write one chunk's rows to their buckets; transactions return their RowStats."""
    plan = job.plan
    source = plan.source(job.role)
    raw = read_rows(plan, job.role, [source.chunks[job.index]])
    ids = raw.select(customer_expr(raw.schema, id_column(plan, job.role))).to_series()
    keyed = raw.with_columns(__bucket=pl.Series(bucket_of(ids, plan.buckets)))
    for (bucket,), part in keyed.partition_by("__bucket", as_dict=True, include_key=False).items():
        store.write_parquet(part, store.join(plan.work, job.role, f"bucket={bucket:05d}", f"chunk-{job.index:06d}.parquet"),
                            plan.options, scratch=True)
    return row_stats(raw, plan.cfg, now=plan.now) if job.role == "tx" else None


def read_rows(plan: Plan, role: str, chunks: Sequence[Chunk]) -> pl.DataFrame:
    """The mapped columns of ``chunks`` as read, ids checked and (if asked) pseudonymised."""
    source = plan.source(role)
    raw = read_chunks(source, chunks)
    column = id_column(plan, role)
    check_integral_ids(raw, column)
    if plan.cfg.pseudonymize_ids:
        ids = raw.select(customer_expr(raw.schema, column)).to_series()
        raw = raw.with_columns(pseudonymize(ids).alias(column))
    return raw


def bucket_rows(plan: Plan, role: str, bucket: int) -> pl.DataFrame:
    """All of one bucket's rows of a table, in input order (the input itself when there is one bucket)."""
    source = plan.source(role)
    if plan.buckets == 1:
        return read_rows(plan, role, source.chunks)
    files = store.list_files(store.join(plan.work, role, f"bucket={bucket:05d}"), plan.options)
    if files:
        return pl.concat([store.read_parquet(f, plan.options) for f in files], rechunk=False)
    schema = dict(source.schema)
    if plan.cfg.pseudonymize_ids:
        schema[id_column(plan, role)] = pl.String
    return pl.DataFrame(schema=schema)


def bucket_of(ids: pl.Series, buckets: int) -> np.ndarray:
    """Bucket number (uint32) of each canonical id; missing ids share one bucket."""
    filled = ids.fill_null(0 if ids.dtype.is_integer() else "")
    slot = customer_hash(filled, BUCKET_SEED) >> np.uint64(64 - SLOTS.bit_length() + 1)
    return (slot % np.uint64(buckets)).astype(np.uint32)


def id_column(plan: Plan, role: str) -> str:
    cfg = plan.cfg
    return {"tx": cfg.columns.customer,
            "events": cfg.events.customer if cfg.events else "",
            "customers": cfg.customers.customer if cfg.customers else ""}[role]
