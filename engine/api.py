"""The Python API behind ``import segmint``: the commands, for paths or in-memory data.

Each function takes its main input as a path or URI, a list of them, or data in
memory (a Polars DataFrame or LazyFrame, a pandas DataFrame, a pyarrow Table or
Dataset), one ``RunConfig``, and returns a ``Result``: the output location, the
run.json content, and the tables on request (``result.assignments()`` is a
LazyFrame). In-memory data is written to a temporary Parquet file first (a
LazyFrame is streamed there), so every size goes through the same bounded-memory
pipeline as files do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from segmint.engine.analytics.clv import ClvParams
from segmint.engine.config import RunConfig
from segmint.engine.errors import ConfigError, InputContractError, SegmintError
from segmint.engine.io import store
from segmint.engine.io.committed import open_output
from segmint.engine.io.contract import check_readable_types
from segmint.engine.io.sink import missing_folders, private_folder, remove_empty
from segmint.engine.io.frames import polars_frame
from segmint.engine.io.sources import column_list, first_line
from segmint.engine.model import Model
from segmint.engine.pipeline import commands
from segmint.engine.pipeline.executor import Executor
from segmint.engine.progress import Progress

__all__ = ["Result", "run", "assign", "features", "clv", "cohorts", "validate", "Data"]

Data = Any  # str | Path | Sequence[str | Path] | pl.DataFrame | pl.LazyFrame | pandas / pyarrow tables


@dataclass(frozen=True)
class Result:
    """What a command wrote: ``out``, ``manifest`` (run.json), and its tables, read on request."""

    out: str
    manifest: dict[str, Any]
    summary: pl.DataFrame | None = None        # run and assign: one row per segment
    clv: ClvParams | None = None               # clv: the fitted parameters
    cohorts: pl.DataFrame | None = None        # cohorts: the long table
    _options: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def assignments(self) -> pl.LazyFrame:
        """Every customer with segment, distance, margin and features (run, assign)."""
        return self._scan("assignments")

    def features(self) -> pl.LazyFrame:
        """The feature table (features)."""
        return self._scan("features")

    def clv_table(self) -> pl.LazyFrame:
        """Per-customer CLV (clv)."""
        return self._scan("clv")

    def rejects(self) -> pl.LazyFrame:
        """Quarantined rows with their reason."""
        return self._scan("rejects")

    def profiles(self) -> pl.DataFrame:
        """One row per segment (run, assign)."""
        return open_output(self.out, dict(self._options)).read_parquet("profiles.parquet")

    def model(self) -> Model:
        """The saved model (run)."""
        return Model.load(self.out, dict(self._options))

    def _scan(self, folder: str) -> pl.LazyFrame:
        """The committed files of ``folder`` (never a file of another run writing to the same output)."""
        return open_output(self.out, dict(self._options)).scan(folder)


def run(transactions: Data, out: str | Path, config: RunConfig | None = None, *, progress: Progress | None = None,
        executor: Executor | str | None = None) -> Result:
    """Segment customers; writes the run directory ``out`` (see ``segmint run --help``)."""
    cfg = _checked(config, progress)
    with _inputs(transactions, out, cfg) as paths:
        return _result(commands.run(paths, out, cfg, progress, executor=executor), cfg)


def assign(model: str | Path, transactions: Data, out: str | Path, config: RunConfig | None = None, *,
           progress: Progress | None = None, executor: Executor | str | None = None) -> Result:
    """Score customers with the model of an earlier run (a run directory or its model folder)."""
    cfg = _checked(config, progress)
    reads = cfg
    if _paths(transactions) is None:
        # In-memory data is read for the model's mapping (a model of amounts in 'net' lost that column to the
        # defaults').
        saved = Model.load(model, dict(cfg.storage_options))
        reads = dataclasses.replace(cfg, columns=saved.columns,
                                    dedupe_on=cfg.dedupe_on if cfg.dedupe_on is not None else saved.dedupe_on)
    with _inputs(transactions, out, reads) as paths:
        return _result(commands.assign_customers(model, paths, out, cfg, progress, executor=executor), cfg)


def features(transactions: Data, out: str | Path, config: RunConfig | None = None, *,
             progress: Progress | None = None, executor: Executor | str | None = None) -> Result:
    """Write the per-customer feature table to ``out/features/``."""
    cfg = _checked(config, progress)
    with _inputs(transactions, out, cfg) as paths:
        return _result(commands.compute_feature_table(paths, out, cfg, progress, executor=executor), cfg)


def clv(transactions: Data, out: str | Path, config: RunConfig | None = None, *, progress: Progress | None = None,
        executor: Executor | str | None = None) -> Result:
    """Fit BG/NBD + Gamma-Gamma; ``result.clv`` holds the parameters, ``result.clv_table()`` the customers."""
    cfg = _checked(config, progress)
    with _inputs(transactions, out, cfg) as paths:
        return _result(commands.compute_clv(paths, out, cfg, progress, executor=executor), cfg)


def cohorts(transactions: Data, out: str | Path, config: RunConfig | None = None, *,
            progress: Progress | None = None, executor: Executor | str | None = None) -> Result:
    """Acquisition-month cohorts; ``result.cohorts`` holds the long table."""
    cfg = _checked(config, progress)
    with _inputs(transactions, out, cfg) as paths:
        return _result(commands.compute_cohorts(paths, out, cfg, progress, executor=executor), cfg)


def validate(transactions: Data, config: RunConfig | None = None, *, progress: Progress | None = None,
             executor: Executor | str | None = None) -> commands.ValidationReport:
    """Check the data contract and count data-quality issues; writes nothing."""
    cfg = _checked(config, progress)
    with _inputs(transactions, None, cfg) as paths:
        return commands.validate(paths, cfg, progress, executor=executor)


def _checked(config: RunConfig | None, progress: Progress | None) -> RunConfig:
    """The config (a default one for None), after checking both arguments' types: a plain function as
    ``progress`` failed deep in the first stage with an AttributeError."""
    if progress is not None and not all(callable(getattr(progress, m, None)) for m in ("start", "advance", "done")):
        msg = (f"progress must have the methods start(stage), advance(stage, done, total) and done(stage, seconds, "
               f"info) (segmint.Progress), got {type(progress).__name__}")
        raise ConfigError(msg)
    if config is None:
        return RunConfig()
    if not isinstance(config, RunConfig):
        msg = f"config must be a segmint.RunConfig, got {type(config).__name__}; build one with segmint.RunConfig(...)"
        raise ConfigError(msg)
    return config


def _result(r: commands.RunResult, cfg: RunConfig) -> Result:
    return Result(out=str(r.out), manifest=r.manifest, summary=r.summary, clv=r.clv, cohorts=r.cohorts,
                  _options=cfg.storage_options)


@contextlib.contextmanager
def _inputs(data: Data, out: str | Path | None, cfg: RunConfig) -> Iterator[list[str]]:
    """Paths as given; in-memory data written to a temporary Parquet file (its columns ``cfg`` reads), removed
    afterwards."""
    if (paths := _paths(data)) is not None:
        yield paths
        return
    base = Path(out).parent if out is not None and not store.is_remote(out) else Path(tempfile.gettempdir())
    made = missing_folders(base)   # removed again unless the output is in them
    base.mkdir(parents=True, exist_ok=True)
    folder = private_folder(base, ".segmint-input-")
    try:
        path = folder / "input.parquet"
        _write(data, path, cfg)
        try:
            yield [str(path)]
        except SegmintError as exc:   # it named the hidden file the data went through, not the caller's data
            given = f"the {type(data).__name__} given"
            exc.args = tuple(a.replace(repr([str(path)]), f"({given})").replace(str(path), given)
                             if isinstance(a, str) else a for a in exc.args)
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        # A failed run left them empty behind it; a run's output, written, is still reached by the path given.
        remove_empty(made, out if out is not None and not store.is_remote(out) else None)


def _paths(data: Data) -> list[str] | None:
    """``data`` as paths, where it is a path or a list of them; None for in-memory data."""
    if isinstance(data, (str, Path)):
        return [str(data)]
    if isinstance(data, Sequence) and data and all(isinstance(p, (str, Path)) for p in data):
        return [str(p) for p in data]
    return None


def _write(data: Data, path: Path, cfg: RunConfig) -> None:
    """The columns of ``data`` the run reads (``_mapped``) to a Parquet file. Every column was converted: an
    unused Object, Int128 or 40-digit Decimal column stopped the run with the library's own error (a Rust panic,
    past ``except Exception``)."""
    kind = f"{type(data).__module__}.{type(data).__name__}"
    pandas = kind.startswith("pandas.") and type(data).__name__ == "DataFrame"
    arrow = kind.startswith("pyarrow.") and (type(data).__name__ == "Table"
                                             or hasattr(data, "to_batches") and hasattr(data, "schema"))
    if not (isinstance(data, (pl.DataFrame, pl.LazyFrame)) or pandas or arrow):
        msg = (f"transactions must be a path or URI, a list of them, or a Polars DataFrame/LazyFrame, pandas "
               f"DataFrame or pyarrow Table/Dataset; got {kind}")
        raise ConfigError(msg)
    try:
        _write_columns(data, path, cfg)
    except (ValueError, TypeError, NotImplementedError, pl.exceptions.PolarsError,
            pl.exceptions.PanicException) as exc:   # each library's own; a full disk (OSError) says itself
        msg = (f"the transactions given cannot be read as a table ({type(exc).__name__}: {first_line(exc)}); give "
               f"each mapped column one type")
        raise InputContractError(msg) from None


def _write_columns(data: Data, path: Path, cfg: RunConfig) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    given = f"the {type(data).__name__} given"
    if isinstance(data, (pl.LazyFrame, pl.DataFrame)):
        schema = data.collect_schema()
        columns = _mapped(schema.names(), cfg, given)
        check_readable_types(schema, columns, given)   # Arrow could not open an Int128 column's file (exit 1)
        if isinstance(data, pl.LazyFrame):
            data.select(columns).sink_parquet(path)
        else:
            data.select(columns).write_parquet(path)
    elif hasattr(data, "iloc"):   # pandas
        polars_frame(data[_mapped([str(c) for c in data.columns], cfg, given)]).write_parquet(path)
    elif type(data).__name__ == "Table":
        pq.write_table(data.select(_mapped(data.schema.names, cfg, given)), path)
    else:   # a pyarrow Dataset: streamed in batches
        columns = _mapped(data.schema.names, cfg, given)
        with pq.ParquetWriter(path, pa.schema([data.schema.field(n) for n in columns])) as writer:
            for batch in data.to_batches(columns=columns):
                writer.write_batch(batch)


def _mapped(names: list[str], cfg: RunConfig, given: str) -> list[str]:
    """The columns of ``names`` the run reads (mapped, or named by --dedupe-on), in their order. A required one
    missing is refused here, naming what there is (written whole, an unused column that did not convert was
    named instead)."""
    c = cfg.columns
    required = {c.customer: "--customer-col", c.time: "--time-col",
                **({c.amount: "--amount-col"} if c.amount else {c.quantity: "--quantity-col", c.price: "--price-col"})}
    for name, flag in required.items():
        if name not in names:
            msg = f"column {name!r} ({flag}) not found in {given}; available: {column_list(names)}; map the right " \
                  f"column with {flag}"
            raise InputContractError(msg)
    wanted = {*c.source_columns(), *(cfg.dedupe_on or ())}
    return [n for n in names if n in wanted]

