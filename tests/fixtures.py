"""Data and helpers shared by several test modules, so that no test imports another test module or bench code for them.

- ``DATA``: the checked-in reference files (tests/data/README.md).
- ``THREAD_VARIABLES``: the environment variables the thread budget sets.
- ``planted``: skewed planted clusters for the clustering tests.
- ``faiss_lloyd``: Faiss' CPU k-means from given initial centroids, the reference for our Lloyd iterations.
- ``restored_process_settings``: undo what the CLI's ``segmint.engine.runtime.configure`` changes.
- ``segmint_child``: the CLI in a child process, with Ctrl-C delivered as in a terminal.
- ``wait_for``: poll until a glob matches, so that a signal lands while a child is at work.
- ``run_watching_peak_rss``: run a command; its peak RSS from /proc, its exit code and stderr.
- ``customer_blocks`` and ``write_blocks``: transactions as files that each hold customers of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def clean(frame, cfg, *, as_of, now) -> SimpleNamespace:
    """Clean ``frame`` (the mapped source columns) as a bucket's map does: counts, rejects, as-of, and the
    clean lines (customer_id, ts, amount) grouped by customer id, in each customer's line order."""
    import datetime as dt

    import polars as pl

    from segmint.engine.features.table import features_of

    mapped = features_of(frame, cfg, as_of=as_of, now=now, channels=None, mode="cohorts")
    g = mapped.grouped
    owner = np.repeat(np.arange(g.ids.len()), np.diff(g.offsets))
    lines = pl.DataFrame({"customer_id": g.ids.gather(owner),
                          "ts": [dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(t)) for t in g.ts],
                          "amount": g.amount})
    return SimpleNamespace(lines=lines, rejects=mapped.rejects, rejected=mapped.rejected,
                           rejected_amount=mapped.rejected_amount, rows_in=mapped.rows_in, rows_used=mapped.rows_used,
                           repeats=mapped.repeats, as_of=mapped.as_of)

# What segmint.engine.runtime.configure sets, besides NUMBA_CACHE_DIR.
THREAD_VARIABLES = ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")


def planted(seed: int, n: int = 20_000, k: int = 8, d: int = 6, scale: float = 4.0) -> np.ndarray:
    """Skewed planted clusters: sizes differ up to 30x, spreads 4x, like customer segments."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, scale, (k, d))
    sizes = rng.dirichlet(np.full(k, 0.7))
    labels = rng.choice(k, n, p=sizes)
    spread = rng.uniform(0.5, 2.0, k)[labels, None]
    return (centers[labels] + rng.normal(0, 1, (n, d)) * spread).astype(np.float32)


def faiss_lloyd(x: np.ndarray, init: np.ndarray, niter: int, seed: int) -> tuple[np.ndarray, float]:
    """Faiss' CPU k-means on every row of ``x`` from ``init``: (centroids, final inertia)."""
    import faiss

    km = faiss.Kmeans(x.shape[1], init.shape[0], niter=niter, seed=seed, max_points_per_centroid=x.shape[0],
                      min_points_per_centroid=1)
    inertia = float(km.train(x, init_centroids=init))
    return km.centroids, inertia


@contextlib.contextmanager
def restored_process_settings() -> Iterator[None]:
    """Put back what a CLI invocation changes for the whole process: os.environ (the thread
    variables and NUMBA_CACHE_DIR), Numba's and Faiss' thread counts, and the SIGTERM handler."""
    import faiss
    import numba

    env = dict(os.environ)
    numba_threads, faiss_threads = numba.get_num_threads(), faiss.omp_get_max_threads()
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        restore_environ(env)
        numba.set_num_threads(numba_threads)
        faiss.omp_set_num_threads(faiss_threads)
        signal.signal(signal.SIGTERM, sigterm)


def restore_environ(env: dict[str, str]) -> None:
    """Make os.environ ``env`` again by changing only what differs. Not ``clear()`` then ``update()``: that
    unsets every variable and adds each back, and glibc frees the old ``environ`` array as it grows the new
    one, so a native thread reading the environment meanwhile (Polars reads POLARS_* on every collect)
    reads freed memory: the likely cause of a CI worker's segfault in this teardown (reproduced here with
    Polars and with C's getenv). Replacing a value or removing a name frees nothing; adding back a name a
    test removed still may."""
    for var in os.environ.keys() - env.keys():
        del os.environ[var]
    for var, value in env.items():
        if os.environ.get(var) != value:
            os.environ[var] = value


# Runs the CLI with SIGINT raising KeyboardInterrupt, as in a terminal: a shell that starts a command
# in the background (a CI step, `pytest &`) makes its children ignore SIGINT, and Python keeps that.
# With a marker path, the run pauses when it saves its model (its staging and work folders exist then):
# it creates the marker and sleeps, so a signal sent once the marker exists lands mid-run, never after
# a run that a warm kernel cache finished in a second. (Importing the model module first loads Polars
# before the CLI sets the thread budget; these tests do not depend on threads.)
_CHILD = """
import signal, sys, time
from pathlib import Path
from types import SimpleNamespace

signal.signal(signal.SIGINT, signal.default_int_handler)
marker = sys.argv[1]
if marker:
    from segmint.engine.model import Model

    def pause(*args, **kwargs):
        Path(marker).touch()
        time.sleep(120)

    Model.save = pause
from segmint.cli.app import main
sys.argv = ["segmint", *sys.argv[2:]]
main()
"""


def segmint_child(*args: object, paused: Path | None = None, **popen) -> subprocess.Popen:
    """``segmint ARGS`` in a child process (``popen``: Popen's keywords, e.g. stderr); ``paused``:
    the marker file the run creates when it pauses mid-run (above)."""
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(paused or ""), *map(str, args)], text=True, **popen)


def wait_for(folder: Path, pattern: str, timeout: float = 60) -> bool:
    """Poll every 50 ms until ``folder.glob(pattern)`` matches; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(folder.glob(pattern)):
            return True
        time.sleep(0.05)
    return False


def run_watching_peak_rss(cmd: list[str]) -> tuple[int, int, str]:
    """Run ``cmd``: (peak RSS in bytes, exit code, stderr). The peak is the child's VmHWM in
    /proc/<pid>/status, polled every 20 ms: a high-water mark, so polling misses no spike, only
    growth after the last poll. (VmHWM starts afresh at exec; a forked child's ru_maxrss would
    count this process's pages.)"""
    import tempfile

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, next(int(line.split()[1]) * 1024 for line in status.splitlines()
                                      if line.startswith("VmHWM:")))
            except (OSError, StopIteration):  # exiting: the last reading stands
                pass
            time.sleep(0.02)
        err.seek(0)
        return peak, proc.returncode, err.read()


def customer_blocks(tx, n: int):
    """``tx`` (a Polars frame) with a ``block`` column: its customers in ``n`` runs of consecutive ids."""
    import polars as pl

    rank = pl.col("customer_id").rank("dense") * n // (tx["customer_id"].n_unique() + 1)
    return tx.with_columns(rank.alias("block"))


def write_blocks(frame, folder: Path) -> dict:
    """One Parquet file of each ``block`` of ``frame`` (``customer_blocks``), ``folder/part-B.parquet``, without
    that column; returns the parts by ``(block,)``."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = {key: part.drop("block") for key, part in frame.partition_by("block", as_dict=True,
                                                                            maintain_order=True).items()}
    for (b,), part in parts.items():
        part.write_parquet(folder / f"part-{b}.parquet")
    return parts
