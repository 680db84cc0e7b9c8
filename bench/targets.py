"""Issue #19's targets, each checked against the figures of one bench run: the bound, the figure, met or not.

The issue asks that ``segmint bench --scenario M`` show every target met in one run, and L measured with its
command; PREDICT holds Model.predict's. Each figure is computed from the run's own times and peaks, not from the
rounded ratios. A target whose figure the run did not measure (a scenario without scikit-learn, say) says so and
is not called met. Scenario S has none: its data is too small to say anything about the bounds, which are the
issue's for M and L.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

__all__ = ["targets", "target_table"]

_GB = 1e9   # the 2.3 GB, as --memory-limit reads "2GB": 10^9 bytes
_MIB = 2**20

# (target, comparison, bound, the figure from a bench result: a KeyError where the run did not measure it)
_Target = tuple[str, str, float, Callable[[dict[str, Any]], float]]
_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of the scenario's targets: ``target``, ``bound`` (e.g. "<= 2"), ``measured`` (rounded for reading) and
    ``met``, judged on the unrounded figure (a 7.996x speed-up is not 8x); a target the run did not measure has
    ``measured`` and ``met`` None."""
    out = []
    for name, compare, bound, figure in _TARGETS.get(res["scenario"], ()):
        try:
            value = figure(res)
        except KeyError:   # not measured in this run (a scenario without scikit-learn, say)
            value = None
        out.append({"target": name, "bound": f"{compare} {bound:g}",
                    "measured": None if value is None else round(value, 3 if abs(value) < 1000 else 0),
                    "met": None if value is None else bool(_COMPARE[compare](value, bound))})
    return out


def target_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of ``targets``' rows, and how many were met."""
    lines = ["| target (#19) | bound | measured | met |", "|---|---|---|---|"]
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    lines += [f"| {r['target']} | {r['bound']} | {'-' if r['measured'] is None else r['measured']} | "
              f"{verdict[r['met']]} |" for r in rows]
    measured = [r for r in rows if r["met"] is not None]
    unmeasured = len(rows) - len(measured)
    return lines + ["", f"{sum(r['met'] for r in measured)} of {len(measured)} targets met in this run"
                    + (f" ({unmeasured} not measured)" if unmeasured else "")]


def _seconds(res: dict[str, Any], stage: str) -> float:
    return res["stages"][stage]["seconds"]


def _over_duckdb(seconds: Callable[[dict[str, Any]], float]) -> Callable[[dict[str, Any]], float]:
    return lambda res: seconds(res) / _seconds(res, "duckdb aggregate query")


def _post_map(res: dict[str, Any]) -> float:
    return sum(_seconds(res, f"segmint {stage}") for stage in ("fit", "cluster", "score", "profile"))


def _against_pipeline(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda res: res["end_to_end"][key] / res["handwritten"][key]


def _kmeans_speed(k: int) -> Callable[[dict[str, Any]], float]:
    return lambda res: _seconds(res, f"scikit-learn k-means k={k}") / _seconds(res, f"segmint k-means k={k}")


def _inertia(k: int) -> Callable[[dict[str, Any]], float]:
    return lambda res: (res["clustering"][f"k={k}"]["segmint"]["inertia"]
                        / res["clustering"][f"k={k}"]["scikit-learn"]["inertia"])


def _throughput(res: dict[str, Any]) -> float:
    return res["customers"] / _seconds(res, f"predict {res['customers']:,} customers in one call")


_TARGETS: dict[str, tuple[_Target, ...]] = {
    "M": (
        ("map / DuckDB's aggregate (time)", "<=", 2, _over_duckdb(lambda res: _seconds(res, "segmint map"))),
        ("buckets under the default memory limit (no partition pass)", "<=", 1,
         lambda res: res["end_to_end"]["buckets"]),
        ("fit + cluster + score + profile (seconds)", "<=", 2, _post_map),
        ("segmint run / hand-written pipeline (time)", "<", 1, _against_pipeline("seconds")),
        ("segmint run / hand-written pipeline (peak RSS)", "<=", 1, _against_pipeline("peak_rss_mb")),
        ("segmint features / DuckDB's aggregate (time)", "<=", 2, _over_duckdb(lambda res: res["features"]["seconds"])),
        *((f"scikit-learn time / segmint time, k={k}", ">=", 8, _kmeans_speed(k)) for k in (8, 64)),
        *((f"segmint / scikit-learn inertia, k={k}", "<", 1, _inertia(k)) for k in (8, 64)),
    ),
    "L": (
        ("segmint run --memory-limit 2GB / DuckDB's aggregate (time)", "<=", 5,
         _over_duckdb(lambda res: res["end_to_end_2GB"]["seconds"])),
        ("peak RSS with --memory-limit 2GB (GB)", "<=", 2.3,
         lambda res: res["end_to_end_2GB"]["peak_rss_mb"] * _MIB / _GB),
    ),
    "PREDICT": (
        # The median as the bench rounds it (to 0.01 ms): rounding up can only call a met target unmet.
        ("Model.predict, one customer, median ms", "<", 5,
         lambda res: res["ratios"]["predict one customer, median ms"]),
        ("Model.predict in one call, customers per second", ">=", 300_000, _throughput),
    ),
}
