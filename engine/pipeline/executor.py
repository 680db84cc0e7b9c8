"""Where per-chunk and per-bucket work runs. Only this module knows.

A stage hands the executor a function and a list of small, picklable jobs; the
function is pure in the sense that matters here: it reads its inputs from files,
writes its outputs under names fixed by the job (a retry overwrites the same
files) and returns a small record. ``LocalExecutor`` runs the jobs one after
another in this process (each already uses every thread); the Ray executor runs
them as tasks on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["Executor", "LocalExecutor", "EXECUTORS", "resolve_executor"]

J = TypeVar("J")
R = TypeVar("R")


class Executor(Protocol):
    name: str

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, tick: Callable[[int, int], None]) -> list[R]:
        """``[fn(job) for job in jobs]``, in job order; ``tick(done, total)`` after each."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """In this process, one job at a time: the kernels inside each job use every thread."""

    name = "local"

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], *, tick: Callable[[int, int], None]) -> list[R]:
        from segmint.engine.runtime import release_free_memory

        out = []
        for i, job in enumerate(jobs, start=1):
            out.append(fn(job))
            release_free_memory()  # what the job freed is not resident under the next one
            tick(i, len(jobs))
        return out

    def close(self) -> None:
        pass


EXECUTORS: dict[str, Callable[..., Any]] = {"local": LocalExecutor}


def resolve_executor(name: str | Executor, **options: Any) -> Executor:
    """An executor by name (``local``, ``ray``) or an instance, passed through."""
    if not isinstance(name, str):
        return name
    if name == "ray" and "ray" not in EXECUTORS:
        from segmint.engine.pipeline import ray_executor  # registers itself; needs the ray extra

        EXECUTORS["ray"] = ray_executor.RayExecutor
    if name not in EXECUTORS:
        from segmint.engine.errors import ConfigError

        msg = f"--executor must be one of {', '.join(sorted({*EXECUTORS, 'ray'}))}, got {name!r}"
        raise ConfigError(msg)
    return EXECUTORS[name](**options)
