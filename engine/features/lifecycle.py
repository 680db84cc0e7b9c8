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

import numpy as np
import polars as pl

from segmint.engine.config import LifecycleConfig

__all__ = ["STATUSES", "activity_status"]

STATUSES = ("new", "active", "at_risk", "lapsed")
_NEW, _ACTIVE, _AT_RISK, _LAPSED = range(len(STATUSES))


def activity_status(table: pl.DataFrame, cfg: LifecycleConfig) -> pl.Series:
    """``activity_status`` (an Enum) of every row of a feature table (its recency_days, tenure_days, lt_frequency
    and ipt_mean_days). In NumPy, not a Polars expression: planning one took 0.4 ms of scoring one customer."""
    recency = table["recency_days"].to_numpy()
    repeat = table["lt_frequency"].to_numpy() >= 1
    # NaN as the Polars expression this was took it (the map gives none to a customer it keeps): a gap of NaN
    # is no gap (fmax), a recency of NaN above every number.
    with np.errstate(invalid="ignore"):
        rhythm = recency / np.fmax(table["ipt_mean_days"].to_numpy(), 1.0)
    # The first condition that holds decides, in this order.
    code = np.select([table["tenure_days"].to_numpy() <= cfg.new_days,
                      (recency > cfg.lapsed_days) | np.isnan(recency),
                      repeat & (rhythm <= cfg.at_risk_ratio), repeat & (rhythm <= cfg.lapsed_ratio), repeat,
                      recency <= cfg.one_time_active_days],
                     [_NEW, _LAPSED, _ACTIVE, _AT_RISK, _LAPSED, _ACTIVE], _AT_RISK)
    return _statuses().gather(code).alias("activity_status")


@functools.cache
def _statuses() -> pl.Series:
    return pl.Series(STATUSES, dtype=pl.Enum(STATUSES))
