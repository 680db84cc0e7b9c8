"""Timing one benchmark stage: seconds and the process's peak RSS after it, printed as it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["StageTimer", "peak_rss_mb", "median_index"]

T = TypeVar("T")


class StageTimer:
    """Call with (name, fn): runs fn, records ``stages[name]`` = seconds and peak RSS, returns fn's result. A name
    timed again keeps every run's seconds (``runs_seconds``, in the order they ran) and records the median (the
    lower of the two middle ones)."""

    def __init__(self, stages: dict[str, Any], progress: Callable[[str], None]) -> None:
        self.stages = stages
        self.progress = progress

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        out = fn()
        seconds = round(time.perf_counter() - t0, 4)
        before = self.stages.get(name)
        runs = [*(before.get("runs_seconds", [before["seconds"]]) if before else []), seconds]
        self.stages[name] = {"seconds": runs[median_index(runs)], "peak_rss_mb": peak_rss_mb(),
                             **({"runs_seconds": runs} if len(runs) > 1 else {})}
        self.progress(f"{name:<36} {seconds:9.3f} s")
        return out


def median_index(seconds: list[float]) -> int:
    """The position of the median of ``seconds`` (the lower of the two middle ones; ties in the order given)."""
    return sorted(range(len(seconds)), key=seconds.__getitem__)[(len(seconds) - 1) // 2]


def peak_rss_mb() -> float:
    from segmint.engine.progress import peak_rss_mb as engine_peak

    return engine_peak()
