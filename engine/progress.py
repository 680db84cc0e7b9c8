"""Stage timing and progress events. The engine never prints; the CLI renders events."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Progress", "StageClock", "peak_rss_mb"]


class Progress(Protocol):
    """Receives stage events; ``info`` holds counts worth showing (rows, k, ...)."""

    def start(self, stage: str) -> None: ...

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None: ...


class _Silent:
    def start(self, stage: str) -> None:
        pass

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None:
        pass


class StageClock:
    """Times stages and records peak RSS after each, for run.json."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or _Silent()
        self.stages: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        self.progress.start(name)
        t0 = time.perf_counter()
        yield info
        seconds = time.perf_counter() - t0
        self.stages[name] = {"seconds": round(seconds, 4), "peak_rss_mb": peak_rss_mb()}
        self.progress.done(name, seconds, info)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
