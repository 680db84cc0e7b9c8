"""activity_status against a plain Python reading of its documented rule, on random customers."""

from __future__ import annotations

import numpy as np
import polars as pl

from segmint.engine.config import LifecycleConfig
from segmint.engine.features.lifecycle import STATUSES, activity_status


def _reference(tenure: float, recency: float, repeats: float, ipt: float, c: LifecycleConfig) -> str:
    """The rule, NaN as Polars orders it (above every number) and a NaN gap as none."""
    if tenure <= c.new_days:
        return "new"
    if recency > c.lapsed_days or np.isnan(recency):
        return "lapsed"
    if repeats >= 1 or np.isnan(repeats):
        rhythm = recency / (1.0 if np.isnan(ipt) else max(ipt, 1.0))
        return "active" if rhythm <= c.at_risk_ratio else "at_risk" if rhythm <= c.lapsed_ratio else "lapsed"
    return "active" if recency <= c.one_time_active_days else "at_risk"


def test_activity_status_matches_the_rule_on_random_customers_and_at_every_threshold():
    rng = np.random.default_rng(3)
    c = LifecycleConfig(new_days=20.0, at_risk_ratio=1.25, lapsed_ratio=2.5, one_time_active_days=60.0,
                        lapsed_days=300.0)
    n = 4_000
    recency = rng.uniform(0, 400, n)
    tenure = recency + rng.uniform(0, 300, n)
    repeats = rng.integers(0, 4, n)
    ipt = np.where(repeats >= 1, rng.uniform(0.2, 120, n), 0.0)   # one-day buyers have no gap
    # Values on each threshold (a value equal to one is on its lower side) and gaps under a day.
    recency[:6] = [c.lapsed_days, c.one_time_active_days, c.at_risk_ratio * 50, c.lapsed_ratio * 50, 0.0, 0.5]
    tenure[:6] = [c.new_days + 1, c.new_days + 1, c.new_days, c.new_days + 0.5, c.new_days + 1, 400.0]
    repeats[:6] = [1, 0, 1, 1, 2, 3]
    ipt[:6] = [10.0, 0.0, 50.0, 50.0, 0.5, 0.25]
    # NaN in each input (the map gives none to a customer it keeps): Polars orders NaN above every number.
    recency[6], tenure[7], ipt[8], repeats[8], recency[9], tenure[9] = np.nan, np.nan, np.nan, 2, np.inf, np.inf
    got = activity_status(recency, ipt, repeats, tenure, c)
    assert got.dtype == pl.Enum(STATUSES)
    want = [_reference(t, r, k, g, c) for t, r, k, g in zip(tenure, recency, repeats, ipt, strict=True)]
    assert got.cast(pl.String).to_list() == want
    assert set(want) == set(STATUSES)   # every status is exercised
    # Repeat counts as floats, one of them NaN (above every number: a repeat buyer); no customer at all.
    floats = repeats.astype(np.float64)
    floats[10], tenure[10], recency[10], ipt[10] = np.nan, 400.0, 100.0, 100.0   # a one-day buyer: at_risk
    got = activity_status(recency, ipt, floats, tenure, c)
    assert got.cast(pl.String).to_list() == [_reference(t, r, k, g, c)
                                             for t, r, k, g in zip(tenure, recency, floats, ipt, strict=True)]
    assert got[10] == "active"
    empty = activity_status(*(np.zeros(0) for _ in range(4)), c)
    assert empty.len() == 0 and empty.dtype == pl.Enum(STATUSES)
