"""Acquisition-month cohorts x months since the first purchase.

A customer's cohort is the calendar month (UTC) of their first purchase (an
order with a net amount >= 0, as for every feature); a customer is active in a
month when they made a purchase in it, so month 0 retention is 1 by definition.
For each cohort and month offset (0 = the acquisition month):

- ``active_customers``, ``retention`` (active / cohort size);
- ``revenue``: net amount of the cohort's lines that month (returns subtract;
  a return dated before the customer's first purchase counts in month 0);
- ``revenue_per_customer`` (revenue / cohort size) and ``revenue_per_active``;
- ``complete_month``: false for the as-of month when the as-of instant is not its
  end, so a half month does not read as a retention cliff.

Months in which a cohort had no lines are present with zeros, up to the as-of
month. Buckets return ``CohortPartials`` (counts, and revenue as exact partials),
merged into the same table whatever the number of buckets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from segmint.engine import exact
from segmint.engine.features.orders import Grouped, collapse_orders
from segmint.engine.pairs import unique_pairs

__all__ = ["CohortPartials", "cohort_partials", "cohort_table", "retention_pivot"]


@dataclass
class CohortPartials:
    sizes: dict[int, int] = field(default_factory=dict)                     # cohort month -> customers
    active: dict[tuple[int, int], int] = field(default_factory=dict)        # (cohort, offset) -> customers
    revenue: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (cohort, offset) -> partials

    def add(self, other: CohortPartials) -> None:
        for key, n in other.sizes.items():
            self.sizes[key] = self.sizes.get(key, 0) + n
        for key, n in other.active.items():
            self.active[key] = self.active.get(key, 0) + n
        for key, parts in other.revenue.items():
            self.revenue[key] = self.revenue.get(key, []) + parts


def cohort_partials(g: Grouped, as_of: dt.datetime) -> CohortPartials:
    """The partials of one bucket's clean lines, grouped by customer in line order (every customer has a
    purchase: cleaning saw to it)."""
    out = CohortPartials()
    if g.ts.size == 0:
        return out
    orders = collapse_orders(g)
    n = g.offsets.size - 1
    o_customer = np.repeat(np.arange(n), np.diff(orders.offsets))
    bought = orders.amount >= 0
    o_month = _months(orders.ts)
    cohort = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(cohort, o_customer[bought], o_month[bought])
    sizes = np.unique(cohort, return_counts=True)
    out.sizes = dict(zip(sizes[0].tolist(), sizes[1].tolist(), strict=True))
    active_customer, active_month = unique_pairs(o_customer[bought], o_month[bought])[0]
    (c, o), counts = unique_pairs(cohort[active_customer], active_month - cohort[active_customer])
    out.active = {(int(a), int(b)): int(k) for a, b, k in zip(c, o, counts, strict=True)}
    l_customer = np.repeat(np.arange(n), np.diff(g.offsets))
    (c, o), _, inverse = unique_pairs(cohort[l_customer], np.maximum(_months(g.ts) - cohort[l_customer], 0),
                                       inverse=True)
    parts = exact.partials(inverse, g.amount, c.size)
    out.revenue = {(int(a), int(b)): p for a, b, p in zip(c, o, parts, strict=True)}
    return out



def cohort_table(partials: CohortPartials, as_of: dt.datetime) -> pl.DataFrame:
    """Long table: cohort, months_since_first, cohort_size, the measures above, complete_month."""
    last = _months(np.array([_epoch_us(as_of)]))[0]
    complete_last = _ends_its_month(as_of)
    rows = []
    for cohort in sorted(partials.sizes):
        size = partials.sizes[cohort]
        for offset in range(last - cohort + 1):
            active = partials.active.get((cohort, offset), 0)
            revenue = exact.finite_total([partials.revenue.get((cohort, offset), [])], "revenue of a cohort")
            rows.append((_month_date(cohort), offset, size, active, revenue, cohort + offset < last or complete_last))
    table = pl.DataFrame(rows, schema={"cohort": pl.Date, "months_since_first": pl.Int32, "cohort_size": pl.Int64,
                                       "active_customers": pl.Int64, "revenue": pl.Float64,
                                       "complete_month": pl.Boolean}, orient="row")
    return table.select(
        "cohort", "months_since_first", "cohort_size", "active_customers",
        (pl.col("active_customers") / pl.col("cohort_size")).alias("retention"),
        "revenue",
        (pl.col("revenue") / pl.col("cohort_size")).alias("revenue_per_customer"),
        pl.when(pl.col("active_customers") > 0)
        .then(pl.col("revenue") / pl.col("active_customers")).alias("revenue_per_active"),
        "complete_month",
    )


def retention_pivot(table: pl.DataFrame) -> pl.DataFrame:
    """Cohorts as rows, ``m0``, ``m1``, ... as columns, retention as values."""
    wide = table.pivot(on="months_since_first", index=["cohort", "cohort_size"], values="retention")
    offsets = sorted((c for c in wide.columns if c not in ("cohort", "cohort_size")), key=int)
    return wide.select("cohort", "cohort_size", *[pl.col(c).alias(f"m{c}") for c in offsets]).sort("cohort")


def _months(ts_us: np.ndarray) -> np.ndarray:
    """Calendar months since 1970-01 (UTC) of microsecond timestamps."""
    return ts_us.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)


def _month_date(months: int) -> dt.date:
    return dt.date(1970 + months // 12, months % 12 + 1, 1)


def _epoch_us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))


def _ends_its_month(t: dt.datetime) -> bool:
    """Whether ``t`` is the last microsecond of its month. The last of year 9999 has no next microsecond: adding
    one failed `cohorts --as-of 9999-12-31` with exit 1 (OverflowError)."""
    if t.replace(tzinfo=None) == dt.datetime.max:
        return True
    return (t + dt.timedelta(microseconds=1)).month != t.month
