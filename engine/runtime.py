"""One thread budget for Polars, Numba and Faiss (OpenMP), and Numba's cache directory.

Call ``configure`` before Polars, Numba or Faiss are imported (the CLI does
it first thing): Polars reads POLARS_MAX_THREADS and Numba NUMBA_NUM_THREADS
when they load, and OpenMP sizes its pool on first use. Where a library is
already loaded, what can still be set is set (Numba up to its launch size,
Faiss always) and ``configure`` says what could not.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

__all__ = ["available_cpus", "configure", "numba_cache_dir"]


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2/v1 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(n, quota)) if quota else max(1, n)


def numba_cache_dir() -> Path:
    """NUMBA_CACHE_DIR if set, else ~/.cache/segmint/numba (created)."""
    path = Path(os.environ.get("NUMBA_CACHE_DIR") or Path.home() / ".cache" / "segmint" / "numba")
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure(threads: int | None = None) -> tuple[int, list[str]]:
    """Apply the thread budget (default: available_cpus()); returns it and what could not be applied."""
    n = available_cpus() if threads is None else threads
    if n < 1:
        from segmint.engine.errors import ConfigError

        msg = f"--threads must be >= 1, got {n}"
        raise ConfigError(msg)
    late = []
    os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
    for var in ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(n)
    if "polars" in sys.modules:
        import polars as pl

        if pl.thread_pool_size() != n:
            late.append(f"polars already started with {pl.thread_pool_size()} threads")
    if "numba" in sys.modules:
        import numba

        if n > numba.config.NUMBA_NUM_THREADS:
            late.append(f"numba already started with {numba.config.NUMBA_NUM_THREADS} threads")
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "faiss" in sys.modules:
        import faiss

        faiss.omp_set_num_threads(n)
    return n, late


def _cgroup_quota() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0:
            return math.ceil(quota / period)
    except (OSError, ValueError):
        pass
    return None
