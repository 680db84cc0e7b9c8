"""Atomic output: a run writes out of sight, then commits; readers see only committed runs.

Every command that writes an output folder first claims it (engine.io.lease: one writer per
output), then writes, then commits. Jobs report the part files they write
(``part-NNNNN.parquet``); commit removes any part file no job reported (a retried or
resumed job's leftover can never add a second copy of a customer) and lists every file
in ``_manifest.json``.

Local outputs: everything is written under a staging folder ``.OUT.staging-<run id>`` beside
the output; commit writes ``_manifest.json`` and ``_SUCCESS``, then renames the folder into
place (replacing, one exchange of the two folders where the system can, Linux's renameat2, so that a reader
finds the old output or the new one, never none; else two renames, the old output whole until the new one is).
Staging and work folders hold an ``_owner.json`` (host, pid), so the next run on the same
output removes those whose process is gone (after a ``kill -9``), never those of a run still going.

Object stores have no rename. There a run writes every file under its own version folder
``OUT/run-<run id>/`` and commits with one write of ``OUT/_SUCCESS``, the pointer naming that
folder (``{"run_id": ..., "root": "run-<run id>"}``), conditional on the pointer being the one
the run saw when it claimed the output. The previous version folder is removed after the
pointer moved. A kill at any moment leaves the pointer naming the previous complete version
or the new complete one; a dead run's uncommitted folder, or a previous version it had not yet
removed, is removed by the next run that claims the output. Readers follow the pointer
(engine.io.committed). Outputs written by earlier segmint versions (parts beside ``_SUCCESS``
holding the run id) are read, and replaced, the same way.

``--overwrite`` replaces only a segmint output: a folder or prefix that is not empty and holds
no committed run (nor only what dead segmint runs left) is refused, whatever the flag.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import functools
import glob
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segmint.engine.errors import ConfigError, OutputExistsError
from segmint.engine.io import store
from segmint.engine.io.lease import Lease
from segmint.engine.runtime import pid_namespace, pids_here, process_gone, stop_if_signalled

__all__ = ["Layout", "Staging", "Pointer", "check_writable", "check_not_inside", "staged_output", "staged_dir",
           "staged_file", "work_dir", "remove_stale", "write_json", "manifest", "read_pointer", "OWNER",
           "owner_doc", "private_folder", "sibling_path", "version_root", "committed_run", "is_committed",
           "mark_committed", "missing_folders", "remove_empty",
           "is_part"]

OWNER = "_owner.json"
_KINDS = ("staging", "work", "old")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2   # <fcntl.h>, <linux/fs.h>
# Files of an object-store output that belong to segmint's protocol, not to a run's content.
_CONTROL = ("_SUCCESS", "_lock.json", "_resume.json")
_PART = re.compile(r"part-\d{5}\.parquet")
# What dead segmint runs leave in an object-store prefix: version folders, and the staging
# prefixes and run-tagged parts of earlier segmint versions.
_RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{8}"
_LEFTOVER = re.compile(rf"(run-{_RUN_ID}/|_staging-{_RUN_ID}/).+|.*/part-\d{{5}}-{_RUN_ID}\.parquet")


@dataclass(frozen=True)
class Layout:
    """Where a run's files go before commit (sent with every job)."""

    root: str
    options: tuple[tuple[str, str], ...] = ()   # object-store options

    def part(self, folder: str, bucket: int) -> str:
        """The file of one bucket in ``folder`` (e.g. ``assignments/segment=3``); a retry overwrites it."""
        return store.join(self.root, folder, f"part-{bucket:05d}.parquet")

    def write_part(self, frame: Any, folder: str, bucket: int) -> str:
        """Write one bucket's part of ``folder``; returns its relative path, which the job reports."""
        path = self.part(folder, bucket)
        store.write_parquet(frame, path, self.options)
        return self.relative(path)

    def meta(self, relative: str) -> str:
        return store.join(self.root, relative)

    def relative(self, path: str) -> str:
        return path[len(self.root) + 1:]


@dataclass
class Staging:
    """The driver's side of a staged output: its layout, and the part files jobs reported."""

    layout: Layout
    reported: set[str] = field(default_factory=set)   # relative paths


@dataclass(frozen=True)
class Pointer:
    """An object-store output's ``_SUCCESS``: the committed run and where its files are."""

    version: store.Version
    run_id: str
    root: str               # the version folder; OUT itself for an earlier segmint's output
    legacy: bool


@contextlib.contextmanager
def staged_output(out: str | Path, lease: Lease, *, overwrite: bool, run_id: str,
                  options: tuple[tuple[str, str], ...] = (), keep: bool = False) -> Iterator[Staging]:
    """Stage a run's output and commit it on success (module docstring); on failure remove what it
    wrote, unless ``keep`` (a resumable run, whose next attempt goes on writing there)."""
    if not store.is_remote(out):
        reported: set[str] = set()
        with staged_dir(store.local(out), overwrite=overwrite, run_id=run_id, keep=keep, lease=lease,
                        parts=reported) as stage:
            yield Staging(Layout(str(stage), options), reported)
        return
    opts = dict(options)
    pointer = read_pointer(out, opts)
    _check_remote(str(out), pointer, overwrite, opts)
    root = version_root(out, run_id)
    _remove_uncommitted(str(out), pointer, keep_root=root, options=opts)
    staging = Staging(Layout(root, options))
    committing = False
    try:
        yield staging
        stop_if_signalled()
        committing = True
        _commit_remote(str(out), staging, run_id, pointer, lease, opts)
    except BaseException as exc:
        # A signal during the pointer's write is raised once the store has taken it: the version then is the
        # output, and removing it left a pointer to nothing (every reader failed, every later run exit 4).
        moved = is_committed(out, run_id, opts) if committing else False
        if moved:
            mark_committed(exc)
        elif moved is False and not keep:   # unknown (the store unreachable): the next run removes it if not the output
            store.remove_prefix(root, opts)
        raise
    if pointer is not None:
        try:
            _remove_version(str(out), pointer, opts)
        except BaseException as exc:   # a signal: committed all the same, the next run removes the rest
            mark_committed(exc)
            raise


def check_writable(out: str | Path, *, overwrite: bool, options: tuple[tuple[str, str], ...] = (),
                   file: bool = False) -> Path | str:
    """Fail early (before any work) if ``out`` exists and may not be replaced: without ``overwrite``,
    or (a folder or prefix) when it is not empty and holds no segmint output; or is a symlink."""
    store.check_scheme(out)
    if store.is_remote(out):
        opts = dict(options)
        _check_remote(str(out), read_pointer(out, opts), overwrite, opts)
        return str(out)
    out = store.local(out)
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():   # read "unexpected FileExistsError" as the lock was written
        msg = f"output {out}: {above} is a file, not a folder: give --out a path whose folders are folders"
        raise ConfigError(msg)
    if out.is_symlink():
        msg = f"output {out} is a symbolic link; give the real path ({out.resolve()}) or another --out"
        raise ConfigError(msg)
    if out.exists() and not overwrite:
        msg = (f"output {out} already exists; pass --overwrite (overwrite=True in Python) to replace it "
               f"or choose another --out")
        raise OutputExistsError(msg)
    if out.exists() and not file and not _replaceable(out):
        msg = (f"output {out} is not a segmint output (no _SUCCESS and _manifest.json) and is not empty: "
               f"--overwrite replaces only what segmint wrote; choose a new or empty folder for --out")
        raise OutputExistsError(msg)
    if out.is_dir() and not file:
        _check_only_committed(out)
    return out


def check_not_inside(out: str | Path, inputs: dict[str, list[str]]) -> None:
    """Refuse an output that equals, contains or lies inside an input: replacing it would destroy data."""
    target = _normal(out)
    for flag, paths in inputs.items():
        for given in paths:
            if _overlaps(target, str(given)):
                msg = (f"--out {out} overlaps the input {given} ({flag}); writing there would replace the "
                       f"input: choose an output outside every input")
                raise ConfigError(msg)


def _overlaps(target: str, given: str) -> bool:
    """Whether the output ``target`` (``_normal``) holds, is or lies in what the input ``given`` reads: a path
    (a local one that exists is itself: engine.io.sources reads a folder 'in[1]' as a folder), or a pattern.
    A local pattern reads what its first component with a wildcard matches in the folder above it (cut at the
    wildcard, 'in[12]' was 'in', and an --out in 'in1', which it reads, was not seen to be inside it); on an
    object store a wildcard matches across '/' (store.glob), so everything from the first one on is read, and
    a prefix with one may be read as itself, without a request to tell."""
    wild = any(ch in given for ch in "*?[")
    remote = store.is_remote(given)
    if not wild or remote or os.path.lexists(store.local(given)):
        base = _normal(given)
        if target == base or base.startswith(target + "/") or target.startswith(base + "/"):
            return True
        if not wild or not remote:
            return False
    if remote:   # what the first wildcard token matches, then anything: keys under target it could read
        pattern = store.canonical(given)
        at = min(i for i in (pattern.find(ch) for ch in "*?[") if i >= 0)
        token = pattern.find("]", at) + 1 if pattern[at] == "[" and "]" in pattern[at:] else at + 1
        return fnmatch.fnmatchcase(target, pattern[:token] + "*") or pattern[:at].startswith(target + "/")
    parts = given.split("/")
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    base = _normal("/".join(parts[:first]) or ("/" if given.startswith("/") else "."))
    inside = base if base.endswith("/") else base + "/"
    if target == base or base.startswith(target + "/"):
        return True
    return target.startswith(inside) and fnmatch.fnmatchcase(target[len(inside):].split("/")[0], parts[first])


def read_pointer(out: str | Path, options: store.Options) -> Pointer | None:
    """The committed run of an object-store output, or None (nothing committed there)."""
    path = store.join(out, "_SUCCESS")
    version = store.head(path, options)
    if version is None:
        return None
    try:
        text = store.read_bytes(path, options).decode()
    except FileNotFoundError:
        return None
    if text.startswith("{"):
        doc = json.loads(text)
        return Pointer(version, str(doc["run_id"]), store.join(out, doc["root"]), False)
    return Pointer(version, text.strip(), str(out), True)


def committed_run(out: str | Path, options: store.Options) -> str | None:
    """The run id of the output committed at ``out`` (None: none, or unreadable)."""
    if store.is_remote(out):
        pointer = read_pointer(out, options)
        return pointer.run_id if pointer is not None else None
    try:
        return json.loads((store.local(out) / "_manifest.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def is_committed(out: str | Path, run_id: str, options: store.Options) -> bool | None:
    """Whether the output committed at ``out`` is run ``run_id``'s (None: it could not be read)."""
    try:
        return committed_run(out, options) == run_id
    except Exception:  # noqa: BLE001 - whatever the store raised, the answer is unknown
        return None


def version_root(out: str | Path, run_id: str) -> str:
    """The folder an object-store run writes into."""
    return store.join(out, f"run-{run_id}")


def is_part(relative: str) -> bool:
    """A file written by a bucket job (engine.io.sink.Layout.part)."""
    return bool(_PART.fullmatch(store.name(relative)))


@contextlib.contextmanager
def staged_dir(out: str | Path, *, overwrite: bool, run_id: str | None = None, keep: bool = False,
               lease: Lease | None = None, parts: set[str] | None = None) -> Iterator[Path]:
    """Yield a staging directory (empty, or a resumable run's); on success it becomes ``out``
    (manifest, then ``_SUCCESS``). Removed on failure unless ``keep``. With ``parts`` (the
    relative paths jobs reported), part files not among them are removed before the manifest;
    with ``lease``, the claim is checked before ``_SUCCESS``."""
    out = check_writable(out, overwrite=overwrite)
    made = missing_folders(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out, held_by=run_id if lease is not None else None)
    stage = _claim(sibling_path(out, "staging", run_id or uuid.uuid4().hex[:12]), keep)
    inode = stage.stat().st_ino   # committed once ``out`` is this folder, whatever a signal interrupted
    try:
        yield stage
        stop_if_signalled()
        if parts is not None:
            _drop_unreported(str(stage), parts, {})
        write_json(stage / "_manifest.json", {"run_id": run_id, "files": manifest(stage)})
        if lease is not None:
            lease.check()
        (stage / "_SUCCESS").write_text("")
        # The owner file goes with the folder and only then: a staging folder without one is not taken for
        # segmint's, and one killed here was left beside the output for good, a copy of its customers.
        _replace(stage, out, overwrite=overwrite)
        (out / OWNER).unlink(missing_ok=True)
    except BaseException as exc:
        if _is_folder(out, inode):   # in place: a signal after the commit
            with contextlib.suppress(OSError):
                (out / OWNER).unlink(missing_ok=True)
            shutil.rmtree(stage, ignore_errors=True)   # after an exchange, the old output under this name
            mark_committed(exc)
        elif not keep:
            shutil.rmtree(stage, ignore_errors=True)
            remove_empty(made)
        raise


@contextlib.contextmanager
def staged_file(out: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` (in a staging folder with an owner file, so that one a kill left,
    a whole copy of the output, is removed by the next write of it as staged_dir's are); on success it is
    renamed onto ``out``."""
    out = check_writable(out, overwrite=overwrite, file=True)
    made = missing_folders(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out, ("staging",))   # a file has no old-* siblings: one of that name is somebody else's
    folder = _claim(sibling_path(out, "staging", uuid.uuid4().hex[:12]), False)
    tmp = folder / out.name
    try:
        yield tmp
        stop_if_signalled()
        if out.is_dir():
            msg = f"output {out} is a directory; give a file path for --out"
            raise OutputExistsError(msg)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        remove_empty(made, out)


@contextlib.contextmanager
def work_dir(folder: Path, *, keep: bool = False) -> Iterator[Path]:
    """A scratch folder (``sibling_path(beside, "work", run id)``: beside the output or in a temporary
    location), readable by this user only, removed on any exit but a failure with ``keep`` (a
    resumable run's, reused by its next attempt)."""
    _claim(folder, keep, private=True)
    try:
        yield folder
    except BaseException:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


def missing_folders(folder: Path) -> list[Path]:
    """The folders on the way to ``folder`` (itself included) that do not exist yet, deepest first: those a run may
    make for its output, lease or scratch (``remove_empty``). Each as the system resolves it, so that
    ``keep/../x`` lists ``x`` (not the user's ``keep``) and ``new/../keep/o`` lists ``keep/o``, ``keep`` and the
    ``new`` that making them makes."""
    made = {f for f in _resolved_way(folder) if not f.exists()}
    return sorted(made, key=lambda f: len(f.parts), reverse=True)


def remove_empty(folders: list[Path], reach: str | Path | None = None) -> None:
    """Remove ``folders`` (``missing_folders``'s, deepest first) where they are empty: a run that failed, or one
    whose scratch went with it, left the folders it had made for them behind (exit 3 at ``--out new/o`` left
    ``new``; a run with ``--work-dir new`` left ``new`` after exit 0). rmdir removes no folder that holds
    anything. ``reach``: a path (an output, as given) that must still resolve where it exists: the folders on its
    way stay, empty or not (``new/../keep/o`` needs an empty ``new``)."""
    on_way = set(_resolved_way(reach)) if reach is not None and os.path.exists(reach) else set()
    for folder in folders:
        if folder not in on_way:
            with contextlib.suppress(OSError):   # not made after all (the run stopped first), or not empty
                folder.rmdir()


def _resolved_way(path: str | Path) -> list[Path]:
    """``path`` and each folder above it as written (not normalised: ``new/..`` is reached through ``new``), each
    resolved as the system resolves it."""
    written = Path(path).absolute()
    return [Path(os.path.realpath(f)) for f in (written, *written.parents)]


def sibling_path(out: str | Path, kind: str, run_id: str) -> Path:
    """Where ``staged_dir`` (kind ``staging``) and ``work_dir`` (kind ``work``) put a run's folder."""
    out = Path(out)
    return out.parent / f".{out.name}.{kind}-{run_id}"


def remove_stale(out: Path, kinds: tuple[str, ...] = _KINDS, held_by: str | None = None) -> list[Path]:
    """Remove staging/work/old siblings (of ``kinds``) of ``out`` left by segmint runs whose process is gone.
    ``held_by``: this run holds ``out``'s lease (its id): no other run stages ``out`` now, so the other runs'
    staging folders are left, whatever their host or PID namespace, but for those kept for --resume. A
    container restarted under its name (a new PID namespace) left its killed run's staging folder, a copy of
    the customers' outputs, for good."""
    removed = []
    if not out.parent.is_dir():
        return removed
    olds = _siblings(out, "old")
    if "old" in kinds and not out.exists() and len(olds) == 1 and (olds[0] / "_SUCCESS").exists():
        olds[0].rename(out)  # a crash between the two renames of a replace: put the old output back
    for kind in kinds:
        for folder in _siblings(out, kind):
            if folder.name.endswith(f"-{held_by}"):
                continue   # this run's own (its work folder, made before its staging)
            # Only staging folders: work folders beside a name others use as their base (the temp folder's
            # "segmint", or a --work-dir's) are other runs', of other outputs, whatever this lease says.
            if _abandoned(folder, out) or (held_by is not None and kind == "staging" and _not_kept(folder)):
                shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)
                removed.append(folder)
    return removed


def _siblings(out: Path, kind: str) -> list[Path]:
    """The ``kind`` folders of ``out`` (``sibling_path``), by name, not by a glob: an output 'runs[1]' made the
    pattern '.runs[1].old-*', which matched another output's '.runs1.old-*' and none of its own."""
    prefix = f".{out.name}.{kind}-"
    # A run id holds no dot: '.a.old-x.staging-<id>' is the staging folder of an output 'a.old-x', not a's.
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix) and "." not in p.name[len(prefix):])


def write_json(path: str | Path, doc: Any, options: store.Options | None = None) -> None:
    """Strict JSON (no NaN or Infinity: a non-finite number is a bug, and fails here)."""
    store.write_bytes(str(path), json.dumps(doc, indent=1, allow_nan=False, default=str).encode(), options)


def manifest(folder: Path) -> list[dict[str, Any]]:
    """Every file under ``folder`` (relative path and size), sorted; not the control files a resumed attempt
    finds there from the one before (its manifest listed them, with the old manifest's size)."""
    return [{"path": str(p.relative_to(folder)), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != OWNER and str(p.relative_to(folder)) not in ("_manifest.json", "_SUCCESS")]


def _normal(path: str | Path) -> str:
    """A comparable form: URIs canonical, local paths absolute and resolved."""
    if store.is_remote(path):
        return store.canonical(path)
    return str(store.local(path).resolve())


def _replaceable(out: Path) -> bool:
    """An output segmint may replace: a committed segmint output, or an empty folder."""
    if not out.is_dir():
        return False
    return ((out / "_SUCCESS").is_file() and (out / "_manifest.json").is_file()) or not any(out.iterdir())


def _check_only_committed(out: Path) -> None:
    """Refuse to replace a committed local output that holds files its manifest does not list (a report, notes
    saved into it since): replacing the folder deleted them with exit 0."""
    if not (out / "_manifest.json").is_file():
        return   # an empty folder
    try:
        listed = {f["path"] for f in json.loads((out / "_manifest.json").read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        msg = (f"output {out} has a _manifest.json segmint cannot read, so what it wrote there is not known: "
               f"move the folder away or choose another --out")
        raise OutputExistsError(msg) from None
    foreign = [p for p in sorted(out.rglob("*")) if p.is_file()
               and str(p.relative_to(out)) not in listed and p.name not in ("_manifest.json", OWNER, *_CONTROL)]
    if foreign:
        raise _not_written_by_segmint(out, [p.relative_to(out) for p in foreign])


def _not_written_by_segmint(out: str | Path, foreign: list[Any]) -> OutputExistsError:
    msg = (f"output {out} holds {len(foreign)} file(s) segmint did not write (e.g. {foreign[0]}): --overwrite "
           f"replaces only what segmint wrote; move them out of it or choose another --out")
    return OutputExistsError(msg)


def _check_remote(out: str, pointer: Pointer | None, overwrite: bool, options: store.Options) -> None:
    if pointer is not None and not overwrite:
        msg = (f"output {out} already exists; pass --overwrite (overwrite=True in Python) to replace it "
               f"or choose another --out")
        raise OutputExistsError(msg)
    committed = _committed_files(out, pointer, options)
    # A dead run's leftovers are in another run's folder than the committed one: what its manifest does not
    # list in the committed folder was saved there.
    live = f"{pointer.root}/" if pointer is not None and not pointer.legacy else None
    foreign = [f for f in store.list_files(out, options) if f not in committed
               and not (f[len(out) + 1:] in _CONTROL or (_LEFTOVER.fullmatch(f[len(out) + 1:])
                                                          and not (live and f.startswith(live))))]
    if foreign and pointer is not None:
        # Files saved beside a committed run: the commit's clean-up took them for a dead run's and deleted them.
        raise _not_written_by_segmint(out, foreign)
    if foreign:
        msg = (f"output {out} holds {len(foreign)} file(s) that are not a segmint output (e.g. {foreign[0]}): "
               f"--overwrite replaces only what segmint wrote; choose an empty prefix for --out")
        raise OutputExistsError(msg)


def _committed_files(out: str, pointer: Pointer | None, options: store.Options) -> set[str]:
    """Every file the committed run of ``out`` consists of (its manifest among them)."""
    if pointer is None:
        return set()
    # Its manifest's files, not everything under its folder: a file saved into the run's folder was taken
    # for part of it, and --overwrite deleted it with the run (exit 0).
    root = out if pointer.legacy else pointer.root
    try:
        doc = json.loads(store.read_bytes(store.join(root, "_manifest.json"), options))
        return {store.join(root, f["path"]) for f in doc["files"]} | {store.join(root, "_manifest.json")}
    except (OSError, ValueError, KeyError, TypeError):   # as a local output's lost manifest is: nothing to go by
        msg = (f"output {out}'s committed run has no readable _manifest.json, so what segmint wrote there is not "
               f"known: remove the output by hand, or choose another --out")
        raise OutputExistsError(msg) from None


def _remove_uncommitted(out: str, pointer: Pointer | None, *, keep_root: str, options: store.Options) -> None:
    """Under the lease, everything in ``out`` but the committed run, the control files and this
    run's own folder (kept by a failed --resume attempt) is what dead runs left: remove it."""
    keep = _committed_files(out, pointer, options)
    dead = [f for f in store.list_files(out, options)
            if f not in keep and f[len(out) + 1:] not in _CONTROL and not f.startswith(keep_root + "/")]
    store.remove(dead, options)


def _drop_unreported(root: str, reported: set[str], options: store.Options) -> dict[str, int]:
    """Remove part files under ``root`` that no job reported; return what is left (relative path -> size).
    A reported file that is missing means the folder was changed by someone else: nothing is committed."""
    listed = {f[len(root) + 1:]: size for f, size in store.sizes(root, options).items()}
    strays = [rel for rel in listed if is_part(rel) and rel not in reported]
    store.remove([store.join(root, rel) for rel in strays], options)
    if not store.is_remote(root):   # folders exist locally: leave none empty (a stray's segment=N)
        for folder in sorted({Path(root, rel).parent for rel in strays}, reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
    missing = sorted(reported - set(listed))
    if missing:
        msg = (f"{len(missing)} file(s) this run wrote are gone from {root} (e.g. {missing[0]}); another process "
               f"changed the output while it ran; nothing was committed: rerun")
        raise OutputExistsError(msg)
    return {rel: size for rel, size in listed.items() if rel not in strays}


def _commit_remote(out: str, staging: Staging, run_id: str, pointer: Pointer | None, lease: Lease,
                   options: store.Options) -> None:
    root = staging.layout.root
    lease.check()
    files = _drop_unreported(root, staging.reported, options)
    files.pop("_manifest.json", None)
    doc = {"run_id": run_id, "files": [{"path": rel, "bytes": size} for rel, size in sorted(files.items())]}
    write_json(store.join(root, "_manifest.json"), doc, options)
    lease.check()
    success = json.dumps({"run_id": run_id, "root": store.name(root)}).encode()
    path = store.join(out, "_SUCCESS")
    moved = store.put_if(path, success, pointer.version, options) if pointer is not None \
        else store.put_new(path, success, options)
    if moved is None and not is_committed(out, run_id, options):
        # Not this run's own write whose reply was lost (the store's retry then found its pointer in place).
        msg = (f"output {out} was committed by another run while this one ran; this run's output was not "
               f"committed: rerun it (with --overwrite to replace that run)")
        raise OutputExistsError(msg)


def mark_committed(exc: BaseException) -> None:
    """An exception raised after the output was committed (a signal at the commit): the CLI says so rather
    than "no output was changed", and a --resume run does not offer to go on."""
    exc.output_committed = True  # type: ignore[attr-defined]


def _remove_version(out: str, previous: Pointer, options: store.Options) -> None:
    """After the pointer moved: the replaced run's files. Should this fail, the next run removes them."""
    with contextlib.suppress(OSError, OutputExistsError):
        store.remove(sorted(_committed_files(out, previous, options)), options)


def private_folder(parent: Path, prefix: str) -> Path:
    """A new folder of this process under ``parent``, readable by this user only, with its owner file; those
    of ``prefix`` that processes now gone left (killed: the Python API's copy of a frame given to it, a full
    copy of the customers' transactions, stayed in the temp folder for good) are removed first."""
    for left in sorted(parent.glob(f"{glob.escape(prefix)}*")):
        if left.is_dir() and (left / OWNER).is_file() and _abandoned(left, left):
            shutil.rmtree(left, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))   # 0700
    write_json(folder / OWNER, owner_doc(False))
    return folder


def _claim(folder: Path, keep: bool, *, private: bool = False) -> Path:
    """Create a run's folder with its owner file. ``private`` (scratch space, holding customer data
    nobody asked to be written) is readable by this user only, whatever the umask; a staging
    folder becomes the output and keeps the permissions the user's umask gives."""
    folder.mkdir(parents=True, exist_ok=keep)
    if private:
        folder.chmod(0o700)
    # A resumable run's folders outlive its process: remove_stale leaves them to --resume.
    write_json(folder / OWNER, owner_doc(keep))
    return folder


def _abandoned(folder: Path, out: Path) -> bool:
    """Ours (an owner file, or an old-* leftover of an interrupted replace) and its process is gone."""
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        # "old" folders are a previous output renamed aside: left by a crash after the new output was in
        # place, or while it was being deleted (its _SUCCESS among the first files gone). The one output a
        # crash between the two renames left aside was put back before this. Staging and work folders without
        # an owner are not ours, but for an empty one of a minute or more: a run killed between its mkdir and
        # its owner file left it.
        return ".old-" in folder.name or _empty_for_a_minute(folder)
    if not pids_here(owner.get("host"), owner.get("pid_namespace")) or owner.get("resume"):
        return False
    try:
        return process_gone(int(owner["pid"]))
    except (ValueError, KeyError, TypeError):
        return False


def owner_doc(resume: bool) -> dict[str, Any]:
    """An owner file's content: whose process the folder is (runtime.pids_here), and whether a --resume run
    keeps it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": pid_namespace(), "resume": resume}


def _not_kept(folder: Path) -> bool:
    """A run's folder (an owner file) not kept for a --resume run's next attempt."""
    try:
        return not json.loads((folder / OWNER).read_text()).get("resume")
    except (OSError, ValueError, AttributeError):
        return False


def _empty_for_a_minute(folder: Path) -> bool:
    try:
        return folder.is_dir() and not any(folder.iterdir()) and folder.stat().st_mtime < time.time() - 60
    except OSError:
        return False


def _replace(stage: Path, out: Path, *, overwrite: bool) -> None:
    """``stage`` in place of ``out``. Over an output, one exchange of the two folders where the system can (Linux's
    renameat2): a reader finds the old output or the new one, never none. Two renames otherwise, between which a
    kill left no output until the next write put the old one back."""
    # Re-checked here: another process may have created ``out`` meanwhile.
    check_writable(out, overwrite=overwrite)
    if not out.exists():
        stage.rename(out)
        return
    # The old output leaves under a name of ours and with an owner file of its own (not a resumable one): killed
    # before it is deleted, the next write removes it, where a folder without one is not taken for segmint's.
    try:   # a signal once the owner file is written leaves it in the old output otherwise
        write_json(out / OWNER, owner_doc(False))
        exchanged = _exchange(stage, out)
    finally:   # not exchanged, it is the live output's; exchanged, the new output's (whose owner goes anyway)
        (out / OWNER).unlink(missing_ok=True)
    if exchanged:
        shutil.rmtree(stage, ignore_errors=True)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    out.rename(old)
    try:
        stage.rename(out)
    except BaseException:
        if stage.exists():
            old.rename(out)
        else:   # renamed, then a signal (putting the old back failed, "Directory not empty"): committed
            shutil.rmtree(old, ignore_errors=True)
        raise
    # Committed: another run's clean-up may be removing the old output too (generate and abtest hold no lease).
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 with RENAME_EXCHANGE); False where the system or the file system
    has no such call (the caller then renames twice)."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):   # EPERM: a sandbox's filter
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    call = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)   # glibc 2.28+, musl 1.2.4+
    if call is not None:
        call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return call


def _is_folder(path: Path, inode: int) -> bool:
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False
