"""Stage timing and progress events. The engine never prints: it reports to a ``Progress``.

Library code also logs each finished stage on ``logging.getLogger("segmint")`` (silent
unless the caller configures logging); the CLI passes a Progress that renders a
spinner or JSON lines.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from segmint.engine.runtime import current_rss, peak_rss, release_free_memory

__all__ = ["Progress", "StageClock", "peak_rss_mb", "log"]

log = logging.getLogger("segmint")


class Progress(Protocol):
    """Receives stage events; ``info`` holds counts worth showing (rows, k, ...)."""

    def start(self, stage: str) -> None: ...

    def advance(self, stage: str, done: int, total: int) -> None: ...

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None: ...


class _Silent:
    def start(self, stage: str) -> None:
        pass

    def advance(self, stage: str, done: int, total: int) -> None:
        pass

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None:
        pass


class StageClock:
    """Times stages and records, for run.json, each stage's peak RSS (``peak_rss_mb``, sampled every
    few milliseconds while it runs) and what it added to what the process held when it started
    (``added_mb``: what the plan budgets for)."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or _Silent()
        self.stages: dict[str, dict[str, Any]] = {}
        self._current = ""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {}
        release_free_memory()  # a stage starts on what is live, not on what the last one freed
        self.progress.start(name)
        self._current = name
        t0 = time.perf_counter()
        with _Sampler() as rss:
            yield info
        seconds = time.perf_counter() - t0
        self.stages[name] = {"seconds": round(seconds, 4), "peak_rss_mb": round(rss.peak / 2**20, 1),
                             "added_mb": round(max(rss.peak - rss.start, 0) / 2**20, 1), **_plain(info)}
        log.info("%s: %.2f s %s", name, seconds, info)
        self.progress.done(name, seconds, info)

    def tick(self, done: int, total: int) -> None:
        """Progress within the current stage (bucket ``done`` of ``total``)."""
        advance = getattr(self.progress, "advance", None)
        if advance is not None:
            advance(self._current, done, total)


class _Sampler:
    """The highest resident size of this process while the block runs, read every 5 ms on a thread."""

    _EVERY = 0.005

    def __enter__(self) -> _Sampler:
        self.start = self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="segmint-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())

    def _watch(self) -> None:
        while not self._stop.wait(self._EVERY):
            self.peak = max(self.peak, current_rss())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return round(peak_rss() / 2**20, 1)


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) or v is None}
