"""Atomic output: a run writes under a staging folder, then commits.

Commit writes ``_manifest.json`` (every file with its size), then ``_SUCCESS``,
then renames the staging folder into place; an existing output is replaced
only with ``overwrite`` and only once the new one is complete, so a failed or
interrupted run leaves the previous output as it was. Staging and work folders
are siblings of the output named ``.OUT.staging-<run id>``, ``.OUT.work-<run id>``
and ``.OUT.old-<run id>``; each holds an ``_owner.json`` (host, pid), so that the
next run on the same output removes those whose process is gone (after a
``kill -9``), and never those of a run still going.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segmint.engine.errors import ConfigError, OutputExistsError

__all__ = ["check_writable", "check_not_inside", "staged_dir", "staged_file", "work_dir", "remove_stale",
           "write_json", "manifest", "OWNER"]

OWNER = "_owner.json"
_KINDS = ("staging", "work", "old")


def check_writable(out: str | Path, *, overwrite: bool) -> Path:
    """Fail early (before any work) if ``out`` exists and may not be replaced, or is a symlink."""
    out = Path(out)
    if out.is_symlink():
        msg = f"output {out} is a symbolic link; give the real path ({out.resolve()}) or another --out"
        raise ConfigError(msg)
    if out.exists() and not overwrite:
        msg = f"output {out} already exists; pass --overwrite to replace it or choose another --out"
        raise OutputExistsError(msg)
    return out


def check_not_inside(out: str | Path, inputs: dict[str, list[str]]) -> None:
    """Refuse an output that equals, contains or lies inside an input: replacing it would destroy data."""
    target = Path(out).resolve()
    for flag, paths in inputs.items():
        for given in paths:
            base = Path(str(given).split("*")[0].split("?")[0].split("[")[0] or ".").resolve()
            if target == base or base.is_relative_to(target) or target.is_relative_to(base):
                msg = (f"--out {out} overlaps the input {given} ({flag}); writing there would replace the "
                       f"input: choose an output outside every input")
                raise ConfigError(msg)


@contextlib.contextmanager
def staged_dir(out: str | Path, *, overwrite: bool, run_id: str | None = None) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes ``out`` (manifest, then ``_SUCCESS``)."""
    out = check_writable(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    stage = _sibling(out, "staging", run_id)
    try:
        yield stage
        files = manifest(stage)
        write_json(stage / "_manifest.json", {"files": files})
        (stage / OWNER).unlink()
        (stage / "_SUCCESS").write_text("")
        _replace(stage, out, overwrite=overwrite)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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
def work_dir(beside: str | Path, run_id: str) -> Iterator[Path]:
    """A scratch folder beside ``beside`` (the output, or a temporary location), removed on any exit."""
    folder = _sibling(Path(beside), "work", run_id)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def write_json(path: Path, doc: Any) -> None:
    """Strict JSON (no NaN or Infinity: a non-finite number is a bug, and fails here)."""
    path.write_text(json.dumps(doc, indent=1, allow_nan=False, default=str))


def manifest(folder: Path) -> list[dict[str, Any]]:
    """Every file under ``folder`` (relative path and size), sorted."""
    return [{"path": str(p.relative_to(folder)), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != OWNER]


def _sibling(out: Path, kind: str, run_id: str | None) -> Path:
    folder = out.parent / f".{out.name}.{kind}-{run_id or uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    write_json(folder / OWNER, {"host": socket.gethostname(), "pid": os.getpid()})
    return folder


def _abandoned(folder: Path, out: Path) -> bool:
    """Ours (an owner file, or an old-* leftover of an interrupted replace) and its process is gone."""
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        # "old" folders are a previous output renamed aside, left by a crash after the new
        # output was in place; staging/work folders without an owner are not ours.
        return ".old-" in folder.name and out.exists() and (folder / "_SUCCESS").exists()
    if owner.get("host") != socket.gethostname():
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
