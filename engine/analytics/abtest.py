"""A/B holdouts per segment and their evaluation.

Split: a customer is in the holdout when ``u < ratio``, where u is the first
8 bytes of SHA-256(salt, 0x00, customer id as text) read as an unsigned
integer / 2^64. It does not depend on the segment, so every segment is split
at the same expected ratio, and the same customer always lands in the same
group for the same salt.

Evaluate, per segment and overall (segment = null), treatment (contacted) vs
holdout:
- conversion rate and revenue per customer in each group;
- ``abs_lift`` = conv_t - conv_h, ``rel_lift`` = abs_lift / conv_h;
- 95% confidence interval of abs_lift: Newcombe's hybrid score interval (Newcombe 1998, method 10), from the
  Wilson intervals of the two rates. The Wald interval, abs_lift +- 1.96 sqrt(p_t(1-p_t)/n_t + p_h(1-p_h)/n_h),
  it replaced, had no width for a group of rate 0 or 1: 300 of 1,000 treated against 0 of 2 held out gave
  [0.272, 0.328] beside a p-value of 0.355, and two groups of rate 0 the interval [0, 0];
- ``p_value``: two-sided two-proportion z-test with the pooled proportion;
- ``incremental_revenue`` = (rev/customer_t - rev/customer_h) x n_t;
- ``cost`` = cost_per_contact x n_t; ``roi_pct`` = (incremental_revenue - cost) / cost x 100.
Customers absent from the outcomes file count as not converted, zero revenue.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import polars as pl

from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.io.ids import check_integral_ids, customer_expr

__all__ = ["split_groups", "evaluate", "HOLDOUT", "TREATMENT"]

HOLDOUT = "holdout"
TREATMENT = "treatment"
# What an outcomes file without revenue cannot tell.
_REVENUE_MEASURES = ("rev_per_customer_t", "rev_per_customer_h", "incremental_revenue", "roi_pct")
_Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)


def split_groups(assignments: pl.DataFrame, ratio: float, salt: str) -> pl.DataFrame:
    """customer_id, segment, group for every row of ``assignments``."""
    if not 0 < ratio < 1:
        msg = f"--ratio must be between 0 and 1 (exclusive), got {ratio}"
        raise ConfigError(msg)
    ids = assignments["customer_id"].cast(pl.String).to_list()
    u = np.array([_unit(salt, i) for i in ids])
    group = np.where(u < ratio, HOLDOUT, TREATMENT)
    return assignments.select("customer_id", "segment").with_columns(group=pl.Series(group))


def evaluate(groups: pl.DataFrame, outcomes: pl.DataFrame, cost_per_contact: float) -> pl.DataFrame:
    """One row per segment plus an overall row (segment null). ``outcomes``: customer_id, converted, revenue."""
    for col in ("customer_id", "group", "segment"):
        if col not in groups.columns:
            msg = f"assignments file lacks column {col!r}; give the file written by 'segmint abtest split'"
            raise InputContractError(msg)
    for col in ("customer_id", "converted"):
        if col not in outcomes.columns:
            msg = (f"outcomes file lacks column {col!r}; it needs customer_id, converted (0/1) "
                   f"and optionally revenue")
            raise InputContractError(msg)
    if not (math.isfinite(cost_per_contact) and cost_per_contact > 0):   # nan passed "<= 0" and nulled the ROI
        msg = f"--cost-per-contact must be a number > 0, got {cost_per_contact}"
        raise ConfigError(msg)
    labels = set(groups["group"].unique().to_list()) - {TREATMENT, HOLDOUT}
    if labels:   # their customers were in neither measure, silently
        msg = (f"assignments file has group(s) {sorted(labels, key=str)} besides {TREATMENT!r} and {HOLDOUT!r}; "
               f"give the file written by 'segmint abtest split'")
        raise InputContractError(msg)
    if groups["customer_id"].is_duplicated().any():
        msg = "assignments file lists a customer more than once; give the file written by 'segmint abtest split'"
        raise InputContractError(msg)
    measured_revenue = "revenue" in outcomes.columns
    check_integral_ids(outcomes, "customer_id")   # float ids as pandas writes them: 7.0 is customer 7, not "7.0"
    outcomes = outcomes.select(
        customer_expr(outcomes.schema, "customer_id").cast(pl.String).alias("customer_id"),
        _number(outcomes, "converted"),
        _number(outcomes, "revenue") if measured_revenue else pl.lit(0.0).alias("revenue"))
    if not outcomes.height:   # everyone would count as not converted: a lift of 0 and an ROI of -100%
        msg = ("outcomes file has no rows; customers absent from it count as not converted, so give at least "
               "every customer who converted")
        raise InputContractError(msg)
    if outcomes["customer_id"].null_count():
        msg = (f"outcomes file has {outcomes['customer_id'].null_count()} row(s) without a customer_id; "
               f"give an id on every row")
        raise InputContractError(msg)
    if outcomes["customer_id"].is_duplicated().any():
        msg = "outcomes file lists a customer more than once; give one row per customer"
        raise InputContractError(msg)
    # is_in passes nulls by, and they were then filled as "not converted"; a NaN revenue nulled every measure.
    if outcomes["converted"].null_count() or not outcomes["converted"].is_in([0.0, 1.0]).all():
        msg = "outcomes column 'converted' must be 0/1 (or true/false) for every row; it has empty or other values"
        raise InputContractError(msg)
    finite = outcomes["revenue"].is_finite().fill_null(False)
    if not finite.all():
        bad = outcomes.height - int(finite.sum())
        msg = (f"outcomes column 'revenue' has {bad} empty, NaN, infinite or non-numeric value(s); give a number for "
               f"every row (0 for none)")
        raise InputContractError(msg)
    known = groups.select(pl.col("customer_id").cast(pl.String))
    unknown = outcomes.join(known, on="customer_id", how="anti")
    if unknown.height:
        # No example: an id is personal data, and raw ids against a pseudonymised run's groups (the likely
        # mistake) would go to the logs.
        msg = (f"{unknown.height:,} of the {outcomes.height:,} customer(s) in the outcomes file are not in the "
               f"assignments; check that both files come from the same run and id scheme (pseudonyms where the run "
               f"used --pseudonymize-ids)")
        raise InputContractError(msg)
    df = (groups.with_columns(pl.col("customer_id").cast(pl.String))
          .join(outcomes, on="customer_id", how="left")
          .with_columns(pl.col("converted").fill_null(0.0), pl.col("revenue").fill_null(0.0)))
    per_segment = _measure(df, cost_per_contact)
    overall = _measure(df.with_columns(pl.lit(None, pl.Int32).alias("segment")), cost_per_contact)
    result = pl.concat([per_segment.sort("segment"), overall], how="vertical_relaxed")
    revenues = pl.col("rev_per_customer_t", "rev_per_customer_h", "incremental_revenue")   # not the cost: its own
    if result.select(pl.any_horizontal(revenues.is_infinite()).any()).item():
        # A mean or difference of revenues past the float range: it was written as null, exit 0.
        msg = ("outcomes column 'revenue' sums beyond the float range; give revenue in a larger unit (thousands, "
               "millions)")
        raise InputContractError(msg)
    if not measured_revenue:   # revenue never measured is unknown, not 0 (ROI -100% beside an 11-point lift)
        result = result.with_columns(pl.lit(None, pl.Float64).alias(c) for c in _REVENUE_MEASURES)
    return result


def _number(outcomes: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as Float64: true/false as 1/0, text that is no number null (refused by the checks after, in one
    line quoting no cell: a strict cast failed with exit 1 and quoted them)."""
    col = pl.col(column)
    if outcomes.schema[column] != pl.String:
        return col.cast(pl.Float64, strict=False)
    word = col.str.strip_chars().str.to_lowercase()
    return (pl.when(word == "true").then(1.0).when(word == "false").then(0.0)
            .otherwise(col.cast(pl.Float64, strict=False)).alias(column))


def _measure(df: pl.DataFrame, cost_per_contact: float) -> pl.DataFrame:
    def side(group: str, suffix: str) -> list[pl.Expr]:
        g = pl.col("group") == group
        return [g.sum().alias(f"n_{suffix}"),
                pl.col("converted").filter(g).mean().alias(f"conv_{suffix}"),
                pl.col("revenue").filter(g).mean().alias(f"rev_per_customer_{suffix}")]

    m = df.group_by("segment").agg(*side(TREATMENT, "t"), *side(HOLDOUT, "h"))
    nt, nh, pt, ph = (pl.col(c) for c in ("n_t", "n_h", "conv_t", "conv_h"))
    pooled = (pt * nt + ph * nh) / (nt + nh)
    z = (pt - ph) / (pooled * (1 - pooled) * (1 / nt + 1 / nh)).sqrt()
    (lt, ut), (lh, uh) = _wilson(pt, nt), _wilson(ph, nh)
    m = m.with_columns(
        abs_lift=pt - ph,
        rel_lift=pl.when(ph > 0).then((pt - ph) / ph),
        ci95_low=pt - ph - ((pt - lt) ** 2 + (uh - ph) ** 2).sqrt(),
        ci95_high=pt - ph + ((ut - pt) ** 2 + (ph - lh) ** 2).sqrt(),
        z=z,
    )
    from scipy.stats import norm

    # A group without customers, or no variance at all, has no test: p-value null.
    p = 2 * norm.sf(np.abs(m["z"].cast(pl.Float64).fill_nan(None).to_numpy()))
    incremental = (pl.col("rev_per_customer_t") - pl.col("rev_per_customer_h")) * nt
    cost = nt.cast(pl.Float64) * cost_per_contact
    return (m.with_columns(p_value=pl.Series(p, dtype=pl.Float64).fill_nan(None))
            .with_columns(incremental_revenue=incremental, cost=cost)
            .with_columns(roi_pct=(pl.col("incremental_revenue") - pl.col("cost")) / pl.col("cost") * 100)
            .drop("z"))


def _wilson(p: pl.Expr, n: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """The 95% Wilson score interval of a rate ``p`` of ``n`` customers (null for a group without any)."""
    z2, size = _Z95 * _Z95, pl.when(n > 0).then(n.cast(pl.Float64))
    center = (p + z2 / (2 * size)) / (1 + z2 / size)
    half = _Z95 * (p * (1 - p) / size + z2 / (4 * size * size)).sqrt() / (1 + z2 / size)
    return center - half, center + half


def _unit(salt: str, customer: str) -> float:
    digest = hashlib.sha256(salt.encode() + b"\x00" + customer.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
