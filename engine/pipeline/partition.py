"""Partition: one streaming pass that puts every row in its customer's bucket, and the reading of a bucket.
Where the input's files are the buckets (``plan.clusters``, engine.pipeline.clusters) a bucket's map reads its files,
and a pass runs only where the run's as-of cannot be settled from the buckets (engine.pipeline.commands._settled):
it writes nothing and only gathers what the run needs of all rows.

A row's bucket is a function of its customer id alone (a stable hash, never Polars' own),
so a customer's rows, events and attributes all meet in one bucket, and each bucket can be
mapped on its own. The hash picks one of ``SLOTS`` slots, and slots are dealt to buckets
(``slot % buckets``). A partition job reads a run of consecutive input chunks (up to the
plan's chunk size, however many files that is) and appends each Arrow batch's rows to its
bucket's file, ``work/<table>/bucket=B/part-J.arrow`` (Arrow IPC: written and read at memory
speed; LZ4 on an object store, or with ``compress_scratch``): the scratch files number jobs x
buckets, not input files x buckets. Names are fixed by the job, so a retry overwrites them.
Transaction jobs also return what the run needs of all rows: the latest usable time (the as-of)
and the channel counts. With one bucket there is no pass at all: the map reads the input itself.

A bucket's scratch files are read by its map job alone. Where that job cannot run again (the local
executor, a run that cannot be resumed), ``Releases`` removes them once it is done. Their pages in
the page cache then go back to memory while the run still writes (the feature tables, the fit's arrays,
the outputs), and pages just freed are far cheaper to take than memory the process has not touched yet
(on the development machine, a VM, copying into fresh pages ran at 0.4-1.6 GB/s against 11.7 GB/s into
pages in use). On scenario L the map's feature tables took 0.51-0.54 s to write against 3.47 s, the fit
10.7-12.0 s against 14.2 s, and the work dir's removal at the end 0.002 s against 2.2 s.

Reading is where ids are made canonical and, with ``--pseudonymize-ids``, replaced by their
pseudonyms: no raw id reaches any file segmint writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from segmint.engine.errors import ConfigError
from segmint.engine.hashing import customer_hash, int64_hash
from segmint.engine.io import arrow_numpy, narrowing, store
from segmint.engine.io.canonical import blank, usable_tally
from segmint.engine.io.clean import RowStats
from segmint.engine.io.ids import check_integral_ids, customer_expr
from segmint.engine.io.pseudonym import pseudonymized
from segmint.engine.io.sources import Chunk, Source, read_at, stream
from segmint.engine.io.times import check_time_column
from segmint.engine.pipeline.clusters import check_unchanged
from segmint.engine.pipeline.plan import Plan
from segmint.engine.runtime import map_threads
from segmint.kernels.grouping import group_rows, perm_dtype
from segmint.kernels.hashing import hash_buckets

__all__ = ["PartitionJob", "partition_jobs", "job_rows", "check_scratch_space", "partition_chunk", "bucket_source",
           "bucket_chunks",
           "Releases", "read_tables", "reread", "bucket_rows", "bucket_of", "id_column", "row_stats",
           "SLOTS", "BUCKET_SEED"]

SLOTS = 4096
BUCKET_SEED = 0x5E6_B0C
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class PartitionJob:
    plan: Plan
    role: str       # tx, events or customers
    index: int      # job number within that table (partition_jobs)


def partition_jobs(plan: Plan, role: str) -> list[PartitionJob]:
    return [PartitionJob(plan, role, i) for i in range(len(_job_chunks(plan, role)))]


def job_rows(job: PartitionJob) -> int:
    """The input rows a partition job reads (its chunks')."""
    first, last = _job_chunks(job.plan, job.role)[job.index]
    return sum(chunk.rows for chunk in job.plan.source(job.role).chunks[first:last])


def check_scratch_space(plan: Plan) -> None:
    """Refuse, before a row is written, a partition whose uncompressed scratch cannot fit the local disk it
    goes to. What it counts is a floor (each row's fixed-width bytes, a 64-bit column's 32 it may narrow to;
    text its offsets alone, a dictionary column one byte of index), so a refusal is certain, not a guess;
    without it a full disk stopped the run minutes in with an unexpected OSError. LZ4 scratch
    (``compress_scratch``, an object store) is not checked: how far it shrinks depends on the data."""
    if plan.buckets == 1 or plan.clusters or store.is_remote(plan.work) or plan.cfg.compress_scratch:
        return
    need = sum(plan.source(role).rows * _least_row_bytes(plan, role) for role in plan.roles())
    folder = store.local(plan.work)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < need:
        # MB of 10^6 bytes, as --memory-limit reads them and as disks are sold (2^20 read 5% low).
        msg = (f"the partition's scratch needs at least {math.ceil(need / 1e6):,} MB under {folder} and "
               f"{free // 10**6:,} MB are free there: free some space, give --work-dir a larger local disk, or set "
               f"compress_scratch = true in [run] (LZ4)")
        raise ConfigError(msg)


def partition_chunk(job: PartitionJob) -> RowStats | None:
    """Write the job's rows to their buckets' files (one file per bucket with rows, one dictionary per
    text column: its chunks' dictionaries unified); transactions return their RowStats.

    Each input chunk is split by bucket as it is read (a counting sort of its rows), so that no array
    is the size of the whole job: small arrays reuse freed memory, where one of the job's size is
    fresh memory, page-faulted in (on L that was half the partition's time)."""
    plan = job.plan
    source = plan.source(job.role)
    first, last = _job_chunks(plan, job.role)[job.index]
    if plan.clusters:   # the input's files are the buckets: only what the run needs of all its rows
        check_unchanged(source.chunks[first:last], plan.cluster_stamps[first:last])
        c = plan.cfg.columns
        tally = dataclasses.replace(source, columns=tuple(name for name in source.columns if name in
                                                          (c.customer, c.time, c.amount, c.channel)))
        return RowStats.merge([row_stats(table, plan) for table in read_tables(
            plan, tally, [c.channel] if c.channel else [], chunks=source.chunks[first:last])])
    parts: list[list[pa.Table]] = [[] for _ in range(plan.buckets)]
    stats = []
    buckets = np.arange(plan.buckets, dtype=np.int32)   # a row's group is its bucket
    for table in read_tables(plan, source, _text_columns(plan, job.role), chunks=source.chunks[first:last]):
        order, bounds = np.empty(table.num_rows, perm_dtype(table.num_rows)), np.empty(plan.buckets + 1, np.int64)
        # One run: the reading thread decodes the next table meanwhile, on the other core.
        group_rows(_buckets_of(table, id_column(plan, job.role), plan.buckets), buckets, plan.buckets, order,
                   bounds, threads=1)
        if job.role == "tx":
            stats.append(row_stats(table, plan))
        table = table.take(arrow_numpy.array(order))
        for b in np.flatnonzero(np.diff(bounds)):
            parts[b].append(table.slice(bounds[b], bounds[b + 1] - bounds[b]))

    def write(b: int) -> None:
        rows = pa.concat_tables(parts[b], promote_options="permissive").unify_dictionaries().combine_chunks()
        _write_ipc(narrowing.narrow(rows), _scratch_path(plan, job, b), plan)

    # Two buckets at a time: Arrow keeps about 1.4 cores busy on one file, and the reading thread is idle
    # by now (a job of 7.2 M rows in 29 buckets: 0.35-0.45 -> 0.26-0.29 s on 2 cores). Each holds its
    # rows combined, so two cost the job at most 2 / buckets of its rows again, on any thread count.
    map_threads(write, [b for b, slices in enumerate(parts) if slices], most=2)
    return RowStats.merge(stats) if job.role == "tx" else None


def bucket_source(plan: Plan, role: str, bucket: int) -> Source:
    """Where one bucket's rows of a table are: the input itself with one bucket or where its files are the
    buckets (``bucket_chunks`` says which), else its scratch files."""
    source = plan.source(role)
    if plan.buckets == 1 or plan.clusters:
        return source
    folder = _bucket_folder(plan, role, bucket)
    files = store.list_files(folder, plan.options)
    return Source(source.label, (folder,), False, source.columns, plan.read_schema(role),
                  tuple(Chunk(f, 0, _ipc_rows(f, plan)) for f in files), source.options)


def bucket_chunks(plan: Plan, source: Source, bucket: int) -> tuple[Chunk, ...]:
    """The chunks of ``source`` (``bucket_source``'s) one bucket's map reads: all of them but where the input's
    files are the buckets (``plan.clusters``), checked to be as planned."""
    if not plan.clusters:
        return source.chunks
    mine = [i for i, b in enumerate(plan.clusters) if b == bucket]
    check_unchanged([source.chunks[i] for i in mine], [plan.cluster_stamps[i] for i in mine])
    return tuple(source.chunks[i] for i in mine)


class Releases:
    """One stage's removals of bucket scratch (module docstring), each on a helper thread while the next
    bucket is mapped: freeing their pages takes the kernel 0.06 s a bucket of scenario L, 1.7 s of its map
    in all. ``wait`` joins them: the stage ends with its scratch gone."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def release(self, plan: Plan, bucket: int) -> None:
        """Remove one bucket's scratch files, of every table, once its map job is done. With one bucket there
        are none: the bucket is the input itself, which nothing here ever removes (nor anything outside a
        work dir)."""
        if plan.buckets == 1 or plan.clusters or not plan.work:
            return
        folders = [_bucket_folder(plan, role, bucket) for role in plan.roles()]
        thread = threading.Thread(target=_remove, args=(folders, plan.options), name="segmint-release", daemon=True)
        thread.start()
        with self._lock:
            self._threads.append(thread)

    def wait(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join()


def read_tables(plan: Plan, source: Source, dictionary: Sequence[str] = (), chunks: Sequence[Chunk] | None = None,
                made: Callable[[pa.Table, int], Any] | None = None) -> Iterator[Any]:
    """The rows of ``source`` (its ``chunks``, all by default) as read, with ids pseudonymised when the
    run asks for it (scratch files already hold pseudonyms); with ``made``, what it makes of each such table
    and the position of its first row (``stream``'s), each table checked, pseudonymised and made on the thread
    that read it. Without, checked and pseudonymised here: ``stream`` reads further ahead for a ``made``."""
    role_column = _role_column(plan, source)
    judged = _judged_time(plan, source)
    pseudonymize = plan.cfg.pseudonymize_ids and _is_input(plan, source)
    numeric_ids = _side_numeric_ids(plan, source) if not pseudonymize else None   # pseudonymized() checks them

    def checked(table: pa.Table, at: int) -> Any:
        if judged is not None:
            name, fmt, flag = judged
            check_time_column(pl.from_arrow(table.select([name])), name, fmt, flag)
        if numeric_ids is not None:
            check_integral_ids(pl.from_arrow(table.select([numeric_ids])), numeric_ids, side_table=source.label)
        table = _pseudonymized(table, role_column) if pseudonymize else table
        return made(table, at) if made is not None else table

    chunks = source.chunks if chunks is None else chunks
    if made is None and (judged is not None or numeric_ids is not None or pseudonymize):
        return _each_checked(stream(source, chunks, dictionary), checked)
    return stream(source, chunks, dictionary, checked if made is not None else None)


def _each_checked(tables: Iterator[pa.Table], checked: Callable[[pa.Table, int], pa.Table]) -> Iterator[pa.Table]:
    with contextlib.closing(tables):
        for table in tables:
            yield checked(table, 0)


def _side_numeric_ids(plan: Plan, source: Source) -> str | None:
    """The id column of an events or customers input whose ids are floats or decimals, checked in every chunk
    read as the transactions' are where they are parsed (engine.io.canonical): unchecked, an events id 12.7 was
    cast to 12, and customer 3's sessions were customer 12's, exit 0."""
    if source is plan.tx or not _is_input(plan, source):
        return None
    column = _role_column(plan, source)
    dtype = source.schema[column]
    return column if dtype.is_float() or isinstance(dtype, pl.Decimal) else None


def _judged_time(plan: Plan, source: Source) -> tuple[str, str | None, str] | None:
    """The time column, format and flag of an input whose times are judged in every chunk read (their unit and
    form: engine.io.times.check_time_column): the transactions where their times are parsed, and the events.
    Not a bucket's scratch, whose chunks mix the input's files by customer: judged there, the same rows passed
    with one bucket and stopped with four (or the reverse), by which customers a bucket drew."""
    c = plan.cfg
    if source is plan.tx and not plan.typed("tx"):
        return c.columns.time, c.columns.time_format, "--time-format"
    if plan.events is not None and c.events is not None and source is plan.events:
        return c.events.time, c.events.time_format, "--event-time-format"
    return None


def reread(plan: Plan, source: Source, positions: np.ndarray, chunks: Sequence[Chunk] | None = None) -> pa.Table:
    """The rows at ``positions`` of ``source`` (numbered across its ``chunks``, all by default) as
    ``read_tables`` gives them."""
    table = read_at(source, source.chunks if chunks is None else chunks, positions)
    if plan.cfg.pseudonymize_ids and _is_input(plan, source):
        table = _pseudonymized(table, _role_column(plan, source))
    return table


def bucket_rows(plan: Plan, role: str, bucket: int) -> pl.DataFrame:
    """All of one bucket's rows of a side table (events, customers) as one frame, in input order."""
    source = bucket_source(plan, role, bucket)
    schema = plan.read_schema(role)   # as read: the input's own schema has the raw ids' type, not pseudonyms'
    if not source.chunks:
        return pl.DataFrame(schema=schema)
    frames = [pl.from_arrow(t) for t in read_tables(plan, source)]
    return pl.concat(frames, how="vertical_relaxed", rechunk=False).cast(schema) if frames \
        else pl.DataFrame(schema=schema)


def bucket_of(ids: pl.Series, buckets: int) -> np.ndarray:
    """Bucket number (int32) of each canonical id: its hash's slot dealt to buckets; missing ids share one, a
    blank text (" ") too: the map reads it as missing, and rows of both that repeat each other were compared in
    one bucket only (1 bucket counted 19 repeats where 3 counted 18)."""
    blanks = np.flatnonzero(blank(ids.to_arrow()))   # none for integer ids
    if blanks.size:
        ids = ids.scatter(blanks, None)
    filled = ids.fill_null(0 if ids.dtype.is_integer() else "")
    return _slot_buckets(customer_hash(filled, BUCKET_SEED), buckets)


def id_column(plan: Plan, role: str) -> str:
    cfg = plan.cfg
    return {"tx": cfg.columns.customer,
            "events": cfg.events.customer if cfg.events else "",
            "customers": cfg.customers.customer if cfg.customers else ""}[role]


def row_stats(table: pa.Table, plan: Plan) -> RowStats:
    """The as-of candidate and the channel counts of ``table``, over its rows with no row-level reason."""
    given = plan.fixed_as_of
    latest, channels = usable_tally(table, plan.cfg.columns, plan.typed("tx"),
                                    _NEVER if given else _us(plan.now), _us(given) if given else _NEVER)
    return RowStats(dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=latest) if latest is not None else None,
                    channels)


def _job_chunks(plan: Plan, role: str) -> list[tuple[int, int]]:
    """Runs of consecutive chunks of up to the plan's chunk size: the partition jobs (chunk index ranges)."""
    jobs, start, rows = [], 0, 0
    chunks = plan.source(role).chunks
    for i, chunk in enumerate(chunks):
        if rows and rows + chunk.rows > plan.chunk_rows:
            jobs.append((start, i))
            start, rows = i, 0
        rows += chunk.rows
    if chunks:
        jobs.append((start, len(chunks)))
    return jobs


def _buckets_of(table: pa.Table, column: str, buckets: int) -> np.ndarray:
    """``bucket_of`` the canonical ids of a table's rows. Int64 ids without a null are their own canonical
    ids, hashed from Arrow's buffer (a job of 7.2 M rows of L: 0.044-0.066 s through Polars, 0.017 s so)."""
    ids = table.column(column)
    if ids.type == pa.int64() and ids.null_count == 0:
        keys = arrow_numpy.values(ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0))
        return _slot_buckets(int64_hash(keys, BUCKET_SEED), buckets)
    frame = pl.from_arrow(table.select([column]))
    assert isinstance(frame, pl.DataFrame)
    return bucket_of(frame.select(customer_expr(frame.schema, column)).to_series(), buckets)


def _slot_buckets(hashes: np.ndarray, buckets: int) -> np.ndarray:
    out = np.empty(hashes.size, np.int32)
    hash_buckets(hashes, 64 - SLOTS.bit_length() + 1, buckets, out)
    return out


def _pseudonymized(table: pa.Table, column: str) -> pa.Table:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return pseudonymized(frame, column).to_arrow()


def _is_input(plan: Plan, source: Source) -> bool:
    """Whether ``source`` is an input (not scratch files, which hold pseudonyms already)."""
    return any(source is plan.source(role) for role in plan.roles())


def _role_column(plan: Plan, source: Source) -> str:
    for role in plan.roles():
        if source.label == plan.source(role).label:
            return id_column(plan, role)
    raise ValueError(source.label)


def _write_ipc(table: pa.Table, path: str, plan: Plan) -> None:
    """LZ4 on an object store, where bytes cross the network; uncompressed on a local disk, where the map
    memory-maps the file back (``compress_scratch`` decides where set). LZ4 took a job of 7.2 M rows 0.65 s
    against 0.48 s, and the map 3.2 s of L's 224 M lines to decompress (L end to end 83.3 -> 78.5-79.2 s),
    for 2.3x the bytes on disk (8.7 GB on L against 3.7 GB, 40 bytes a line; 7.2 GB and 34 bytes with its
    dictionary indices narrowed): a disk slower than the writes then bounds the partition."""
    compress = plan.cfg.compress_scratch if plan.cfg.compress_scratch is not None else store.is_remote(path)
    store.write_ipc(table, path, plan.options, compress=compress)


def _least_row_bytes(plan: Plan, role: str) -> int:
    """The fewest bytes a row of ``role`` takes in uncompressed scratch (``check_scratch_space``)."""
    dictionary = set(_text_columns(plan, role))
    total = 0
    for name, dtype in plan.read_schema(role).items():
        arrow = pl.Series(name, [], dtype).to_arrow().type
        if name in dictionary or pa.types.is_boolean(arrow):
            total += name in dictionary   # an index of one byte; a boolean is a bit
        elif pa.types.is_primitive(arrow):
            total += min(arrow.bit_width // 8, 4)   # 64 bits can narrow to 32 (engine.io.narrowing)
        else:
            total += 4   # text and the like: an offset at least
    return total


def _text_columns(plan: Plan, role: str) -> list[str]:
    """Columns read as dictionaries: the transactions' channel and category."""
    c = plan.cfg.columns
    return [name for name in (c.channel, c.category) if name is not None] if role == "tx" else []


def _scratch_path(plan: Plan, job: PartitionJob, bucket: int) -> str:
    return store.join(_bucket_folder(plan, job.role, bucket), f"part-{job.index:06d}.arrow")


def _bucket_folder(plan: Plan, role: str, bucket: int) -> str:
    return store.join(plan.work, role, f"bucket={bucket:05d}")


def _remove(folders: list[str], options: store.Options) -> None:
    # What cannot be removed now (an object store refusing a delete) is the work dir's removal's to retry at
    # the run's end, where a failure is reported: not a traceback from this thread amid the progress lines.
    for folder in folders:
        with contextlib.suppress(Exception):
            store.remove_prefix(folder, options)


def _ipc_rows(path: str, plan: Plan) -> int:
    if store.is_remote(path):
        return pa.ipc.open_file(pa.py_buffer(store.read_bytes(path, plan.options))).read_all().num_rows
    with pa.memory_map(str(store.local(path))) as f:
        reader = pa.ipc.open_file(f)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def _us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
