"""Reading an output: only the files its commit lists.

``open_output(out)`` resolves a segmint output folder, local or on an object store, to its
committed run: locally the folder itself (renamed into place whole, with ``_SUCCESS``), on an
object store the version folder that ``OUT/_SUCCESS`` points to (engine.io.sink). Its
``_manifest.json`` lists every file; every segmint reader reads those files and no others, so
a run killed while writing, or one being written now, is never mixed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from segmint.engine.errors import InputContractError
from segmint.engine.io import store
from segmint.engine.io.sink import read_pointer

__all__ = ["Output", "open_output", "is_output"]


@dataclass(frozen=True)
class Output:
    """A committed output: where its files are and which they are."""

    location: str                           # OUT, as given (canonical)
    root: str                               # where its files are: OUT, or its version folder
    run_id: str | None
    files: tuple[str, ...]                  # relative to root, from the manifest
    options: tuple[tuple[str, str], ...] = ()

    def has(self, relative: str) -> bool:
        return relative in self.files or any(f.startswith(relative.rstrip("/") + "/") for f in self.files)

    def path(self, relative: str) -> str:
        """The full path of a committed file (InputContractError when the run has none)."""
        if relative not in self.files:
            msg = (f"{self.location} holds no {relative}: give the --out folder of a segmint command that "
                   f"writes it")
            raise InputContractError(msg)
        return store.join(self.root, relative)

    def parts(self, folder: str) -> list[str]:
        """Full paths of the committed Parquet files under ``folder``, sorted."""
        prefix = folder.rstrip("/") + "/"
        return [store.join(self.root, f) for f in self.files if f.startswith(prefix) and f.endswith(".parquet")]

    def scan(self, folder: str, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        """The committed Parquet files under ``folder`` as one table (``key=value`` folders become columns)."""
        parts = self.parts(folder)
        if not parts:
            msg = f"{self.location} holds no {folder}/: give the --out folder of a segmint command that writes it"
            raise InputContractError(msg)
        frame = pl.scan_parquet(parts, hive_partitioning=True, glob=False,   # files, not patterns: out[1]/...
                                storage_options=store.polars_options(dict(self.options)))
        return frame.select(columns) if columns is not None else frame

    def read_parquet(self, relative: str) -> pl.DataFrame:
        return store.read_parquet(self.path(relative), dict(self.options))

    def read_json(self, relative: str) -> Any:
        try:
            return json.loads(store.read_bytes(self.path(relative), dict(self.options)))
        except ValueError as exc:
            msg = f"{self.location}: {relative} is not valid JSON ({exc}); rerun the command that wrote it"
            raise InputContractError(msg) from None


def is_output(out: str | Path, options: store.Options | None = None) -> bool:
    """Whether ``out`` holds a committed segmint output."""
    return store.exists(store.join(store.canonical(out), "_SUCCESS"), options)


def open_output(out: str | Path, options: store.Options | None = None) -> Output:
    """The committed run at ``out`` (InputContractError, naming the fix, when there is none)."""
    store.check_scheme(out)
    location = store.canonical(out)
    opts = dict(options or {})
    if store.is_remote(location):
        pointer = read_pointer(location, opts)
        if pointer is None:
            raise InputContractError(_unfinished(location))
        root, run_id = pointer.root, pointer.run_id
        listing = store.join(location if pointer.legacy else root, "_manifest.json")
    else:
        if not store.local(location).is_dir() or not (store.local(location) / "_SUCCESS").is_file():
            raise InputContractError(_unfinished(location))
        root, run_id, listing = location, None, store.join(location, "_manifest.json")
    try:
        doc = json.loads(store.read_bytes(listing, opts))
        files = tuple(sorted(f["path"] for f in doc["files"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        msg = f"{location} has no readable _manifest.json ({type(exc).__name__}); rerun the command that wrote it"
        raise InputContractError(msg) from None
    return Output(location, root, doc.get("run_id", run_id) or run_id, files, tuple(sorted(opts.items())))


def _unfinished(location: str) -> str:
    return (f"{location} is not a finished segmint output (no _SUCCESS); give the --out folder of a segmint "
            f"command that completed")
