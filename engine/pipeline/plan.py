"""Plan: inputs and their contract resolved once, the bucket count from the memory budget.

Memory is planned per stage from measured costs per row (``*_BYTES_PER_ROW``): a
stage holds one chunk (partition) or one bucket (map, score) at a time, and the
global fits hold their samples. The budget left for data is the limit minus what
this process already uses (the libraries take about 200 MB when planning) and the code
its stages load later (``CODE_AFTER_PLAN``); a limit that leaves too little is refused
up front, naming the smallest one that works.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from segmint.engine.config import Columns, RunConfig, parse_as_of
from segmint.engine.errors import ConfigError
from segmint.engine.features.build import MOST_BUCKET_ROWS
from segmint.engine.io import contract
from segmint.engine.io.canonical import is_typed
from segmint.engine.io.pseudonym import require_key
from segmint.engine.io.sources import Source, split
from segmint.engine.pipeline.clusters import file_clusters, file_stamps, footer_latest
from segmint.engine.runtime import current_rss, default_memory_limit

__all__ = ["Plan", "make_plan", "new_run_id", "code_to_come", "SCHEMA_VERSION", "MAX_BUCKET_ROWS", "MAX_JOB_ROWS",
           "BYTES_PER_ROW", "CODE_AFTER_PLAN"]

SCHEMA_VERSION = 2
# Bytes per input row a stage adds to the process while it holds a bucket (map: cleaned, reduced to
# features) or a partition job's rows; measured (run.json's memory.measured_bytes_per_line, and
# bench/README.md), rounded up. The map holds a 40-byte record per row (with its codes), its customer code, its place
# in the grouping and the per-customer results (81 measured on M); a partition job its rows as read,
# split by bucket (82 measured on L's typed Parquet): text columns read from CSV take more.
BYTES_PER_ROW = {"tx": 100, "events": 120, "customers": 150, "partition": 250}
# Rows parsed from text (a CSV, or Parquet whose times are text) hold their text beside the parsed values: each
# parsed column of text adds about this much to a line, in the map and in a partition job (1.79 M lines measured,
# run.json: CSV of 63 and 101 bytes a line 372 and 422 bytes in the map, 418 and 467 in a partition job; Parquet with
# text ids and times 209 and 242). Budgeted at 100 and 250, a CSV run at --memory-limit 800MB peaked at 1,021 MB.
TEXT_COLUMN_BYTES = 85
# Smaller buckets are faster, not only leaner: on scenario L (224 M rows) 29 buckets of
# about 8 M rows ran in 351 s against 431 s for 10 buckets of 22 M (bench/README.md).
MAX_BUCKET_ROWS = 8_000_000
# Partition jobs are smaller and faster too, whatever the memory would allow: on scenario L at the default limit
# (5.5 GB) 11 jobs of 21.7 M rows took 31.1-38.6 s, against 19.9-26.4 s for 29 jobs of at most 8 M (and 21.5-22.1 s
# for 59 of 4 M), half the system time; a job's rows are fresh memory, and the scratch it writes takes fresh
# pages besides.
MAX_JOB_ROWS = 8_000_000
# The least memory a stage may have for data.
_MIN_DATA_BYTES = 32 * 2**20
# What the stages load after planning, where no run in this process has yet: Numba's compiler with the map's
# kernels (133 MiB, from the cache), the other kernels, SciPy and Faiss (44 MiB); measured after the plan's
# imports. Left out of the budget, a run at --memory-limit 300MB peaked at about 465 MB.
CODE_AFTER_PLAN = 180 * 2**20


@dataclass(frozen=True)
class Plan:
    """Everything a stage needs to know about the run; small and picklable, sent with every job."""

    command: str
    run_id: str
    started_at: dt.datetime          # UTC, aware
    cfg: RunConfig                   # with the column mapping resolved against the input
    inputs: tuple[str, ...]
    tx: Source                       # in partition chunks
    events: Source | None
    customers: Source | None
    buckets: int
    chunk_rows: int                  # most rows a partition job reads
    memory_limit: int
    data_budget: int                 # the limit minus what the process used when planning and code to come
    work: str                        # scratch folder for bucket files
    bytes_per_row: dict[str, int] = dataclasses.field(default_factory=lambda: dict(BYTES_PER_ROW))   # as budgeted
    # The bucket of each transactions chunk where the input's files are the buckets (engine.pipeline.clusters);
    # () where rows are partitioned by the hash of their customer id.
    clusters: tuple[int, ...] = ()
    cluster_stamps: tuple[str, ...] = ()   # each such chunk's file's version as planned (clusters.check_unchanged)
    footer_latest_us: int | None = None    # where they are: the latest time their footers record (clusters)

    @property
    def now(self) -> dt.datetime:
        """The start of the run as naive UTC: later rows are in the future."""
        return self.started_at.replace(tzinfo=None)

    @property
    def fixed_as_of(self) -> dt.datetime | None:
        return parse_as_of(self.cfg.as_of) if self.cfg.as_of else None

    @property
    def options(self) -> dict[str, str]:
        """Object-store options for every read and write (credentials: never written out)."""
        return dict(self.cfg.storage_options)

    def source(self, role: str) -> Source:
        return {"tx": self.tx, "events": self.events, "customers": self.customers}[role]

    def roles(self) -> list[str]:
        return [r for r in ("tx", "events", "customers") if self.source(r) is not None]

    def read_schema(self, role: str) -> dict[str, pl.DataType]:
        """The types of a table's columns as the stages see them: ids are text once pseudonymised."""
        schema = dict(self.source(role).schema)
        if self.cfg.pseudonymize_ids:
            c = self.cfg
            column = {"tx": c.columns.customer, "events": c.events.customer if c.events else "",
                      "customers": c.customers.customer if c.customers else ""}[role]
            schema[column] = pl.String
        return schema

    def typed(self, role: str) -> bool:
        """Whether the transactions need no parsing (engine.io.canonical.is_typed)."""
        return is_typed(self.read_schema(role), self.cfg.columns)


def new_run_id(started: dt.datetime) -> str:
    """Sortable and unique: the start time (UTC) and 8 random hex digits."""
    return f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def make_plan(command: str, inputs: Sequence[str | Path], cfg: RunConfig, *, work: str | Path, run_id: str,
              started: dt.datetime, side_tables: bool = True, sizes: tuple[int, int] | None = None) -> Plan:
    """Resolve and check every input, then size buckets and chunks to ``cfg.memory_limit``
    (or take ``sizes``, (buckets, chunk rows): a resumed run keeps its first attempt's)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if cfg.pseudonymize_ids:
        require_key()  # before any data is read
    # assign scores with a saved model's mapping (commands.assign_customers): it unmaps nothing.
    # Each local Parquet file's footer, read once: by the listing, then for the chunks' row groups, the files' id
    # ranges and their latest time (scenario L's 1,000 files were read three times: its plan 0.48-0.51 -> 0.31-0.37 s).
    footers: dict[str, Any] = {}
    tx, columns = contract.transactions(inputs, cfg.columns, cfg.storage_options, model=command == "assign",
                                        footers=footers)
    cfg = dataclasses.replace(cfg, columns=columns)
    events = customers = None
    if side_tables and cfg.events is not None:
        events = contract.events(cfg.events, cfg.storage_options)
        # Pseudonymised too: pseudonyms of int 7 and text "007" differ, and such rows joined nothing, exit 0.
        contract.check_same_ids(tx, columns.customer, events, cfg.events.customer, "--event-customer-col")
    if side_tables and cfg.customers is not None:
        customers = contract.customers(cfg.customers, cfg.storage_options)
        contract.check_same_ids(tx, columns.customer, customers, cfg.customers.customer, "--customers-id-col")
    if command != "assign" and cfg.clv.enabled:   # assign scores with its model's settings, whatever they are
        cfg.clv.check_horizon()
    limit = cfg.memory_limit or default_memory_limit()
    in_use, code = current_rss(), code_to_come()
    budget = limit - in_use - code
    if budget < _MIN_DATA_BYTES:
        # In MB as --memory-limit reads them (10^6 bytes): 20MB was quoted back as "19MB".
        given = f"{limit / 1e6:.0f}MB" if limit >= 1e6 else f"{limit:,} bytes"   # 1KB read as "0MB"
        # With a tenth more, in tens of MB: a process's memory when planning varies by some 30 MB from run to run,
        # and the least quoted to the MB was refused again when given (577MB, then 599MB, then 603MB).
        least = math.ceil(1.1 * (in_use + code + _MIN_DATA_BYTES) / 1e7) * 10
        msg = (f"--memory-limit {given} is below what segmint needs: the process already uses {in_use / 1e6:.0f}MB "
               f"and its stages load {code / 1e6:.0f}MB more of code; give at least {least}MB")
        raise ConfigError(msg)
    rows = {"tx": tx.rows, "events": events.rows if events else 0, "customers": customers.rows if customers else 0}
    per_row = _bytes_per_row(tx, columns)
    buckets = sizes[0] if sizes else cfg.buckets or _buckets(rows, budget, per_row)
    if not sizes and cfg.buckets:   # a resumed attempt's sizes passed this when first planned
        _check_given_buckets(cfg.buckets, rows["tx"])
    # One bucket has no partition jobs: its chunks are what the map reads, a CSV's each a scan from the file's start.
    chunk_rows = sizes[1] if sizes else max(10_000, budget // per_row["partition"])
    if not sizes and buckets > 1:
        chunk_rows = min(MAX_JOB_ROWS, chunk_rows)
    split_ = (lambda s: split(s, chunk_rows, footers) if s is not None else None)
    tx = split_(tx)
    # Files that hold customers of their own need no partition, where nothing else must meet the customers' rows
    # in a bucket and the map reads the rows as they are (no parsing, no pseudonyms) where the run's statistics
    # are gathered. --buckets asks for the hash partition.
    alone = events is None and customers is None and cfg.buckets is None and not cfg.pseudonymize_ids
    clusters = file_clusters(tx, columns.customer, buckets, budget // per_row["tx"], footers) \
        if alone and is_typed(tx.schema, columns) else ()
    return Plan(command=command, run_id=run_id, started_at=started,
                cfg=cfg, inputs=tuple(map(str, inputs)), tx=tx, events=split_(events),
                customers=split_(customers), buckets=buckets, chunk_rows=chunk_rows, memory_limit=limit,
                data_budget=budget, work=str(work), bytes_per_row=per_row, clusters=clusters,
                cluster_stamps=file_stamps(tx) if clusters else (),
                footer_latest_us=footer_latest(tx, columns.time, footers) if clusters else None)


def code_to_come() -> int:
    """``CODE_AFTER_PLAN``, or 0 where a run in this process loaded it already (the map's kernels are the most
    of it, and each is loaded with the first call)."""
    from segmint.kernels.lines import customer_pass

    return 0 if customer_pass.signatures else CODE_AFTER_PLAN


def _check_given_buckets(buckets: int, rows: int) -> None:
    """Refuse a --buckets too few for ``rows`` before any pass reads them (build.map_lines would, after a partition
    pass): one bucket holds at most MOST_BUCKET_ROWS rows; several share the rows by hash, unevenly (4,096 slots
    dealt to the buckets, every row of a customer to one), so each is given half of that."""
    least = 1 if rows <= MOST_BUCKET_ROWS else math.ceil(rows / (MOST_BUCKET_ROWS // 2))
    if buckets < least:
        msg = (f"--buckets {buckets} is too few for {rows:,} rows (a bucket holds at most {MOST_BUCKET_ROWS:,}, and "
               f"buckets share rows unevenly); give at least --buckets {least}, or leave --buckets out")
        raise ConfigError(msg)


def _bytes_per_row(tx: Source, columns: Columns) -> dict[str, int]:
    """``BYTES_PER_ROW``, with ``TEXT_COLUMN_BYTES`` for each mapped column of text the map parses."""
    per_row = dict(BYTES_PER_ROW)
    if not is_typed(tx.schema, columns):
        parsed = [c for c in (columns.customer, columns.time, columns.amount, columns.quantity, columns.price,
                              columns.order) if c is not None and tx.schema.get(c) == pl.String]
        per_row["tx"] += TEXT_COLUMN_BYTES * len(parsed)
        per_row["partition"] = max(per_row["partition"], per_row["tx"] + 50)
    return per_row


def _buckets(rows: dict[str, int], budget: int, per_row: dict[str, int]) -> int:
    """Enough buckets that mapping one fits the budget; once bucketed at all (always past the MOST_BUCKET_ROWS
    one bucket can hold), at most MAX_BUCKET_ROWS transaction rows per bucket."""
    need = sum(n * per_row[table] for table, n in rows.items())
    n = max(1, math.ceil(need / budget))
    return n if n == 1 and rows["tx"] <= MOST_BUCKET_ROWS else max(n, math.ceil(rows["tx"] / MAX_BUCKET_ROWS))
