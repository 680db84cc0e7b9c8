"""Rendering: stage progress (rich or JSON lines on stderr) and result tables on stdout."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # polars is imported only once the thread budget is set (engine.runtime)
    import polars as pl

__all__ = ["RichProgress", "JsonProgress", "make_progress", "stop_progress", "print_summary", "print_lines",
           "print_progress", "print_error", "emit_json"]

# Output piped to a file or another program is not wrapped at 80 columns.
_WIDTH = None if sys.stdout.isatty() else 200
_err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)
_out = Console(highlight=False, width=_WIDTH)
_active: list[RichProgress] = []


class RichProgress:
    """A spinner while a stage runs (with bucket counts), then one line with its time and counts."""

    def __init__(self) -> None:
        self._status = None
        _active[:] = [self]

    def start(self, stage: str) -> None:
        self.stop()
        self._status = _err.status(f"{stage} ...")
        self._status.start()

    def advance(self, stage: str, done: int, total: int) -> None:
        if self._status is not None and total > 1:
            self._status.update(f"{stage} {done}/{total} ...")

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None:
        self.stop()
        details = "  ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        _err.print(f"[green]✓[/] {stage:<11} {seconds:7.2f} s  {details}")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


class JsonProgress:
    """One JSON object per event on stderr, for batch jobs and log collectors."""

    def start(self, stage: str) -> None:
        emit_json({"event": "stage_start", "stage": stage})

    def advance(self, stage: str, done: int, total: int) -> None:
        emit_json({"event": "stage_progress", "stage": stage, "done": done, "total": total})

    def done(self, stage: str, seconds: float, info: dict[str, Any]) -> None:
        emit_json({"event": "stage_done", "stage": stage, "seconds": round(seconds, 4), **info})


def make_progress(json_logs: bool) -> RichProgress | JsonProgress:
    return JsonProgress() if json_logs else RichProgress()


def stop_progress() -> None:
    """Remove a running spinner (before an error line, so none is left on screen)."""
    for progress in _active:
        progress.stop()


def emit_json(obj: dict[str, Any]) -> None:
    print(json.dumps({"ts": time.time(), **obj}, default=str), file=sys.stderr, flush=True)


def print_summary(summary: pl.DataFrame, title: str) -> None:
    """One row per segment. ``summary`` carries segment, name, customers, share, revenue_share,
    recency_days_median (the names' measure, not the mean: "Steady" read 239 days beside "Lapsing" at 233),
    frequency_mean and aov_kpi (revenue / orders)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col, justify in (("seg", "right"), ("name", "left"), ("customers", "right"),
                         ("share", "right"), ("revenue share", "right"), ("median recency (days)", "right"),
                         ("orders/customer", "right"), ("revenue/order", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "name", min_width=18 if col == "name" else None)
    for r in summary.iter_rows(named=True):
        table.add_row(str(r["segment"]), r["name"], f"{r['customers']:,}", f"{r['share']:.1%}",
                      _or_dash(r["revenue_share"], ".1%"), _or_dash(r["recency_days_median"], ".0f"),
                      _or_dash(r["frequency_mean"], ".1f"), _or_dash(r["aov_kpi"], ".2f"))
    _out.print(table)


def print_lines(lines: list[str]) -> None:
    for line in lines:   # plain text: "[clv] enabled = false" in a line is a config section, not Rich markup
        _out.print(line, markup=False)


def print_progress(message: str) -> None:
    """A progress line on stderr (not an error)."""
    _err.print(message, highlight=False, markup=False)


def print_error(message: str) -> None:
    # The message is plain text: "[sampling]" in it is a config section, not Rich markup.
    _err.print(Text("error: ", style="red") + Text(message), soft_wrap=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _or_dash(v: float | None, spec: str) -> str:
    """A segment without customers (an assigned batch none of whose customers fall in it) has no means; no
    revenue share where the revenue of all customers is not positive."""
    return "-" if v is None else format(v, spec)
