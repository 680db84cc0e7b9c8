"""Inputs resolved once: files, their mapped columns and types, and chunks of bounded size.

An input is Parquet or CSV: a file, a directory (read recursively; hidden and
``_``-prefixed files and folders are skipped, as Spark and Hive readers do, so
``_SUCCESS``, ``.crc`` and ``_temporary`` are ignored), or a glob; several may be
given. Only the mapped columns are read. CSV cells are read as text and parsed by
segmint (ids stay text: ``007`` and ``7`` are two customers; an amount that is not a
number is quarantined, not fatal). A chunk is a run of rows of one file, sized so
that reading it fits the memory budget; Parquet chunks follow row groups.

A directory partitioned Hive-style (``channel=web/part.parquet``) yields its keys as
columns, as Polars, DuckDB and Spark read it: the values in the folder names below the
directory given, integers when every value is one written as an integer prints (ASCII digits, no
leading zero: where those readers take ``007`` and ``7`` for one integer, segmint keeps two values, as it
keeps text ids), else text (``__HIVE_DEFAULT_PARTITION__`` is null). A column the files hold themselves is
read from the files.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import itertools
import os
import re
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.io import arrow_numpy, narrowing, store
from segmint.engine.io.times import looks_like_time
from segmint.engine.runtime import in_order, thread_budget, when_asked

__all__ = ["Chunk", "Source", "Listing", "list_inputs", "resolve", "split", "read_chunk", "read_chunks", "stream",
           "read_at", "first_line", "no_header_fix", "column_list"]

_PARQUET = (".parquet", ".pq", ".parq")
# Data in forms segmint does not read: compressed files and other table formats, refused rather than left out.
_OTHER_DATA = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4", ".snappy", ".zip", ".tar", ".json", ".jsonl",
               ".ndjson", ".orc", ".avro", ".tsv", ".xlsx", ".xls", ".feather", ".arrow", ".ipc")
_IPC = ".arrow"     # scratch files of the partition pass
# Suffixes of delimited text a tool may write data under: such a file naming the mapped columns is refused.
_TEXT_DATA = (".txt", ".dat", ".tab", ".psv", ".prn", ".text")
_BATCH_ROWS = 131_072
_INTEGER = re.compile(r"-?[1-9][0-9]*|0")   # a Hive value read as an integer (``_is_int``)
_READ_AHEAD_BYTES = 64 * 2**20
# A field no header names a column with: a time or a date however written (but a year alone: a column per year), a
# decimal fraction, an email address ('@timestamp' and 'balance_2024-01-01' are names).
_DECIMAL = re.compile(r"[-+]?\d*\.\d+")
_EMAIL = re.compile(r"[^@\s<]+@[^@\s>]+\.[a-z]{2,}", re.IGNORECASE)


@dataclass(frozen=True)
class Chunk:
    path: str
    offset: int
    rows: int
    hive: tuple[tuple[str, str | None], ...] = ()   # (key, value) of the folders it lies in


@dataclass(frozen=True)
class Source:
    """One input table: what is read, from where, in which chunks."""

    label: str                      # "transactions", "the events input", ...
    paths: tuple[str, ...]          # as given
    csv: bool
    columns: tuple[str, ...]        # the source columns read, in order
    schema: dict[str, pl.DataType]  # their types as read
    chunks: tuple[Chunk, ...]
    options: tuple[tuple[str, str], ...] = ()   # object-store options (credentials: never written out)
    widened: tuple[str, ...] = ()   # columns some files hold in a narrower type, cast to ``schema``'s as read

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)


@dataclass(frozen=True)
class Listing:
    """The files of some inputs (each with its Hive keys) and their schemas, read once."""

    inputs: tuple[str, ...]
    found: tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]
    csv: bool
    schemas: tuple[pl.Schema, ...]    # per file, Hive keys included
    options: tuple[tuple[str, str], ...]
    groups: tuple[tuple[int, ...] | None, ...]   # per file, a local Parquet file's row-group sizes
    skipped: tuple[str, ...] = ()     # local files below a folder input that are not data (a README.txt)


def list_inputs(inputs: Sequence[str | Path], label: str, options: tuple[tuple[str, str], ...] = (),
                footers: dict[str, Any] | None = None) -> Listing:
    """Expand ``inputs`` and read every file's schema (a Parquet footer each); ``footers``: where given, each local
    Parquet file's footer is kept there by path, for ``split`` and the plan's file clusters to read again."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        msg = f"no input given for {label}; pass one or more Parquet/CSV files, directories or globs"
        raise InputContractError(msg)
    for p in inputs:
        store.check_scheme(p)
    listed = [(str(p), *_expand(str(p), options)) for p in inputs]
    expanded = [(given, files) for given, files, _ in listed]
    _check_each_once(expanded, label)
    found = [item for _, items in expanded for item in items]
    csv = [f.lower().endswith(".csv") for f, _ in found]
    if any(csv) and not all(csv):
        msg = f"{label} mixes CSV and Parquet files; give one format per input table"
        raise InputContractError(msg)
    # A zero-byte CSV file (a day's export without sales) has no header and no rows: nothing to read, as in a
    # header-only one. It stopped the run ("empty CSV"); so did one holding only a byte-order mark or a line end,
    # the same empty export from Excel or PowerShell.
    found = [(f, keys) for f, keys in found
             if not (all(csv) and not store.is_remote(f) and _blank(str(store.local(f))))]
    if not found:
        msg = (f"{label} {list(map(str, inputs))} holds only empty files (no bytes, or only a byte-order mark or "
               f"white space); check the path or its export")
        raise InputContractError(msg)
    files = [f for f, _ in found]
    hive = _hive_types([keys for _, keys in found])
    csv = [f.lower().endswith(".csv") for f in files]
    # Footers read by Arrow first: Polars then finds them in the page cache. Polars alone took 1.7-2.0 s
    # over scenario L's 1,000 files with a cold cache, and 0.31-0.36 s after Arrow's reads.
    metas = [_metadata(f) if _local_parquet(f, all(csv)) else None for f in files]
    for f, meta in zip(files, metas, strict=True):
        if meta is not None and meta.metadata and b"ARROW:schema" in meta.metadata:   # else UTC, if any zone
            _check_time_zones(f, meta)
        if meta is not None and footers is not None:
            footers[f] = meta
    groups = tuple(_group_sizes(meta) if meta is not None else None for meta in metas)
    # A file's own keys only: one outside the key's folders (a root file beside channel=web/) was given the
    # column, passed the check that every file has it, then failed to read (exit 1, KeyError).
    schemas = tuple(_with_hive(_schema(f, all(csv), options), {key: hive[key] for key, _ in keys})
                    for f, keys in found)
    skipped = tuple(f for _, _, others in listed for f in others)
    return Listing(tuple(map(str, inputs)), tuple(found), all(csv), schemas, options, groups, skipped)


def resolve(listing: Listing, wanted: dict[str, str], label: str) -> Source:
    """The source of ``listing``'s files, checked: every ``wanted`` column (name -> the flag that maps it)
    exists in every file, with one type."""
    files = [f for f, _ in listing.found]
    schemas = listing.schemas
    csv, options = listing.csv, listing.options
    rows = [sum(groups) if groups is not None else _rows(f, csv, options)
            for f, groups in zip(files, listing.groups, strict=True)]
    # A file without rows has no values to read, so its types are not compared (pandas writes an empty
    # frame's text columns as Null); the first file with rows gives the types.
    first = next((i for i, n in enumerate(rows) if n), 0)
    for f, schema, n in zip(files, schemas, rows, strict=True):
        for name, flag in wanted.items():
            if name not in schema:
                other = next((g for g, s in zip(files, schemas, strict=True) if name in s), None)
                fix = (f"{other} has it: give files of one schema" if other is not None else
                       (csv and _other_separator(schema)) or no_header_fix(schema, csv) or
                       f"available: {column_list(schema.names())}; map the right column with {flag}"
                       + (" (or '' where the events have none; assign reads the column its model's run read: "
                          "add it, empty where there are no sessions)" if flag == "--event-session-col" else ""))
                msg = f"column {name!r} ({flag}) not found in {f}; {fix}"
                raise InputContractError(msg)
    _check_skipped(listing.skipped, wanted, label, listing.csv)
    types = {c: _column_type(c, files, schemas, rows, first) for c in wanted}
    source = Source(label=label, paths=listing.inputs, csv=csv, columns=tuple(wanted), schema=types,
                    chunks=tuple(Chunk(f, 0, n, keys) for (f, keys), n in zip(listing.found, rows, strict=True) if n),
                    options=options,
                    widened=tuple(c for c in wanted if any(n and s[c] != types[c]
                                                           for s, n in zip(schemas, rows, strict=True))))
    if source.rows == 0:
        msg = f"{label} {list(source.paths)} has no rows; check the path or the filter that produced it"
        raise InputContractError(msg)
    return source


def split(source: Source, max_rows: int, footers: dict[str, Any] | None = None) -> Source:
    """The same source in chunks of at most ``max_rows`` rows (Parquet: whole row groups where they fit);
    ``footers``: local Parquet files' footers already read, by path (``list_inputs``')."""
    chunks = []
    for whole in source.chunks:
        if source.csv or store.is_remote(whole.path):
            bounds = [whole.rows]
        else:
            meta = footers.get(whole.path) if footers else None   # None too where a file's footer was unreadable
            bounds = _group_sizes(meta) if meta is not None else _row_groups(whole.path)
        start = 0
        run = 0
        for size in bounds:
            if run and run + size > max_rows:
                chunks.append(Chunk(whole.path, start, run, whole.hive))
                start, run = start + run, 0
            run += size
            while run > max_rows:
                chunks.append(Chunk(whole.path, start, max_rows, whole.hive))
                start, run = start + max_rows, run - max_rows
        if run:
            chunks.append(Chunk(whole.path, start, run, whole.hive))
    return dataclasses.replace(source, chunks=tuple(chunks))


def read_chunk(source: Source, chunk: Chunk) -> pl.DataFrame:
    """The mapped columns of one chunk, as read (CSV cells as text)."""
    if chunk.path.endswith(_IPC):   # scratch: its narrowed columns widened (Polars would read them as stored)
        frame = pl.from_arrow(_read_ipc(chunk, source.options).select(list(source.columns)))
        assert isinstance(frame, pl.DataFrame)
        return frame
    try:
        lf = _scan(chunk.path, source.csv, source.options)
        present = lf.collect_schema().names() if chunk.hive else ()
        keys = [pl.lit(value, source.schema[key]).alias(key) for key, value in chunk.hive
                if key in source.columns and key not in present]
        frame = lf.with_columns(keys).select(*source.columns).slice(chunk.offset, chunk.rows).collect()
        # Cast by Arrow, as the streamed path casts: Polars panicked on a time its unit could not hold (exit 1).
        widened = {c: _arrow_type(source.schema[c]) for c in source.widened if c in source.columns}
        return pl.DataFrame(pl.from_arrow(_widened(frame.to_arrow(), widened, chunk.path))) if widened else frame
    except (FileNotFoundError, IsADirectoryError, PermissionError, pl.exceptions.PolarsError) as exc:
        # Other OSErrors (connection resets, timeouts) pass up: an executor may retry them.
        msg = f"cannot read {chunk.path}: {first_line(exc)}"
        raise InputContractError(msg) from None


def read_chunks(source: Source, chunks: Sequence[Chunk]) -> pl.DataFrame:
    """Several chunks, in order, as one frame."""
    frames = [read_chunk(source, c) for c in chunks]
    return pl.concat(frames, rechunk=False) if frames else source.empty()


def stream(source: Source, chunks: Sequence[Chunk], dictionary: Sequence[str] = (),
           made: Callable[[pa.Table, int], Any] | None = None) -> Iterator[Any]:
    """The mapped columns of ``chunks``, in order, as Arrow tables: local Parquet in batches of at most
    ``_BATCH_ROWS`` rows, row groups decoded on a helper thread ahead of the caller and, while it would
    otherwise wait, on the caller's (``in_order``; on the caller's alone where the thread budget is one), the
    ``dictionary`` columns as dictionaries (their values decoded once per row group); anything else a chunk at
    a time through Polars.

    With ``made``, what ``made(table, at)`` makes of each table instead (``at``: the position of its first row
    among the rows of ``chunks``), on the thread that read the table; of scratch files (memory-mapped, nothing
    to decode) on a helper thread and the caller's, where the thread budget has two."""
    starts = np.concatenate(([0], np.cumsum([c.rows for c in chunks], dtype=np.int64))).tolist()
    scratch = bool(chunks) and all(c.path.endswith(_IPC) for c in chunks)
    remote = any(store.is_remote(c.path) for c in chunks)
    if scratch and made is not None and thread_budget() > 1 and not remote:   # a remote file is read whole
        # Pieces of a chunk of at least a batch each, so that both threads make the pieces of one chunk (a
        # partition job's rows of the bucket: millions where the input is small) and what is held ahead is a few
        # batches (M in three buckets, the map's read phases 0.85-0.89 -> 0.63 s, in turn with a chunk at a
        # time), and no piece is much smaller: each costs its making's fixed part.
        pieces = ((chunk, lo, hi - lo, at + lo) for chunk, at in zip(chunks, starts, strict=False)
                  for lo, hi in itertools.pairwise(_cuts(chunk.rows)))
        yield from in_order((when_asked(_made_of_scratch, source, chunk, lo, rows, at, made)
                             for chunk, lo, rows, at in pieces), ahead=4)
        return
    make = made or _as_read
    if scratch or source.csv or remote:
        for chunk, at in zip(chunks, starts, strict=False):
            yield make(_read_ipc(chunk, source.options) if scratch else read_chunk(source, chunk).to_arrow(), at)
        return
    groups = _parquet_groups(source, chunks, dictionary, make, starts)
    if thread_budget() < 2:   # --threads 1: one thread, the caller's (a helper made it two)
        with contextlib.closing(groups):
            for group in groups:
                yield from group
        return
    # Two ahead, not one: the decoder and the caller take turns unevenly batch by batch, and with one ahead
    # each waited for the other (bench M's read loop 1.06-1.39 -> 0.98-1.23 s, three pairs of runs
    # interleaved; four ahead gained nothing more). One batch more held: about 5 MB of M's lines. Row groups
    # on both threads: with the helper alone decoding, the caller waited for it 9.9 s of scenario L's 16.5 s
    # read phase; with both, L's read phase 13.0-18.9 -> 11.9-12.7 s (two pairs in turn, bench/README.md).
    # Four where ``made`` does the work and the caller's own part is light (the map's codes): with two the
    # helper waited for room while the caller made an item itself (L's read phases 11.0-11.8 -> 10.3-10.6 s).
    yield from in_order(groups, ahead=4 if made else 2)


def read_at(source: Source, chunks: Sequence[Chunk], positions: np.ndarray) -> pa.Table:
    """The rows at ``positions`` (sorted; numbered across ``chunks`` in order), as read."""
    parts = []
    start = 0
    for chunk in chunks:
        lo, hi = np.searchsorted(positions, [start, start + chunk.rows])
        if hi > lo:
            parts.append(read_chunk(source, chunk).to_arrow().take(arrow_numpy.array(positions[lo:hi] - start)))
        start += chunk.rows
    return pa.concat_tables(parts, promote_options="permissive") if parts else source.empty().to_arrow()


def column_list(names: Sequence[str]) -> str:
    """Column names for a message: plain ones as they are, others quoted (' customer id' among ts, amount
    read as three names or four)."""
    return ", ".join(n if re.fullmatch(r"[\w.\-]+", n) else repr(n) for n in names)


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, with what it quotes between backticks masked: Polars quotes the cells
    it could not parse (a CSV line from an unclosed quote on: a customer id, an unmapped email), and error
    lines end up in logs, pseudonymised run or not."""
    text = str(exc).strip()
    return re.sub(r"`[^`]*(`|$)", "`…`", text.splitlines()[0]) if text else type(exc).__name__


def no_header_fix(schema: pl.Schema, csv: bool) -> str | None:
    """For a CSV file whose first line holds values (numbers, times), read as its header: that it needs one.
    Its column names are then a customer's data, not to be quoted in a message. None for any other file, and
    for a header of names some of which are numbers (a column per year: '2023', '2024'), which was told to add
    a header: taken for values where they are at least half of it, or where one is a date or time, a decimal
    fraction or an email address."""
    names = schema.names()
    # Half of them values, or one that only data holds: a line of an id, a time, an amount and text fields (a
    # channel, an email) was under half and listed as the columns, pseudonymised run or not.
    if csv and names and (2 * sum(looks_like_time(n.strip()) for n in names) >= len(names)
                          or any(_is_value(n.strip()) for n in names)):
        return ("its first line holds values, not column names (a CSV file's first line is its header): add a "
                "header line")
    return None


def _is_value(name: str) -> bool:
    """A CSV header's name that only a data value is (``_DECIMAL``, ``_EMAIL``, a time but a whole number)."""
    return bool(_DECIMAL.fullmatch(name) or _EMAIL.search(name) or (looks_like_time(name) and not name.isdigit()))


def _parquet_groups(source: Source, chunks: Sequence[Chunk], dictionary: Sequence[str],
                    made: Callable[[pa.Table, int], Any], starts: list[int]) -> Generator[Iterator[Any], None, None]:
    """What ``made`` makes of the batches of each row group a chunk reads (``starts``: each chunk's first row
    among them all), a stream per row group, in order (``in_order``'s)."""
    import pyarrow.parquet as pq

    # Columns decoded on Arrow's pool only where the thread budget has room beyond the two this reading
    # thread and the caller's take: on two, the pool's threads and the caller's kernels took turns on the
    # same cores (bench M's read loop 1.22-1.23 s with the pool, 1.09-1.12 s without; scenario L's partition
    # jobs, whose own work is light, were no faster with it: 8 jobs each way, interleaved, either order).
    # The budget, not Arrow's own count: in a library that loaded pyarrow first, that is the host's cores.
    pool = thread_budget() > 2
    ahead = _ReadAhead([str(store.local(c.path)) for c in chunks])
    # Text columns read as dictionaries take one where a file's is all null (Null type): a chunk's type is its column's.
    widened = {c: pa.dictionary(pa.int32(), pa.string()) if c in dictionary and source.schema[c] == pl.String
               else _arrow_type(source.schema[c]) for c in source.widened}
    for chunk, chunk_at in zip(chunks, starts, strict=False):
        path = str(store.local(chunk.path))
        try:
            ahead.advise(path)
            meta = pq.read_metadata(path)
            names = meta.schema.to_arrow_schema().names
        except (OSError, pa.ArrowInvalid) as exc:
            msg = f"cannot read {chunk.path}: {first_line(exc)}"
            raise InputContractError(msg) from None
        read = _Group(source, chunk, path, meta, [c for c in source.columns if c in names],  # others: Hive keys
                      tuple(dictionary), widened, pool)
        groups = np.concatenate(([0], np.cumsum(_group_sizes(meta))))
        for group in range(meta.num_row_groups):
            if groups[group] < chunk.offset + chunk.rows and groups[group + 1] > chunk.offset:
                # The chunk's rows within the row group: skip, then take.
                first = max(int(groups[group]), chunk.offset)
                yield read.batches(group, first - int(groups[group]),
                                   min(int(groups[group + 1]), chunk.offset + chunk.rows) - int(groups[group]),
                                   made, chunk_at + first - chunk.offset)


@dataclass(frozen=True)
class _Group:
    """How the row groups of one chunk's file are read."""

    source: Source
    chunk: Chunk
    path: str
    meta: Any
    columns: list[str]          # the mapped columns the file holds
    dictionary: tuple[str, ...]
    widened: dict[str, pa.DataType]
    pool: bool

    def batches(self, group: int, lo: int, hi: int, made: Callable[[pa.Table, int], Any], at: int) \
            -> Generator[Any, None, None]:
        """What ``made`` makes of rows lo:hi of row group ``group``, a batch at a time; ``at``: the position of
        row ``lo`` (``stream``'s). Its errors are its own: not a file's that cannot be read."""
        with contextlib.closing(self._tables(group, lo, hi)) as tables:
            for table in tables:
                rows = table.num_rows
                yield made(table, at)
                at += rows

    def _tables(self, group: int, lo: int, hi: int) -> Generator[pa.Table, None, None]:
        """Rows lo:hi of row group ``group``, in batches of at most ``_BATCH_ROWS``."""
        import pyarrow.parquet as pq

        try:
            # A file object of its own: another thread may be reading another row group of the file.
            file = pq.ParquetFile(self.path, metadata=self.meta,
                                  read_dictionary=[c for c in self.dictionary if c in self.columns])
            batches = file.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=self.columns,
                                        use_threads=self.pool)
            seen, last, batch, table = 0, [], None, None
            for batch in batches:
                a, b = max(lo - seen, 0), min(batch.num_rows, hi - seen)
                seen += batch.num_rows
                table = self._table(batch.slice(a, b - a)) if b > a else None
                if seen >= hi:   # the rest of the row group is the next chunk's
                    last.append(table)
                    break
                if table is not None:
                    yield table
            # The reader's buffers let go before the last batch is given: this stream then holds nothing of it
            # while the caller works on it and the other thread reads the next row groups.
            batches.close()
            del batches, file, batch, table
        except (OSError, pa.ArrowInvalid) as exc:
            msg = f"cannot read {self.chunk.path}: {first_line(exc)}"
            raise InputContractError(msg) from None
        if last and last[0] is not None:
            yield last.pop()

    def _table(self, batch: pa.RecordBatch) -> pa.Table:
        table = _widened(pa.Table.from_batches([batch]), self.widened, self.chunk.path)
        return _hive_columns(_without_views(table), self.source, self.chunk, self.dictionary)


def _column_type(name: str, files: list[str], schemas: Sequence[pl.Schema], rows: list[int], first: int) \
        -> pl.DataType:
    """The type column ``name`` is read as: the one every file with rows converts to without loss
    (_common_type); else refused, naming the first file whose type none shares with the files before it."""
    common = schemas[first][name]
    for f, schema, n in zip(files, schemas, rows, strict=True):
        if n and (wider := _common_type([common, schema[name]])) is None:
            msg = (f"column {name!r} is {schema[name]} in {f} but {schemas[first][name]} in {files[first]}"
                   + (f" ({common} in the files between)" if common != schemas[first][name] else "")
                   + "; give files of one schema")
            raise InputContractError(msg)
        common = wider if n else common
    return common


def _common_type(types: list[pl.DataType]) -> pl.DataType | None:
    """The type every one of ``types`` (one column's, file by file) converts to without loss, or None. Files of
    one dataset written by different tools differ so: int32 and int64 ids, float32 and float64 amounts, times in
    milliseconds and microseconds, decimals of one scale and several precisions; and a column without a value,
    which pandas writes as the Null type (a day's export where no line had a category), takes any type. A time
    zone and none, Unix times in nanoseconds beside coarser ones (their range is 1677-2262), a UInt64 beside
    signed integers, and numbers beside text stay refused: no type holds both without a guess."""
    types = [t for t in types if t != pl.Null] or [pl.Null]
    first = types[0]
    if all(t == first for t in types):
        return first
    if all(t.is_unsigned_integer() for t in types):
        return next(t for t in (pl.UInt64, pl.UInt32, pl.UInt16, pl.UInt8) if t in types)   # the widest
    if all(t.is_integer() for t in types):
        return None if pl.UInt64 in types else pl.Int64
    if all(t.is_float() for t in types):
        return pl.Float64
    if all(isinstance(t, pl.Datetime) for t in types):
        zones = {t.time_zone for t in types}   # type: ignore[attr-defined]
        units = {t.time_unit for t in types}   # type: ignore[attr-defined]
        return pl.Datetime("us", zones.pop()) if len(zones) == 1 and units <= {"ms", "us"} else None
    if all(isinstance(t, pl.Decimal) for t in types):
        scales = {t.scale for t in types}   # type: ignore[attr-defined]
        widest = max((t.precision or 38) for t in types)   # type: ignore[attr-defined]
        return pl.Decimal(widest, scales.pop()) if len(scales) == 1 else None
    return None


def _widened(table: pa.Table, types: dict[str, pa.DataType], path: str) -> pa.Table:
    """``table`` (of the file at ``path``) with the ``types`` columns it holds cast to them (a file of a narrower
    type: _common_type). The one cast that can fail is of a time in milliseconds beyond the range microseconds
    hold (about 292,000 years; a sentinel such as 9223372036854775807): refused, naming it, where one unit alone
    would have quarantined its row."""
    for name, dtype in types.items():
        i = table.schema.get_field_index(name)
        if i >= 0 and table.schema.field(i).type != dtype:
            try:
                table = table.set_column(i, name, table.column(i).cast(dtype))
            except pa.ArrowInvalid as exc:
                msg = (f"cannot read {path}: its column {name!r} ({table.schema.field(i).type}) holds a value "
                       f"{dtype} of the other files cannot hold ({first_line(exc)}); write the files in one type")
                raise InputContractError(msg) from None
    return table


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    return pl.Series([], dtype=dtype).to_arrow().type


def _without_views(table: pa.Table) -> pa.Table:
    """Text and binary view columns (a Parquet file written from string_view keeps that type) as large ones:
    Arrow's take has no kernel for views (exit 1, 'array_take has no kernel ... string_view')."""
    views = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}
    if not any(field.type in views for field in table.schema):
        return table
    return table.cast(pa.schema([field.with_type(views.get(field.type, field.type)) for field in table.schema]))


class _ReadAhead:
    """Asks the kernel to read the files of the next ``_READ_AHEAD_BYTES`` into the page cache while this one
    is decoded. Arrow reads a file a column chunk at a time, each read waiting on the disk when the file is
    not cached: scenario L's partition (1,000 files of 2.5 MB) took 28.3-28.9 s so, and 24.2-25.5 s after
    Polars' schema read had read its small files whole (alternating runs, page cache dropped)."""

    def __init__(self, paths: list[str]) -> None:
        self._files = list(dict.fromkeys(paths))
        self._at = {path: i for i, path in enumerate(self._files)}
        self._sizes = [_size(path) for path in self._files] if hasattr(os, "posix_fadvise") else []
        self._advised = 0      # files advised so far, in order

    def advise(self, path: str) -> None:
        """Before ``path`` is read: it and the files after it, up to the byte budget."""
        if not self._sizes:
            return
        end = first = self._at[path]
        total = 0
        while end < len(self._files) and (end == first or total < _READ_AHEAD_BYTES):
            total += self._sizes[end]
            end += 1
        for i in range(max(self._advised, first), end):
            _advise(self._files[i])
        self._advised = max(self._advised, end)


def _advise(path: str) -> None:
    """The first ``_READ_AHEAD_BYTES`` of ``path``: a file of many gigabytes is not asked for at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return   # reading it says what is wrong
    try:
        os.posix_fadvise(fd, 0, _READ_AHEAD_BYTES, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _blank(path: str) -> bool:
    """A file of no bytes, or of nothing but a byte-order mark and white space (a few bytes are read)."""
    try:
        if os.path.getsize(path) > 64:
            return False
        with open(path, "rb") as f:
            return not f.read().removeprefix(b"\xef\xbb\xbf").strip()
    except OSError:
        return False


def _as_read(table: pa.Table, _at: int) -> pa.Table:
    return table


def _cuts(rows: int) -> list[int]:
    """Where ``rows`` rows are cut into pieces of at least ``_BATCH_ROWS`` (one piece where fewer), evenly."""
    pieces = max(rows // _BATCH_ROWS, 1)
    return [rows * i // pieces for i in range(pieces + 1)]


def _made_of_scratch(source: Source, chunk: Chunk, lo: int, rows: int, at: int,
                     made: Callable[[pa.Table, int], Any]) -> Any:
    return made(_read_ipc(chunk, source.options, lo, rows), at)


def _read_ipc(chunk: Chunk, options: tuple[tuple[str, str], ...], lo: int = 0, rows: int | None = None) -> pa.Table:
    """A scratch file's rows of the chunk (Arrow IPC, written by the partition pass; ``rows`` of them from its
    ``lo``-th on, all by default), memory-mapped when local, their narrowed columns widened back
    (engine.io.narrowing)."""
    rows = chunk.rows - lo if rows is None else rows
    return narrowing.widen(store.read_ipc(chunk.path, dict(options)).slice(chunk.offset + lo, rows))


def _hive_columns(table: pa.Table, source: Source, chunk: Chunk, dictionary: Sequence[str] = ()) -> pa.Table:
    """Hive keys of the chunk's folders as columns, for mapped columns the file does not hold; text read as
    a dictionary (``dictionary``) where the files' own columns are: a bucket's rows from a file holding the
    column and from one taking it from its folder were two types, and the partition failed (exit 1)."""
    for key, value in chunk.hive:
        if key in source.columns and key not in table.column_names:
            arrow_type = pa.int64() if source.schema[key] == pl.Int64 else pa.large_string()
            column = pa.array([int(value) if value is not None and arrow_type == pa.int64() else value]
                              * table.num_rows, arrow_type)
            if key in dictionary and arrow_type != pa.int64():
                column = column.cast(pa.string()).dictionary_encode()
            table = table.append_column(key, column)
    return table.select(list(source.columns))


def _expand(path: str, options: tuple[tuple[str, str], ...]) \
        -> tuple[list[tuple[str, tuple[tuple[str, str | None], ...]]], list[str]]:
    """The data files of one input, each with the Hive keys of the folders it lies in below a directory input,
    and the other files below a local directory input that are not hidden (a README.txt; _check_skipped).
    A local path that exists is itself, whatever characters it holds (a folder 'export[1]'), before it is a
    pattern; on an object store a pattern with '*' or '?' is listed first (one request, as before) and taken as
    a prefix only where it matches nothing, and one with '[' alone (more often a name than a pattern there) is
    a prefix first: listed as a pattern, 's3://b/in[1]' listed the whole bucket."""
    opts = dict(options)
    remote, star = store.is_remote(path), any(ch in path for ch in "*?")
    if remote:
        pattern_first, pattern_last = star, not star and "[" in path
    else:
        pattern_first, pattern_last = (star or "[" in path) and not os.path.lexists(store.local(path)), False

    def matches() -> list[tuple[str, tuple[tuple[str, str | None], ...]]]:
        return [(f, ()) for f in store.glob(path, opts) if _is_data(Path(store.name(f)), path)]

    files, skipped = (matches() if pattern_first else []), []
    if not files and store.is_dir(path, opts):
        for f, rel in _below(path, opts):
            if _is_data(rel, path):
                files.append((f, _hive_keys(rel)))
            elif not remote and not any(part.startswith((".", "_")) for part in rel.parts):
                skipped.append(f)
    elif not files and store.exists(path, opts):
        files = [(path, ())]
    if not files and pattern_last:
        files = matches()
    if not files:
        msg = f"input not found or empty: {path}; give a Parquet/CSV file, a directory or a glob"
        raise InputContractError(msg)
    return files, skipped


def _check_skipped(skipped: Sequence[str], wanted: dict[str, str], label: str, csv: bool) -> None:
    """Refuse a skipped file whose first line is a header naming the customer column and another mapped one
    as fields of their own (a day's export saved as .txt or .dat beside the .csv ones): its rows were left out
    without a word. A README's first line ('Columns: customer_id, ts, amount (EUR)') is no such header."""
    ids = [name for name, flag in wanted.items() if flag in ("--customer-col", "--event-customer-col",
                                                              "--customers-id-col")]
    for path in skipped:
        if Path(path).suffix.lower() not in _TEXT_DATA:
            continue
        try:
            with open(store.local(path), "rb") as f:
                first = f.read(4096).split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
        except OSError:
            continue
        fields = max(({field.strip().strip('"') for field in first.split(sep)} for sep in ",;\t|"), key=len)
        named = sorted(set(wanted) & fields)
        if ids and ids[0] in fields and len(named) >= 2:
            fix = "rename it .csv where it is comma-separated, or move it out" if csv else "move it out"
            msg = (f"{label} holds {path}, whose first line names its mapped columns ({', '.join(named)}): data "
                   f"segmint does not read, as it reads only Parquet and .csv files; {fix}")
            raise InputContractError(msg)


def _check_each_once(expanded: list[tuple[str, list[tuple[str, Any]]]], label: str) -> None:
    """Refuse a file two inputs name ('in' and 'in/f.csv', 'in' and 'in/*.parquet'): its rows counted twice."""
    seen: dict[str, str] = {}
    for given, items in expanded:
        for f, _ in items:
            key = store.canonical(f) if store.is_remote(f) else os.path.realpath(store.local(f))
            if key in seen:
                msg = (f"{label} reads {f} twice, through the inputs {seen[key]!r} and {given!r}: its rows would "
                       f"count twice; give each file once (a folder, or its files, not both)")
                raise ConfigError(msg)
            seen[key] = given


def _below(folder: str, options: store.Options) -> list[tuple[str, Path]]:
    """Every file under ``folder`` and its path below it. Locally the listing spells the folder as Path does
    ('./in', 'in//' and 'file:///x/in' are 'in' and '/x/in'): cut by the length of the path as typed, './in'
    made '_temporary/0/p.parquet' 'emporary/0/p.parquet', read as data, and 'channel=web' 'hannel'."""
    if store.is_remote(folder):
        base = folder.rstrip("/")
        return [(f, Path(f[len(base) + 1:])) for f in store.list_files(folder, options)]
    root = store.local(folder)
    return [(f, Path(f).relative_to(root)) for f in store.list_files(folder, options)]


def _hive_keys(relative: Path) -> tuple[tuple[str, str | None], ...]:
    keys = []
    for part in relative.parts[:-1]:
        key, sep, value = part.partition("=")
        if sep and key:
            value = urllib.parse.unquote(value)
            keys.append((urllib.parse.unquote(key), None if value == "__HIVE_DEFAULT_PARTITION__" else value))
    return tuple(keys)


def _hive_types(found: list[tuple[tuple[str, str | None], ...]]) -> dict[str, pl.DataType]:
    """Each Hive key's type: Int64 when every value is an integer, else String."""
    values: dict[str, list[str]] = {}
    for keys in found:
        for key, value in keys:
            values.setdefault(key, []).extend([value] if value is not None else [])
    return {key: pl.Int64 if vs and all(_is_int(v) for v in vs) else pl.String for key, vs in values.items()}


def _is_int(text: str) -> bool:
    """Whether a Hive value is an Int64 written as it prints: ASCII digits, no leading zero, no '+', not '-0'. As
    Int64 '007' would be the customer of folder '7', and a digit of another script ('٣') another folder's value or
    (a superscript '²') no integer at all."""
    return _INTEGER.fullmatch(text) is not None and -2**63 <= int(text) < 2**63


def _with_hive(schema: pl.Schema, hive: dict[str, pl.DataType]) -> pl.Schema:
    extra = {key: dtype for key, dtype in hive.items() if key not in schema}
    return pl.Schema({**schema, **extra}) if extra else schema


def _is_data(relative: Path, given: str) -> bool:
    """Not hidden or ``_``-prefixed anywhere in the path (as Spark and Hive readers skip them). Parquet, CSV or
    (Hive) no extension is data; data in a form segmint does not read is refused (InputContractError): a
    'part-1.csv.gz' was left out of its folder without a word. Anything else (a README, a .metadata sidecar)
    is skipped."""
    if any(part.startswith((".", "_")) for part in relative.parts):
        return False
    suffix = relative.suffix.lower()
    if suffix in (*_PARQUET, ".csv") or suffix == "":
        return True
    if suffix in _OTHER_DATA:
        msg = (f"input {given} holds {relative}, data segmint does not read (Parquet, or uncompressed CSV): "
               f"decompress or convert it, move it out, or give a pattern that matches only the data files")
        raise InputContractError(msg)
    return False


def _scan(path: str, csv: bool, options: tuple[tuple[str, str], ...] = ()) -> pl.LazyFrame:
    """One listed file. Not a pattern: Polars globs by default, and 'export[1].parquet' matched no file."""
    opts = store.polars_options(dict(options))
    if path.endswith(_IPC):
        return pl.scan_ipc(path, storage_options=opts, glob=False)
    if csv:
        return pl.scan_csv(path, infer_schema=False, storage_options=opts, glob=False)
    return pl.scan_parquet(path, storage_options=opts, glob=False)


def _schema(path: str, csv: bool, options: tuple[tuple[str, str], ...]) -> pl.Schema:
    try:
        schema = _scan(path, csv, options).collect_schema()
        if csv:
            _check_header(path, schema)
        return schema
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read {path}: {first_line(exc)}"
        raise InputContractError(msg) from None
    except pl.exceptions.PanicException as exc:   # a BaseException: it went up as a traceback
        # A zone Polars cannot parse in a file whose footer Arrow did not read first (an object store's).
        fix = ("; write its times in UTC or a named zone (such as Asia/Kolkata for +05:30)"
               if "time zone" in first_line(exc) else "")
        msg = f"cannot read {path}: Polars cannot read it ({first_line(exc)}){fix}"
        raise InputContractError(msg) from None


def _other_separator(schema: pl.Schema) -> str | None:
    """The fix for a CSV file whose header reads as one column ('customer_id;ts;amount'): its values are
    separated otherwise than by commas, and no column mapping helps. None for any other header. The header is
    not quoted: without one, it is the first line's values."""
    names = schema.names()
    sep = next((sep for sep in (";", "\t", "|") if len(names) == 1 and sep in names[0]), None)
    if sep is not None:
        return (f"its header reads as one column, its fields separated by {sep!r}: segmint reads comma-separated "
                f"CSV; write the file with commas (or as Parquet)")
    return None


def _convert(path: str) -> str:
    """How to make ``path`` UTF-8: from UTF-16 where it starts with that byte-order mark (latin1, the advice for
    every file, turned UTF-16 into nonsense), else from Latin-1."""
    head = b""
    with contextlib.suppress(OSError):
        if not store.is_remote(path):
            with open(store.local(path), "rb") as f:
                head = f.read(2)
    source = "utf-16" if head in (b"\xff\xfe", b"\xfe\xff") else "latin1"
    return f"convert the file (e.g. iconv -f {source} -t utf-8)"


def _check_header(path: str, schema: pl.Schema) -> None:
    """Refuse a CSV header that names a column twice: Polars renames the second (``amount_duplicated_0``), and
    the mapping read the first without a word, whichever was meant. Refuse one that is not UTF-8: Polars
    reads a header lossily (a Latin-1 'montant_\xe9' became 'montant_\ufffd', mappable as such), where it
    refuses such rows."""
    if any("\ufffd" in name for name in schema.names()):
        msg = f"cannot read {path}: its header is not UTF-8; segmint reads CSV as UTF-8: {_convert(path)}"
        raise InputContractError(msg)
    if _cr_only(path):
        # Read as one line: its header ran on into the rows, and the message said it had no header.
        msg = (f"cannot read {path}: its lines end in a carriage return alone (as classic Mac OS wrote them); "
               f"segmint reads lines ending in \\n or \\r\\n: convert them (e.g. tr '\\r' '\\n' < in.csv > out.csv)")
        raise InputContractError(msg)
    for name in schema.names():
        twice = re.fullmatch(r"(.+)_duplicated_\d+", name)
        if twice and twice.group(1) in schema:
            if fix := no_header_fix(schema, True):   # its repeated "name" is a customer's value: not quoted
                raise InputContractError(f"{path}: {fix}")
            msg = (f"{path} names the column {twice.group(1)!r} twice in its header; give each column its own "
                   f"name, so that the one meant can be mapped")
            raise InputContractError(msg)


def _cr_only(path: str) -> bool:
    """Whether a local file's first 64 KiB hold carriage returns and no line feed."""
    if store.is_remote(path):
        return False
    try:
        with open(store.local(path), "rb") as f:
            head = f.read(65_536)
    except OSError:
        return False
    return b"\r" in head and b"\n" not in head


def _check_time_zones(path: str, meta: Any) -> None:
    """Refuse a time zone Polars cannot parse (a fixed offset such as +05:30, which pandas writes), before
    Polars' schema read panics on it with a traceback."""
    for name, zone in _unreadable_zones(meta.metadata[b"ARROW:schema"]):
        msg = (f"column {name!r} in {path} has the time zone {zone!r}, which Polars cannot read: write its "
               f"times in UTC or a named zone (such as Asia/Kolkata for +05:30)")
        raise InputContractError(msg)


@functools.lru_cache(maxsize=64)
def _unreadable_zones(arrow_schema: bytes) -> list[tuple[str, str]]:
    """(column, zone) of each time zone Polars cannot parse in a footer's Arrow schema (base64 IPC), once per
    schema: the files of a dataset share theirs (1,000 footers' schemas converted one by one took 0.05 s)."""
    out = []
    for field in pa.ipc.read_schema(pa.py_buffer(base64.b64decode(arrow_schema))):
        for zone in _zones(field.type):   # any column's, mapped or not: Polars reads every column's schema
            try:
                pl.Series([0]).cast(pl.Datetime("us", zone))
            except pl.exceptions.PolarsError:
                out.append((field.name, zone))
    return out


def _zones(dtype: pa.DataType) -> Iterator[str]:
    """The time zones of a type and of the types nested in it (struct fields, list values, map keys and items)."""
    if getattr(dtype, "tz", None):
        yield dtype.tz
    for i in range(dtype.num_fields):
        yield from _zones(dtype.field(i).type)


def _local_parquet(path: str, csv: bool) -> bool:
    """Whether ``path``'s rows are counted from its footer (``_row_groups``): a tenth of a Polars count's time."""
    return not csv and not path.endswith(_IPC) and not store.is_remote(path)


def _rows(path: str, csv: bool, options: tuple[tuple[str, str], ...]) -> int:
    """The rows of a file. A CSV file is parsed whole, every cell, to count them: Polars' count alone skips
    the parse, and counted 9 rows of 3,000 in a file whose tenth row opened a quote it never closed (the map
    then read those 9, with exit 0). Streamed, so no more of the file is held than a batch; 3 M lines of
    six columns: 0.02 -> 0.23-0.26 s."""
    try:
        if csv:
            counts = _scan(path, csv, options).select(pl.len(), pl.all().null_count())
            return int(counts.collect(engine="streaming").row(0)[0])
        return int(_scan(path, csv, options).select(pl.len()).collect().item())
    except (OSError, pl.exceptions.PolarsError) as exc:
        said, hint = first_line(exc), ""
        if csv and "utf-8" in str(exc).lower():   # Latin-1, Windows-1252 or UTF-16 text, not a quoting fault
            hint = f"; segmint reads CSV as UTF-8: {_convert(path)}"
        elif csv and "more fields than" in str(exc):   # it was told of quotes, and by Polars of truncate_ragged_lines
            said, hint = "a line holds more fields than the header", (" (a field with a comma that is not quoted, "
                                                                      "a decimal comma, or another separator?)")
        elif csv and isinstance(exc, pl.exceptions.ComputeError):
            hint = " (a quote opened and not closed? In CSV a field holding a quote is quoted, its quotes doubled)"
        msg = f"cannot read {path}: {said}{hint}"
        raise InputContractError(msg) from None


def _row_groups(path: str) -> list[int]:
    return _group_sizes(_metadata(path))


def _metadata(path: str) -> Any:
    """A local Parquet file's footer."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(store.local(path)).metadata
    except (OSError, ValueError, NotImplementedError) as exc:
        # A file of another format given by name (.tsv, .csv.gz) is read as Parquet: say what is read. A column of
        # a type Arrow does not read (Polars writes Int128 columns Arrow cannot open) stopped the run, exit 1.
        other = "" if path.lower().endswith(_PARQUET) else \
            "; segmint reads Parquet files and uncompressed comma-separated .csv files"
        if isinstance(exc, NotImplementedError):
            other = ("; a column of this file has a type Arrow, which segmint reads Parquet with, does not read: cast "
                     "it when writing the file (a 128-bit integer to Int64, or to text)")
        msg = f"cannot read {path}: {first_line(exc)}{other}"
        raise InputContractError(msg) from None


def _group_sizes(meta: Any) -> list[int]:
    """Rows of each row group of a Parquet file's metadata."""
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
