"""Issue #19's targets, each checked against the figures of one bench run: the bound, the figure, met or not.

The issue asks that ``segmint bench --scenario M`` show every target met in one run, and L measured with its
command; PREDICT holds Model.predict's. A target whose figure the run did not measure (a scenario without
scikit-learn, say) is left out, not called met. Scenario S has none: its data is too small to say anything
about the bounds, which are the issue's for M and L.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

__all__ = ["targets", "target_table"]

_GB = 1e9   # the 2.3 GB, as --memory-limit reads "2GB": 10^9 bytes
_MIB = 2**20

# (target, comparison, bound, the figure from a bench result or None where it was not measured)
_Target = tuple[str, str, float, Callable[[dict[str, Any]], float | None]]
_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of the scenario's targets the run measured: ``target``, ``bound`` (e.g. "<= 2"), ``measured``, ``met``."""
    out = []
    for name, compare, bound, figure in _TARGETS.get(res["scenario"], ()):
        value = figure(res)
        if value is not None:
            out.append({"target": name, "bound": f"{compare} {bound:g}", "measured": value,
                        "met": bool(_COMPARE[compare](value, bound))})
    return out


def target_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of ``targets``' rows, and how many were met."""
    lines = ["| target (#19) | bound | measured | met |", "|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['bound']} | {r['measured']} | {'yes' if r['met'] else '**no**'} |" for r in rows]
    return lines + ["", f"{sum(r['met'] for r in rows)} of {len(rows)} targets met in this run"]


def _ratio(name: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda res: res.get("ratios", {}).get(name)


def _buckets(res: dict[str, Any]) -> float | None:
    return res.get("end_to_end", {}).get("buckets")


def _peak_2gb(res: dict[str, Any]) -> float | None:
    run = res.get("end_to_end_2GB")
    return None if run is None else round(run["peak_rss_mb"] * _MIB / _GB, 3)


_TARGETS: dict[str, tuple[_Target, ...]] = {
    "M": (
        ("map / DuckDB's aggregate (time)", "<=", 2, _ratio("map (read + clean + features) / duckdb query (time)")),
        ("buckets under the default memory limit (no partition pass)", "<=", 1, _buckets),
        ("fit + cluster + score + profile (seconds)", "<=", 2, _ratio("fit + cluster + score + profile (seconds)")),
        ("segmint run / hand-written pipeline (time)", "<", 1, _ratio("end to end / hand-written pipeline (time)")),
        ("segmint run / hand-written pipeline (peak RSS)", "<=", 1,
         _ratio("end to end / hand-written pipeline (peak RSS)")),
        ("segmint features / DuckDB's aggregate (time)", "<=", 2, _ratio("segmint features / duckdb query (time)")),
        *((f"scikit-learn time / segmint time, k={k}", ">=", 8, _ratio(f"scikit-learn time / segmint time, k={k}"))
          for k in (8, 64)),
        *((f"segmint / scikit-learn inertia, k={k}", "<", 1, _ratio(f"segmint / scikit-learn inertia, k={k}"))
          for k in (8, 64)),
    ),
    "L": (
        ("segmint run --memory-limit 2GB / DuckDB's aggregate (time)", "<=", 5,
         _ratio("end to end with --memory-limit 2GB / duckdb query (time)")),
        ("peak RSS with --memory-limit 2GB (GB)", "<=", 2.3, _peak_2gb),
    ),
    "PREDICT": (
        ("Model.predict, one customer, median ms", "<", 5, _ratio("predict one customer, median ms")),
        ("Model.predict in one call, customers per second", ">=", 300_000,
         _ratio("predict throughput, customers per second")),
    ),
}
