"""Segment profiles: size, revenue, per-feature distribution and lift, KPIs, and a readable name.

For each segment and each numeric feature: mean, median, std, p10, p90 and
the z-lift ``(segment mean - population mean) / population std``. KPIs:
customers, share, revenue (sum of monetary_total), revenue share, aov
(revenue / orders), orders per customer, repurchase rate (share with two or
more purchase days), the share of each activity status, and with CLV the
segment's total CLV (``clv_total``; mean p_alive and CLV are ``p_alive_mean``
and ``clv_mean`` like every feature).
"""

from __future__ import annotations

import polars as pl

from segmint.engine.features.lifecycle import STATUSES

__all__ = ["build_profiles", "segment_name", "SUMMARY_FEATURES"]

SUMMARY_FEATURES = ("recency_days", "frequency", "aov")
_STATS = {"mean": lambda c: c.mean(), "median": lambda c: c.median(), "std": lambda c: c.std(),
          "p10": lambda c: c.quantile(0.1, "linear"), "p90": lambda c: c.quantile(0.9, "linear")}


def build_profiles(table: pl.DataFrame) -> pl.DataFrame:
    """One row per segment, sorted by segment id, with a ``name`` column.

    ``table`` holds one row per customer: ``segment`` and the feature columns.
    """
    numeric = [c for c, t in table.schema.items()
               if t.is_numeric() and c not in ("customer_id", "segment", "distance", "margin")]
    n = table.height
    revenue = table["monetary_total"].sum()
    pop = {c: (table[c].mean(), table[c].std()) for c in numeric}
    aggs = [
        pl.len().alias("customers"),
        pl.col("monetary_total").sum().alias("revenue"),
        (pl.col("monetary_total").sum() / pl.col("frequency").sum()).alias("aov_kpi"),
        pl.col("frequency").mean().alias("orders_per_customer"),
        (pl.col("lt_frequency") >= 1).mean().alias("repurchase_rate"),
        *[(pl.col("activity_status") == s).mean().alias(f"{s}_rate") for s in STATUSES],
        *([pl.col("clv").sum().alias("clv_total")] if "clv" in table.columns else []),
        *[fn(pl.col(c)).alias(f"{c}_{stat}") for c in numeric for stat, fn in _STATS.items()],
    ]
    prof = (table.group_by("segment").agg(aggs).sort("segment")
            .with_columns((pl.col("customers") / n).alias("share"),
                          (pl.col("revenue") / revenue if revenue else pl.lit(0.0)).alias("revenue_share"),
                          *[((pl.col(f"{c}_mean") - m) / s if s else pl.lit(0.0)).alias(f"{c}_zlift")
                            for c, (m, s) in pop.items()]))
    names = _unique([segment_name(row) for row in prof.iter_rows(named=True)])
    first = ["segment", "name", "customers", "share", "revenue", "revenue_share", "aov_kpi",
             "orders_per_customer", "repurchase_rate", *[f"{s}_rate" for s in STATUSES],
             *(["clv_total"] if "clv" in table.columns else [])]
    prof = prof.with_columns(name=pl.Series(names, dtype=pl.String))
    return prof.select(*first, *[c for c in prof.columns if c not in first])


def segment_name(row: dict) -> str:
    """A human-readable name from the z-lifts, e.g. ``Recent · frequent · high spend``."""
    z = {k[: -len("_zlift")]: v for k, v in row.items() if k.endswith("_zlift") and v is not None}
    parts = []
    if z.get("tenure_days", 0) < -1.0 and z.get("recency_days", 0) < -0.5:
        parts.append("New")
    elif z.get("recency_days", 0) > 1.0:
        parts.append("Dormant")
    elif z.get("recency_days", 0) > 0.4:
        parts.append("Lapsing")
    elif z.get("recency_days", 0) < -0.3:
        parts.append("Recent")
    else:
        parts.append("Steady")
    freq = z.get("frequency", 0)
    parts.append("frequent" if freq > 0.5 else "occasional" if freq < -0.3 else "regular")
    spend = z.get("aov", 0)
    parts.append("high spend" if spend > 0.5 else "low spend" if spend < -0.3 else "mid spend")
    if z.get("refund_share", 0) > 1.0:
        parts.append("returns-heavy")
    return " · ".join(parts)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out
