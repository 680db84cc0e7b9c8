"""Buckets without a partition: input files that each hold customer ids no other file holds.

Where every Parquet file's id range (its footer's statistics) is apart from the others', as files written by
customer are (``segmint generate`` writes customers in blocks), a run of whole files is a bucket: all of a
customer's rows are in one file, so the map reads its bucket's files themselves and no row is rewritten to
scratch. On scenario L at 2 GB, with a pass over every row before the map: end to end 56.1-57.5 s against
61.0-62.2 s partitioned by hash (partition 8.9-10.0 s against 22.2-22.3 s; the map 27.4-28.0 s against 18.0-19.1 s,
as it decodes Parquet). That pass is skipped where the footers give the latest time (``footer_latest``): the
run's as-of and channels are settled from the buckets once mapped (in turn: 46.3 and 51.0 s against 55.9 and
57.3 s). Files whose ranges overlap go to one bucket together. Anything the footers cannot vouch for (a file
without statistics, a null id, ids that are not integers, files on an object store) is partitioned by hash as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from segmint.engine.errors import InputContractError
from segmint.engine.io import store
from segmint.engine.io.sources import Chunk, Source
from segmint.engine.io.times import FIRST_US, LAST_US

__all__ = ["file_clusters", "footer_latest", "file_stamps", "check_unchanged"]

_UNIT_US = {"milliseconds": 1_000, "microseconds": 1}
_DAY_US = 86_400_000_000


def file_clusters(source: Source, column: str, buckets: int, most_rows: int,
                  footers: dict[str, Any] | None = None) -> tuple[int, ...]:
    """The bucket of each of ``source``'s chunks, or () where its files cannot be the buckets: ranges of ids
    that meet are kept together, and runs of them are dealt to ``buckets`` buckets in order of their least id,
    each to the bucket its middle row falls in, counting rows in that order; () too where a bucket would hold
    more than ``most_rows`` rows, or more than a quarter above an even share. A function of the files, the
    bucket count and the memory budget: --resume's fingerprint holds the result, so an attempt that would map
    other buckets starts afresh. ``footers``: the files' footers read so far, by path (``footer_latest`` takes
    the same: each file's is read once)."""
    if buckets < 2 or source.csv or any(store.is_remote(chunk.path) for chunk in source.chunks):
        return ()
    rows: dict[str, int] = {}
    for chunk in source.chunks:
        rows[chunk.path] = rows.get(chunk.path, 0) + chunk.rows
    ranges = {}
    for path in rows:
        found = _id_range(path, column, footers)
        if found is None:
            return ()
        ranges[path] = found
    groups: list[tuple[int, list[str]]] = []   # (greatest id, files), in order of least id
    for path in sorted(rows, key=lambda p: (ranges[p], p)):
        least, greatest = ranges[path]
        if groups and least <= groups[-1][0]:
            groups[-1] = (max(groups[-1][0], greatest), [*groups[-1][1], path])
        else:
            groups.append((greatest, [path]))
    total = sum(rows.values())
    bucket_of: dict[str, int] = {}
    sizes = [0] * buckets
    before = 0
    for _, paths in groups:
        size = sum(rows[p] for p in paths)
        bucket = min(buckets - 1, (2 * before + size) * buckets // max(2 * total, 1))   # where its middle row falls
        bucket_of |= dict.fromkeys(paths, bucket)
        sizes[bucket] += size
        before += size
    # Buckets of whole files are as even as the files let them be: none above its memory, nor a quarter above
    # an even share (a few files as large as a bucket, or ranges that all meet, are partitioned by hash).
    if max(sizes) > min(most_rows, math.ceil(1.25 * total / buckets)):
        return ()
    return tuple(bucket_of[chunk.path] for chunk in source.chunks)


def footer_latest(source: Source, column: str, footers: dict[str, Any] | None = None) -> int | None:
    """The latest time of ``column`` in ``source``'s files by their footers' statistics, in microseconds as the
    map reads it (timestamps in ms or us, dates at their midnight): the as-of the run assumes for files that are
    the buckets, instead of a pass over every row; what the map then finds checks it (engine.pipeline.commands).
    None where a footer does not say (no statistics, another type) or its time is no valid one."""
    latest = None
    for path in dict.fromkeys(chunk.path for chunk in source.chunks):
        meta = _metadata(path, footers)
        if meta is None or column not in (names := _names(meta)):
            return None
        index = names.index(column)
        logical = meta.schema.column(index).logical_type
        per = _DAY_US if logical.type == "DATE" else \
            _UNIT_US.get(json.loads(logical.to_json())["timeUnit"]) if logical.type == "TIMESTAMP" else None
        if per is None:
            return None
        for group in range(meta.num_row_groups):
            part = meta.row_group(group).column(index)
            stats = part.statistics
            if stats is not None and stats.null_count == part.num_values:
                continue   # no time at all in this row group
            if stats is None or not stats.has_min_max or not isinstance(stats.max_raw, int):
                return None
            most = stats.max_raw * per
            latest = most if latest is None else max(latest, most)
    # A time beyond the years the map reads (an "infinity" an export writes) is a rejected row's: the rows say which
    # is the latest usable one.
    return latest if latest is None or FIRST_US <= latest <= LAST_US else None


def file_stamps(source: Source) -> tuple[str, ...]:
    """Each chunk's file's version as planned (``check_unchanged``): store.head's, which every write changes."""
    return tuple(_stamp(chunk.path) for chunk in source.chunks)


def check_unchanged(chunks: Sequence[Chunk], stamps: Sequence[str]) -> None:
    """Stop where a file is not as it was planned: its rows are read twice (the run's statistics, then its
    bucket's map) and its customers' range was taken from its footer then. A file rewritten between with ids
    another file holds would have split customers across buckets, with exit 0."""
    for chunk, stamp in zip(chunks, stamps, strict=True):
        if _stamp(chunk.path) != stamp:
            msg = f"{chunk.path} changed while the run read it: rerun once the input is written"
            raise InputContractError(msg)


def _stamp(path: str) -> str:
    version = store.head(path)
    return version.etag if version is not None else ""


def _id_range(path: str, column: str, footers: dict[str, Any] | None) -> tuple[int, int] | None:
    """The least and greatest id of a local Parquet file, from its footer; None where the footer does not say
    (no statistics, a null id, ids that are not integers) or the file has no rows."""
    meta = _metadata(path, footers)
    if meta is None or column not in (names := _names(meta)) or not meta.num_rows:
        return None
    index = names.index(column)
    least = greatest = None
    for group in range(meta.num_row_groups):
        part = meta.row_group(group).column(index)
        stats = part.statistics
        if part.num_values == 0:
            continue
        if (stats is None or not stats.has_min_max or stats.null_count is None or stats.null_count > 0
                or part.physical_type not in ("INT32", "INT64") or not isinstance(stats.min, int)):
            return None
        least = stats.min if least is None else min(least, stats.min)
        greatest = stats.max if greatest is None else max(greatest, stats.max)
    return None if least is None else (least, greatest)


def _metadata(path: str, footers: dict[str, Any] | None) -> Any:
    """A local Parquet file's footer (pyarrow's FileMetaData), kept in ``footers`` where given; None where it is
    not one. read_metadata builds no Arrow schema: 1,000 footers in 0.06 s against ParquetFile's 0.25 s."""
    import pyarrow.parquet as pq

    if footers is not None and path in footers:
        return footers[path]
    try:
        meta = pq.read_metadata(store.local(path))
    except (OSError, ValueError):
        meta = None
    if footers is not None:
        footers[path] = meta
    return meta


def _names(meta) -> list[str]:  # noqa: ANN001
    return [meta.schema.column(i).path for i in range(meta.num_columns)]
