"""``--resume``: a failed run keeps its finished jobs, and the same command with ``--resume`` goes on from them.

A run started with ``--resume`` records a state beside its output (run id, start time, bucket count
and chunk size, and a fingerprint of the command, inputs, output and configuration) and keeps its
staging and scratch folders if it fails. Every partition, map and score job that finishes writes a
done marker, its result as JSON (engine.pipeline.records: data, never pickled code), under
``work/done/<stage>/``. Rerun with ``--resume`` and the same
fingerprint, the run takes the recorded id, start time and sizes, so every job is the same job; it
loads the results of finished jobs instead of running them and runs the rest. The global fits run
again (they are deterministic, and small next to the bucket work). A marker's name carries a digest
of its job, so a job that changed (a score job after the fit came out differently, say on another
thread count) runs again. Any other fingerprint starts afresh and removes the recorded run's leftovers.

Inputs are fingerprinted by path and row count, plus size and modification time for local files and
size and entity tag (ETag) for objects, so an input rewritten with the same row count is seen; the
fingerprint also holds the versions of segmint and the libraries its outputs depend on, and, with
--pseudonymize-ids, an identifier of the key (an HMAC of a fixed text: never the key).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba

from segmint.engine.config import config_hash
from segmint.engine.io import store
from segmint.engine.io.pseudonym import require_key
from segmint.engine.pipeline import records
from segmint.engine.pipeline.bucket import SCRATCH_FORMAT
from segmint.engine.pipeline.executor import Executor
from segmint.engine.pipeline.plan import Plan

__all__ = ["State", "fingerprint", "load", "save", "forget", "map_jobs", "digest"]


@dataclass(frozen=True)
class State:
    fingerprint: str
    run_id: str
    started_at: str        # ISO, UTC
    buckets: int
    chunk_rows: int
    work: str              # its scratch space (--work-dir may change between attempts)

    @property
    def started(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.started_at)


def fingerprint(plan: Plan, out: str | Path) -> str:
    """What must not change between a failed run and its resumption."""
    files: dict[str, int] = {}
    for role in plan.roles():
        for chunk in plan.source(role).chunks:
            files[chunk.path] = files.get(chunk.path, 0) + chunk.rows
    from segmint.engine.model import versions

    options = plan.options
    identity = {path: [rows, *_stat(path, options)] for path, rows in sorted(files.items())}
    doc = {"command": plan.command, "out": str(out), "inputs": list(plan.inputs), "config": config_hash(plan.cfg),
           "buckets": plan.cfg.buckets, "files": identity, "versions": versions(), "code": _code_stamp(),
           "key": _key_id() if plan.cfg.pseudonymize_ids else None,
           "threads": numba.get_num_threads(),  # outputs are the same for the same thread count
           "scratch": [SCRATCH_FORMAT, plan.cfg.compress_scratch],   # the names and formats of its files
           "clusters": list(plan.clusters)}   # which files make which bucket, where they do
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def _code_stamp() -> str:
    """A digest of segmint's own sources (engine, kernels, cli): an attempt resumed after the code changed under
    the same version (an editable install after a pull, a reinstall from a branch) took the first attempt's
    buckets, mapped by the other code, as its own."""
    import importlib.util

    from segmint.kernels._jit import folder_stamp

    h = hashlib.sha256()
    for package in ("segmint.engine", "segmint.kernels", "segmint.cli"):
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            folders = [Path(root), *sorted(p for p in Path(root).rglob("*") if p.is_dir() and p.name != "__pycache__")]
            for folder in folders:
                h.update(str(folder.relative_to(root)).encode() + b"\0" + folder_stamp(str(folder)).encode())
    return h.hexdigest()


def load(out: str | Path, options: store.Options) -> State | None:
    """The recorded state for ``out``, or None (none, or unreadable: then nothing is resumed)."""
    try:
        return State(**json.loads(store.read_bytes(_path(out), options)))
    except Exception:  # noqa: BLE001 - a missing or damaged state means: start afresh
        return None


def save(out: str | Path, state: State, options: store.Options) -> None:
    store.write_bytes(_path(out), json.dumps(dataclasses.asdict(state)).encode(), options)


def forget(out: str | Path, options: store.Options) -> None:
    store.remove([_path(out)], options)


def map_jobs(executor: Executor, fn: Callable[[Any], Any], jobs: Sequence[Any], *, tick: Callable[[int, int], None],
             done: str | None, options: store.Options) -> tuple[list[Any], int]:
    """``executor.map(fn, jobs)`` where jobs with a done marker under ``done`` are not run again
    (``done=None``: no markers). Returns the results in job order and how many were loaded."""
    if done is None:
        return executor.map(fn, jobs, tick=tick), 0
    markers = [store.join(done, f"{i:05d}-{digest(_record(job))}.json") for i, job in enumerate(jobs)]
    present = set(store.list_files(done, options))   # one listing, not a failed read per job
    results = [_read_marker(m, options) if m in present else None for m in markers]
    todo = [i for i, r in enumerate(results) if r is None]
    skipped = len(jobs) - len(todo)
    marked = [_Marked(jobs[i].plan, dataclasses.replace(jobs[i], plan=None), markers[i]) for i in todo]
    ran = executor.map(_RunMarked(fn, tuple(options.items())), marked,
                       tick=lambda n, _: tick(skipped + n, len(jobs)))
    for i, result in zip(todo, ran, strict=True):
        results[i] = (result,)
    return [r[0] for r in results], skipped


@dataclass(frozen=True)
class _Marked:
    """A job and where its marker goes. The plan stays a field of its own, so that executors
    send it once per stage as they do for plain jobs."""

    plan: Plan | None
    job: Any            # with plan=None
    marker: str

    def __getattr__(self, name: str) -> Any:
        # The job's bucket or chunk, for the executor's error messages.
        if name.startswith("__") or name in ("plan", "job", "marker"):
            raise AttributeError(name)
        return getattr(self.job, name)


@dataclass(frozen=True)
class _RunMarked:
    """Runs a job, then records its result (picklable, so it runs as a Ray task too)."""

    fn: Callable[[Any], Any]
    options: tuple[tuple[str, str], ...]

    def __call__(self, item: _Marked) -> Any:
        result = self.fn(dataclasses.replace(item.job, plan=item.plan))
        store.write_bytes(item.marker, records.dumps({"result": result}), dict(self.options))
        return result


def _read_marker(path: str, options: store.Options) -> tuple[Any] | None:
    try:
        return (records.loads(store.read_bytes(path, options))["result"],)
    except Exception:  # noqa: BLE001 - no marker, or one cut short or unreadable: the job runs again
        return None


def digest(value: Any) -> str:
    """Of a job record (``_record``), or of a fitted model."""
    return hashlib.sha256(pickle.dumps(value)).hexdigest()[:16]


def _record(job: Any) -> Any:
    """The job without its plan (which holds this process's memory budget; its part that matters
    is in the fingerprint) and without object-store options (credentials, renewed between attempts)."""
    job = dataclasses.replace(job, plan=None)
    layout = getattr(job, "layout", None)
    return dataclasses.replace(job, layout=dataclasses.replace(layout, options=())) if layout is not None else job


def _path(out: str | Path) -> str:
    if store.is_remote(out):
        return store.join(out, "_resume.json")
    out = store.local(out)
    return str(out.parent / f".{out.name}.resume.json")


def _stat(path: str, options: store.Options) -> list[int | str]:
    if store.is_remote(path):
        version = store.head(path, options)
        return [version.size, version.etag] if version is not None else []
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def _key_id() -> str:
    """Which --pseudonymize-ids key a run used, without revealing it."""
    return hmac.new(require_key(), b"segmint resume key id", hashlib.sha256).hexdigest()[:16]
