"""One writer per output: a lease, held in a lock file that only one run can create.

A run claims its output before it reads, writes or deletes anything there. The lock is
``OUT/_lock.json`` on object stores and ``.OUT.lock.json`` beside a local output (which is
renamed as a whole on commit). It is created with a conditional write that fails when the
file exists (``store.put_new``: S3 and Azure ``If-None-Match: *``, GCS ``ifGenerationMatch=0``,
a hard link locally), so of two runs starting together one gets it. The holder renews it every
quarter of its length by replacing it only if it is still the version it wrote
(``store.put_if``: ``If-Match`` on the entity tag, GCS's generation), and before committing checks it
still holds it.

A second run that finds a live lease stops with exit 4 naming the holder. A lease is dead when
its holder's process is gone (same host) or when it has not been renewed for its length
(``lease_seconds``, default 120: the store's clock against this machine's, so clocks must agree
to within most of a lease). A run takes a dead lease over with the same conditional replace:
of two runs that find one dead lease, one wins and the other sees a live lease. It then removes
what the dead run left (its uncommitted version folder and its scratch space).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmint.engine.errors import OutputExistsError
from segmint.engine.io import store
from segmint.engine.runtime import pid_namespace, pids_here, process_gone

__all__ = ["Holder", "Lease", "claim", "held_by", "lock_path", "LEASE_SECONDS"]

LEASE_SECONDS = 120
_ATTEMPTS = 5   # lost races on a dead lease before giving up


@dataclass(frozen=True)
class Holder:
    """Who holds an output's lease (the lock file's content, with the lease's length)."""

    run_id: str
    command: str
    host: str
    pid: int
    started_at: str                 # ISO, UTC
    work: str | None = None         # its scratch location: removed by a run that takes over a dead lease
    lease_seconds: float = LEASE_SECONDS
    pid_namespace: str | None = None   # with host, whose pid this is (runtime.pids_here; None: an older lock's)

    @staticmethod
    def this_process(run_id: str, command: str, lease_seconds: float, work: str | None = None) -> Holder:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return Holder(run_id, command, socket.gethostname(), os.getpid(), now.isoformat(), work, lease_seconds,
                      pid_namespace())

    def describe(self) -> str:
        return f"run {self.run_id} (segmint {self.command}, host {self.host}, pid {self.pid}, since {self.started_at})"


class Lease:
    """A held lease: renewed by a thread until released. ``taken_over`` is the dead holder whose
    lease this one replaced (None when the lock was free)."""

    def __init__(self, path: str, holder: Holder, version: store.Version, options: store.Options,
                 taken_over: Holder | None) -> None:
        self.path = path
        self.holder = holder
        self.taken_over = taken_over
        self._version = version
        self._options = dict(options)
        self._lost = False
        self._renewed = time.monotonic()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="segmint-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise unless this run still holds its lease (before commit: never commit another's output)."""
        with self._guard:
            stale = time.monotonic() - self._renewed > self.holder.lease_seconds
            current = store.head(self.path, self._options)
            if self._lost or stale or current is None or current.etag != self._version.etag:
                self._lost = True
                msg = (f"this run lost its claim on the output ({self.path} was taken over or removed while it ran, "
                       f"after its lease of {self.holder.lease_seconds:g} s went unrenewed); nothing was committed: "
                       f"rerun it")
                raise OutputExistsError(msg)

    def update(self, **changes: Any) -> None:
        """Rewrite the holder (a resumed run takes its first attempt's id; the scratch location)."""
        with self._guard:
            self.holder = dataclasses.replace(self.holder, **changes)
            self._write()

    def release(self) -> None:
        """Stop renewing and remove the lock, if it is still ours."""
        self._stop.set()
        self._thread.join()
        with self._guard:
            if self._lost:
                return
            current = store.head(self.path, self._options)
            if current is not None and current.etag == self._version.etag:
                store.remove([self.path], self._options)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.holder.lease_seconds / 4):
            with self._guard:
                if self._lost:
                    return
                try:
                    self._write()
                except Exception:  # noqa: BLE001 - a store hiccup: try again next time; check() judges
                    continue

    def _write(self) -> None:
        version = store.put_if(self.path, _encode(self.holder), self._version, self._options)
        if version is None:
            # This write landed though its reply was lost (the store's retry then refused): still ours.
            current = store.head(self.path, self._options)
            if current is None or _read(self.path, self._options) != self.holder:
                self._lost = True
                return
            version = current
        self._version, self._renewed = version, time.monotonic()


@contextlib.contextmanager
def claim(out: str | Path, holder: Holder, options: store.Options) -> Iterator[Lease]:
    """Hold the lease of ``out`` for the duration; exit 4 naming the holder of a live one."""
    lease = _acquire(lock_path(out), holder, options, str(out))
    try:
        yield lease
    finally:
        lease.release()


def held_by(out: str | Path, run_id: str, options: store.Options) -> bool:
    """Whether a live lease of ``out`` may be run ``run_id``'s (a lock that cannot be read may be anyone's)."""
    path = lock_path(out)
    current = store.head(path, options)
    if current is None:
        return False
    holder = _read(path, options)
    return not _dead(holder, current) and (holder is None or holder.run_id == run_id)


def lock_path(out: str | Path) -> str:
    if store.is_remote(out):
        return store.join(out, "_lock.json")
    target = store.local(out)
    return str(target.parent / f".{target.name}.lock.json")


def _acquire(path: str, holder: Holder, options: store.Options, out: str) -> Lease:
    for _ in range(_ATTEMPTS):
        version = store.put_new(path, _encode(holder), options)
        if version is not None:
            return Lease(path, holder, version, options, None)
        current = store.head(path, options)
        if current is None:
            continue    # released meanwhile: try to create it again
        other = _read(path, options)
        if other == holder:
            # This run's own write, whose reply was lost: the store's retry found it there (the run stopped,
            # "being written by" itself, and left its lock behind).
            return Lease(path, holder, current, options, None)
        if not _dead(other, current):
            age = (dt.datetime.now(dt.timezone.utc) - current.modified).total_seconds()
            who = other.describe() if other is not None else f"another run (its lock {path} is unreadable)"
            seconds = other.lease_seconds if other is not None else LEASE_SECONDS
            msg = (f"output {out} is being written by {who}, lease renewed {max(age, 0):.0f} s ago; wait for it "
                   f"to finish (if that run is dead, its lease expires in {max(seconds - age, 0):.0f} s)")
            raise OutputExistsError(msg)
        version = store.put_if(path, _encode(holder), current, options)
        if version is not None:
            return Lease(path, holder, version, options, other)
    msg = f"output {out}: could not claim its lock {path} after {_ATTEMPTS} attempts (other runs starting?); retry"
    raise OutputExistsError(msg)


def _dead(holder: Holder | None, version: store.Version) -> bool:
    """Not renewed for its lease, or its process gone; a lock that cannot be read (another
    version's) is judged by its age alone, against the default lease."""
    age = (dt.datetime.now(dt.timezone.utc) - version.modified).total_seconds()
    if age > (holder.lease_seconds if holder is not None else LEASE_SECONDS):
        return True
    if holder is None or not pids_here(holder.host, holder.pid_namespace):
        return False
    return process_gone(holder.pid)


def _encode(holder: Holder) -> bytes:
    return json.dumps(dataclasses.asdict(holder), allow_nan=False).encode()


def _read(path: str, options: store.Options) -> Holder | None:
    """The holder recorded in the lock; None when unreadable (a damaged lock counts as dead)."""
    try:
        doc = json.loads(store.read_bytes(path, options))
        return Holder(**doc)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None
