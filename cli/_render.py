"""Rendering: stage progress (rich or JSON lines on stderr) and result tables on stdout."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # polars is imported only once the thread budget is set (engine.runtime)
    import polars as pl

__all__ = ["RichProgress", "JsonProgress", "make_progress", "print_summary", "print_lines", "print_progress", "print_error",
           "emit_json"]

_err = Console(stderr=True, highlight=False)
_out = Console(highlight=False)


class RichProgress:
    """A spinner while a stage runs, then one line with its time and counts."""

    def __init__(self) -> None:
        self._status = None

    def start(self, stage: str) -> None:
        self._status = _err.status(f"{stage} ...")
        self._status.start()

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None:
        if self._status is not None:
            self._status.stop()
        details = "  ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        _err.print(f"[green]✓[/] {stage:<11} {seconds:7.2f} s  {details}")


class JsonProgress:
    """One JSON object per event on stderr, for batch jobs and log collectors."""

    def start(self, stage: str) -> None:
        emit_json({"event": "stage_start", "stage": stage})

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None:
        emit_json({"event": "stage_done", "stage": stage, "seconds": round(seconds, 4), **info})


def make_progress(json_logs: bool) -> RichProgress | JsonProgress:
    return JsonProgress() if json_logs else RichProgress()


def emit_json(obj: dict[str, Any]) -> None:
    print(json.dumps({"ts": time.time(), **obj}, default=str), file=sys.stderr, flush=True)


def print_summary(summary: pl.DataFrame, title: str) -> None:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col, justify in (("seg", "right"), ("name", "left"), ("customers", "right"),
                         ("share", "right"), ("revenue", "right"), ("recency", "right"),
                         ("orders", "right"), ("aov", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "name", min_width=18 if col == "name" else None)
    for r in summary.iter_rows(named=True):
        table.add_row(str(r["segment"]), r["name"], f"{r['customers']:,}", f"{r['share']:.1%}",
                      f"{r['revenue_share']:.1%}", f"{r['recency_days_mean']:.0f}",
                      f"{r['frequency_mean']:.1f}", f"{r['aov_mean']:.2f}")
    _out.print(table)


def print_lines(lines: list[str]) -> None:
    for line in lines:
        _out.print(line)


def print_progress(message: str) -> None:
    """A progress line on stderr (not an error)."""
    _err.print(message, highlight=False)


def print_error(message: str) -> None:
    _err.print(f"[red]error:[/] {message}", soft_wrap=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
