"""Acquisition-month cohorts x months since first purchase.

A customer's cohort is the calendar month (UTC) of their first valid line.
For each cohort and month offset (0 = the acquisition month):
- ``active_customers``: customers with at least one purchase line (amount > 0) that month;
- ``retention``: active_customers / cohort_size;
- ``revenue``: net amount of the cohort's lines that month (refunds subtract);
- ``revenue_per_customer``: revenue / cohort_size (comparable across offsets);
- ``revenue_per_active``: revenue / active_customers (null when none are active).
Months in which a cohort had no lines at all are present with zeros, up to the
as-of month, so retention curves have no gaps.
"""

from __future__ import annotations

import polars as pl

__all__ = ["cohort_table", "retention_pivot"]


def cohort_table(lines: pl.DataFrame, as_of_month: pl.Expr | object) -> pl.DataFrame:
    """Long table: cohort, months_since_first, cohort_size and the measures above."""
    month = pl.col("ts").dt.truncate("1mo").dt.date()
    df = lines.select("customer_id", "amount", month.alias("month")).with_columns(
        cohort=pl.col("month").min().over("customer_id"))
    sizes = df.group_by("cohort").agg(pl.col("customer_id").n_unique().alias("cohort_size"))
    measures = (df.with_columns(offset=_months(pl.col("month")) - _months(pl.col("cohort")))
                .group_by("cohort", "offset")
                .agg(pl.col("customer_id").filter(pl.col("amount") > 0).n_unique().alias("active_customers"),
                     pl.col("amount").sort().sum().alias("revenue")))
    grid = (sizes.with_columns(offset=pl.int_ranges(0, _months(pl.lit(as_of_month)) - _months(pl.col("cohort")) + 1))
            .explode("offset"))
    return (grid.join(measures, on=["cohort", "offset"], how="left")
            .with_columns(pl.col("active_customers").fill_null(0), pl.col("revenue").fill_null(0.0))
            .select(
                "cohort",
                pl.col("offset").cast(pl.Int32).alias("months_since_first"),
                pl.col("cohort_size").cast(pl.Int64),
                pl.col("active_customers").cast(pl.Int64),
                (pl.col("active_customers") / pl.col("cohort_size")).alias("retention"),
                "revenue",
                (pl.col("revenue") / pl.col("cohort_size")).alias("revenue_per_customer"),
                pl.when(pl.col("active_customers") > 0)
                .then(pl.col("revenue") / pl.col("active_customers")).alias("revenue_per_active"),
            )
            .sort("cohort", "months_since_first"))


def retention_pivot(table: pl.DataFrame) -> pl.DataFrame:
    """Cohorts as rows, ``m0``, ``m1``, ... as columns, retention as values."""
    wide = table.pivot(on="months_since_first", index=["cohort", "cohort_size"], values="retention")
    offsets = sorted((c for c in wide.columns if c not in ("cohort", "cohort_size")), key=int)
    return wide.select("cohort", "cohort_size", *[pl.col(c).alias(f"m{c}") for c in offsets]).sort("cohort")


def _months(date: pl.Expr) -> pl.Expr:
    return date.dt.year().cast(pl.Int32) * 12 + date.dt.month().cast(pl.Int32)
