"""Customer attributes (demographic, geographic) carried into profiles.

``attach`` joins the mapped attribute columns of the customers table onto the
feature table (customers absent from it get nulls, and are counted).
``segment_mix`` gives, per segment and attribute value: customers, ``share``
of the segment, and ``lift`` = share in the segment / share in the population.
Null values are their own category (``value`` null).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from segmint.engine.errors import InputContractError

__all__ = ["attach", "segment_mix"]


def attach(features: pl.DataFrame, customers: pl.DataFrame, id_col: str,
           attributes: Sequence[str]) -> tuple[pl.DataFrame, int]:
    """Features with the attributes joined, and how many customers had no row in the table."""
    table = customers.select(pl.col(id_col).alias("customer_id"), *attributes)
    if table.schema["customer_id"] != features.schema["customer_id"]:
        msg = (f"customers-table ids are {table.schema['customer_id']} but transaction ids are "
               f"{features.schema['customer_id']}; map an id column of the same type (--customers-id-col)")
        raise InputContractError(msg)
    dupes = table["customer_id"].is_duplicated().sum()
    if dupes:
        msg = f"the customers table lists {dupes} rows with a repeated customer id; give one row per customer"
        raise InputContractError(msg)
    clash = [a for a in attributes if a in features.columns]
    if clash:
        msg = f"customer attribute(s) {clash} clash with feature names; rename them in the customers table"
        raise InputContractError(msg)
    joined = features.join(table, on="customer_id", how="left", maintain_order="left")
    missing = features.join(table, on="customer_id", how="anti").height
    return joined, missing


def segment_mix(assigned: pl.DataFrame, attributes: Sequence[str]) -> pl.DataFrame:
    """Long table: segment, attribute, value (text), customers, share, lift."""
    n = assigned.height
    parts = []
    for attr in attributes:
        value = pl.col(attr).cast(pl.String).alias("value")
        pop = assigned.group_by(value).agg(pl.len().alias("__pop"))
        seg = assigned.group_by("segment", value).agg(pl.len().alias("customers"))
        sizes = assigned.group_by("segment").agg(pl.len().alias("__size"))
        parts.append(seg.join(sizes, on="segment").join(pop, on="value", nulls_equal=True)
                     .select("segment", pl.lit(attr).alias("attribute"), "value",
                             pl.col("customers").cast(pl.Int64),
                             (pl.col("customers") / pl.col("__size")).alias("share"),
                             ((pl.col("customers") / pl.col("__size")) / (pl.col("__pop") / n)).alias("lift")))
    return pl.concat(parts).sort("segment", "attribute", "value", nulls_last=True)
