"""Customer attributes (demographic, geographic) carried into profiles.

``attach`` joins the mapped attribute columns of the customers table onto the
feature table (customers absent from it get nulls, and are counted; so are the table's
rows left unused: without an id, or of no customer of the output).
``segment_mix`` gives, per segment and attribute value: customers, ``share``
of the segment, and ``lift`` = share in the segment / share in the population,
both among customers whose value is known; a missing value (null in the table,
or a customer without a row) is its own level (``value`` null).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from segmint.engine.errors import InputContractError
from segmint.engine.io.clean import empty_cell

__all__ = ["attach", "Attached", "segment_mix", "SCORED_COLUMNS"]

# Columns scoring adds beside the features (engine.pipeline.score, engine.features.rfm): an attribute of one
# of these names was dropped for the computed column (its segment mix then showed r_score as "r_score"), or
# stopped the run with a DuplicateError.
SCORED_COLUMNS = ("customer_id", "segment", "distance", "margin", "outlier", "micro_segment", "r_score", "f_score",
                  "m_score", "rfm_code", "rfm_segment", "p_alive", "expected_purchases", "expected_avg_value", "clv")


@dataclass(frozen=True)
class Attached:
    """The features with the attributes joined, and what the join left out."""

    table: pl.DataFrame
    without_a_row: int       # customers with no row in the customers table
    rows_without_id: int     # rows of the table with an empty id cell (no customer's)
    rows_unmatched: int      # rows of the table whose customer is not one of the features' (no usable line)


def attach(features: pl.DataFrame, customers: pl.DataFrame, id_col: str, attributes: Sequence[str]) -> Attached:
    """Features with the attributes joined, and the counts of ``Attached``. A NaN is a missing value, as a null
    is (it was a level "NaN" of its own, in the segment mix and as a clustering column)."""
    # '__' names are segmint's own columns: an attribute __hash stopped the run at its end (exit 1).
    clash = [a for a in attributes if a in features.columns or a in SCORED_COLUMNS or a.startswith("__")]
    if clash:
        msg = (f"customer attribute(s) {clash} clash with the names of features or scores; rename them in the "
               f"customers table")
        raise InputContractError(msg)
    values = [pl.col(a).fill_nan(None) if customers.schema[a].is_float() else pl.col(a) for a in attributes]
    # A blank id is no id, as in transactions: two rows of " " were "more than one row for customer  ".
    table = customers.filter(~empty_cell(customers.schema, id_col)).select(pl.col(id_col).alias("customer_id"),
                                                                           *values)
    if table.schema["customer_id"] != features.schema["customer_id"]:
        msg = (f"customers-table ids are {table.schema['customer_id']} but transaction ids are "
               f"{features.schema['customer_id']}; map an id column of the same type (--customers-id-col)")
        raise InputContractError(msg)
    dupes = table.filter(pl.col("customer_id").is_duplicated())["customer_id"].n_unique()
    if dupes:
        # No example: an id is personal data, and error lines end up in logs.
        # Counted in the bucket being mapped when it stops (46 of 100 with 3 buckets): not the table's count.
        msg = (f"the customers table has more than one row for a customer ({dupes:,} such customer(s) in the part "
               f"read before stopping); give one row per customer")
        raise InputContractError(msg)
    joined = features.join(table, on="customer_id", how="left", maintain_order="left")
    missing = features.join(table, on="customer_id", how="anti").height
    unmatched = table.join(features.select("customer_id"), on="customer_id", how="anti").height
    return Attached(joined, missing, customers.height - table.height, unmatched)


def segment_mix(counts: dict[tuple[int, str, str | None], int]) -> pl.DataFrame:
    """Long table from (segment, attribute, value) -> customers counts (summed over buckets):
    segment, attribute, value (text; null for a missing value), customers, share, lift.

    A known value's share is among the segment's customers whose value is known, and its
    lift compares it with the share among all customers whose value is known: customers
    without a value neither dilute nor inflate the lifts of the others. The null row gives
    the share of the segment without a value, and its lift against the population's.
    """
    schema = {"segment": pl.Int32, "attribute": pl.String, "value": pl.String, "customers": pl.Int64}
    table = pl.DataFrame([(s, a, v, n) for (s, a, v), n in counts.items()], schema=schema, orient="row")
    known = pl.col("value").is_not_null()
    n = pl.col("customers")
    seg = table.group_by("segment", "attribute").agg(n.sum().alias("__seg"), n.filter(known).sum().alias("__seg_k"))
    pop = table.group_by("attribute").agg(n.sum().alias("__all"), n.filter(known).sum().alias("__all_k"))
    value_pop = table.group_by("attribute", "value").agg(n.sum().alias("__pop"))
    share = n / pl.when(known).then(pl.col("__seg_k")).otherwise(pl.col("__seg"))
    pop_share = pl.col("__pop") / pl.when(known).then(pl.col("__all_k")).otherwise(pl.col("__all"))
    return (table.join(seg, on=["segment", "attribute"])
            .join(pop, on="attribute")
            .join(value_pop, on=["attribute", "value"], nulls_equal=True)
            .select("segment", "attribute", "value", "customers", share.alias("share"), (share / pop_share).alias("lift"))
            .sort("segment", "attribute", "value", nulls_last=True))
