"""Atomic output: a run writes under a staging location, then commits.

Local outputs: everything is written under a staging folder; commit writes
``_manifest.json`` (every file with its size), then ``_SUCCESS``, then renames the
folder into place. An existing output is replaced only with ``overwrite`` and only
once the new one is complete, so a failed or interrupted run leaves the previous
output as it was. Staging and work folders are siblings of the output named
``.OUT.staging-<run id>``, ``.OUT.work-<run id>`` and ``.OUT.old-<run id>``; each
holds an ``_owner.json`` (host, pid), so that the next run on the same output
removes those whose process is gone (after a ``kill -9``), never those of a run
still going.

Object stores have no rename. There, bucket parts are written at their final
keys under names carrying the run id (``part-00003-<run id>.parquet``), so they
never replace a previous run's; the run's small files (run.json, profiles, model)
wait under ``OUT/_staging-<run id>/``. Commit: the previous ``_SUCCESS`` is removed,
the small files are copied into place (server-side), ``_manifest.json`` lists every
file of the run, ``_SUCCESS`` (holding the run id) is written last, and only then
are the previous run's files and the staging prefix removed. Readers trust OUT only
when ``_SUCCESS`` exists and names the run of ``_manifest.json``, and read the
files the manifest lists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmint.engine.errors import ConfigError, OutputExistsError
from segmint.engine.io import store

__all__ = ["Layout", "check_writable", "check_not_inside", "staged_output", "staged_dir", "staged_file", "work_dir",
           "remove_stale", "write_json", "manifest", "OWNER", "sibling_path", "discard_remote"]

OWNER = "_owner.json"
_KINDS = ("staging", "work", "old")


@dataclass(frozen=True)
class Layout:
    """Where a run's files go before commit: bucket parts and the small files."""

    data_root: str
    meta_root: str
    tag: str                                    # "" locally; "-<run id>" on object stores
    options: tuple[tuple[str, str], ...] = ()   # object-store options

    def part(self, folder: str, bucket: int) -> str:
        """The file of one bucket in ``folder`` (e.g. ``assignments/segment=3``); a retry overwrites it."""
        return store.join(self.data_root, folder, f"part-{bucket:05d}{self.tag}.parquet")

    def meta(self, relative: str) -> str:
        return store.join(self.meta_root, relative)


@contextlib.contextmanager
def staged_output(out: str | Path, *, overwrite: bool, run_id: str, options: tuple[tuple[str, str], ...] = (),
                  keep: bool = False) -> Iterator[Layout]:
    """The layout to write a run into; committed on success, removed on any failure (module docstring)
    unless ``keep``: a resumable run, whose next attempt goes on writing there (its caller checked
    that ``out`` may be written before recording the run there)."""
    if not store.is_remote(out):
        with staged_dir(store.local(out), overwrite=overwrite, run_id=run_id, keep=keep) as stage:
            yield Layout(str(stage), str(stage), "", options)
        return
    if not keep:
        check_writable(out, overwrite=overwrite, options=options)
    meta_root = store.join(out, f"_staging-{run_id}")
    layout = Layout(str(out), meta_root, f"-{run_id}", options)
    opts = dict(options)
    try:
        yield layout
        _commit_remote(str(out), layout, run_id, opts)
    except BaseException:
        if not keep:
            discard_remote(out, run_id, opts)
        raise
    store.remove_prefix(meta_root, opts)


def discard_remote(out: str | Path, run_id: str, options: store.Options) -> None:
    """Remove what an uncommitted run ``run_id`` wrote to the object-store output ``out``."""
    tag = f"-{run_id}"
    store.remove([f for f in store.list_files(out, options) if tag in store.name(f)], options)
    store.remove_prefix(store.join(out, f"_staging-{run_id}"), options)


def check_writable(out: str | Path, *, overwrite: bool, options: tuple[tuple[str, str], ...] = ()) -> Path | str:
    """Fail early (before any work) if ``out`` exists and may not be replaced, or is a symlink."""
    store.check_scheme(out)
    if store.is_remote(out):
        if not overwrite and store.is_dir(out, dict(options)):
            msg = f"output {out} already exists; pass --overwrite to replace it or choose another --out"
            raise OutputExistsError(msg)
        return str(out)
    out = store.local(out)
    if out.is_symlink():
        msg = f"output {out} is a symbolic link; give the real path ({out.resolve()}) or another --out"
        raise ConfigError(msg)
    if out.exists() and not overwrite:
        msg = f"output {out} already exists; pass --overwrite to replace it or choose another --out"
        raise OutputExistsError(msg)
    return out


def check_not_inside(out: str | Path, inputs: dict[str, list[str]]) -> None:
    """Refuse an output that equals, contains or lies inside an input: replacing it would destroy data."""
    target = _normal(out)
    for flag, paths in inputs.items():
        for given in paths:
            base = _normal(str(given).split("*")[0].split("?")[0].split("[")[0] or ".")
            if target == base or base.startswith(target + "/") or target.startswith(base + "/"):
                msg = (f"--out {out} overlaps the input {given} ({flag}); writing there would replace the "
                       f"input: choose an output outside every input")
                raise ConfigError(msg)


@contextlib.contextmanager
def staged_dir(out: str | Path, *, overwrite: bool, run_id: str | None = None, keep: bool = False) -> Iterator[Path]:
    """Yield a staging directory (empty, or a resumable run's); on success it becomes ``out``
    (manifest, then ``_SUCCESS``). Removed on failure unless ``keep``."""
    out = check_writable(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    stage = _claim(sibling_path(out, "staging", run_id or uuid.uuid4().hex[:12]), keep)
    try:
        yield stage
        files = manifest(stage)
        write_json(stage / "_manifest.json", {"files": files})
        (stage / OWNER).unlink()
        (stage / "_SUCCESS").write_text("")
        _replace(stage, out, overwrite=overwrite)
    except BaseException:
        if not keep:
            shutil.rmtree(stage, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(out: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``out``; on success it is renamed onto ``out``."""
    out = check_writable(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:12]}"
    try:
        yield tmp
        if out.is_dir():
            msg = f"output {out} is a directory; give a file path for --out"
            raise OutputExistsError(msg)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def work_dir(folder: Path, *, keep: bool = False) -> Iterator[Path]:
    """A scratch folder (``sibling_path(beside, "work", run id)``: beside the output or in a temporary
    location), removed on any exit but a failure with ``keep`` (a resumable run's, reused by its next attempt)."""
    _claim(folder, keep)
    try:
        yield folder
    except BaseException:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


def sibling_path(out: str | Path, kind: str, run_id: str) -> Path:
    """Where ``staged_dir`` (kind ``staging``) and ``work_dir`` (kind ``work``) put a run's folder."""
    out = Path(out)
    return out.parent / f".{out.name}.{kind}-{run_id}"


def remove_stale(out: Path) -> list[Path]:
    """Remove staging/work/old siblings of ``out`` left by segmint runs whose process is gone."""
    removed = []
    if not out.parent.is_dir():
        return removed
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if not out.exists() and len(olds) == 1 and (olds[0] / "_SUCCESS").exists():
        olds[0].rename(out)  # a crash between the two renames of a replace: put the old output back
    for kind in _KINDS:
        for folder in out.parent.glob(f".{out.name}.{kind}-*"):
            if _abandoned(folder, out):
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)
                removed.append(folder)
    return removed


def write_json(path: str | Path, doc: Any, options: store.Options | None = None) -> None:
    """Strict JSON (no NaN or Infinity: a non-finite number is a bug, and fails here)."""
    store.write_bytes(str(path), json.dumps(doc, indent=1, allow_nan=False, default=str).encode(), options)


def manifest(folder: Path) -> list[dict[str, Any]]:
    """Every file under ``folder`` (relative path and size), sorted."""
    return [{"path": str(p.relative_to(folder)), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != OWNER]


def _normal(path: str | Path) -> str:
    """A comparable form: URIs without trailing slash, local paths absolute and resolved."""
    if store.is_remote(path):
        return str(path).rstrip("/")
    return str(store.local(path).resolve())


def _commit_remote(out: str, layout: Layout, run_id: str, opts: dict[str, str]) -> None:
    success = store.join(out, "_SUCCESS")
    store.remove([success], opts)  # from here until the new _SUCCESS, OUT is not a committed run
    staged = store.list_files(layout.meta_root, opts)
    for path in staged:
        store.copy(path, store.join(out, path[len(layout.meta_root) + 1:]), opts)
    listed = store.sizes(out, opts)
    ours = {store.join(out, p[len(layout.meta_root) + 1:]) for p in staged}
    ours |= {f for f in listed if layout.tag in store.name(f)}
    ours.discard(store.join(out, "_manifest.json"))
    files = [{"path": p[len(out) + 1:], "bytes": listed[p]} for p in sorted(ours)]
    store.write_bytes(store.join(out, "_manifest.json"),
                      json.dumps({"run_id": run_id, "files": files}, indent=1).encode(), opts)
    store.write_bytes(success, run_id.encode(), opts)
    keep = ours | {store.join(out, "_manifest.json"), success}
    stale = [f for f in listed if f not in keep and not f[len(out) + 1:].startswith(("_staging-", "_work-"))]
    store.remove(stale, opts)


def _claim(folder: Path, keep: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=keep)
    # A resumable run's folders outlive its process: remove_stale leaves them to --resume.
    write_json(folder / OWNER, {"host": socket.gethostname(), "pid": os.getpid(), "resume": keep})
    return folder


def _abandoned(folder: Path, out: Path) -> bool:
    """Ours (an owner file, or an old-* leftover of an interrupted replace) and its process is gone."""
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        # "old" folders are a previous output renamed aside, left by a crash after the new
        # output was in place; staging/work folders without an owner are not ours.
        return ".old-" in folder.name and out.exists() and (folder / "_SUCCESS").exists()
    if owner.get("host") != socket.gethostname() or owner.get("resume"):
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError):
        return False
    return False


def _replace(stage: Path, out: Path, *, overwrite: bool) -> None:
    # Re-checked here: another process may have created ``out`` meanwhile.
    check_writable(out, overwrite=overwrite)
    if not out.exists():
        stage.rename(out)
        return
    # Two renames: the old output stays whole until the new one is complete.
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:
        old.rename(out)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()
