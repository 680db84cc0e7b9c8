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

import numpy as np
import polars as pl

from segmint.engine.config import LifecycleConfig

__all__ = ["STATUSES", "activity_status"]

STATUSES = ("new", "active", "at_risk", "lapsed")


# Each status once, gathered per customer.
_STATUS = pl.Series("activity_status", STATUSES, dtype=pl.Enum(STATUSES))


def activity_status(recency: np.ndarray, ipt_mean: np.ndarray, repeats: np.ndarray, tenure: np.ndarray,
                    cfg: LifecycleConfig) -> pl.Series:
    """``activity_status`` (an Enum) of customers of these recency_days, ipt_mean_days, lt_frequency and
    tenure_days. NaN is above every number, as Polars orders floats (the status was a Polars expression),
    and a NaN gap is none. In NumPy: Polars planned the expression for 0.4-0.7 ms, most of scoring one
    customer's features."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rhythm = recency / np.fmax(ipt_mean, 1.0)
    repeat = (repeats >= 1) | np.isnan(repeats) if repeats.dtype.kind == "f" else repeats >= 1
    rules = [(tenure <= cfg.new_days, "new"), ((recency > cfg.lapsed_days) | np.isnan(recency), "lapsed"),
             (repeat & (rhythm <= cfg.at_risk_ratio), "active"), (repeat & (rhythm <= cfg.lapsed_ratio), "at_risk"),
             (repeat, "lapsed"), (recency <= cfg.one_time_active_days, "active")]
    status = np.select([when for when, _ in rules], [STATUSES.index(name) for _, name in rules],
                       default=STATUSES.index("at_risk"))
    return _STATUS[status]
