"""Activity status: new, active, at_risk, lapsed (thresholds in LifecycleConfig).

- ``new``: first order within ``new_days`` of the as-of date;
- repeat buyers (two or more purchase days) are judged against their own
  rhythm, r = recency_days / ipt_mean_days: active while r <= at_risk_ratio,
  at_risk while r <= lapsed_ratio, lapsed beyond;
- one-day buyers: active within ``one_time_active_days``, at_risk within
  ``lapsed_days``, lapsed beyond;
- anyone silent for more than ``lapsed_days`` is lapsed, whatever the rhythm.
"""

from __future__ import annotations

import functools

import polars as pl

from segmint.engine.config import LifecycleConfig

__all__ = ["STATUSES", "activity_status"]

STATUSES = ("new", "active", "at_risk", "lapsed")


@functools.lru_cache(maxsize=16)
def activity_status(cfg: LifecycleConfig) -> pl.Expr:
    """Expression over the feature table giving ``activity_status`` (an Enum); built once per config."""
    recency = pl.col("recency_days")
    rhythm = recency / pl.max_horizontal(pl.col("ipt_mean_days"), pl.lit(1.0))
    repeat = pl.col("lt_frequency") >= 1
    # Enum literals: text literals made a text column per branch, then cast it (bench M's 909 k customers:
    # 0.055-0.078 -> 0.021 s).
    status = functools.partial(pl.lit, dtype=pl.Enum(STATUSES))
    return (
        pl.when(pl.col("tenure_days") <= cfg.new_days).then(status("new"))
        .when(recency > cfg.lapsed_days).then(status("lapsed"))
        .when(repeat & (rhythm <= cfg.at_risk_ratio)).then(status("active"))
        .when(repeat & (rhythm <= cfg.lapsed_ratio)).then(status("at_risk"))
        .when(repeat).then(status("lapsed"))
        .when(recency <= cfg.one_time_active_days).then(status("active"))
        .otherwise(status("at_risk"))
    )
