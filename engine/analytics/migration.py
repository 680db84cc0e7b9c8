"""How well segment ids held between two runs, from their migration table (engine.pipeline.compare)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from segmint.engine.cluster.matching import optimal_overlap

__all__ = ["kept_ids"]


def kept_ids(migration: pl.DataFrame) -> dict[str, Any]:
    """Of the customers in both runs (``migration``: old_segment, new_segment, customers), how many kept
    their segment id, and the share the best one-to-one relabelling of the segments would have kept.
    Ids that kept less than that moved more than the customers' behaviour did; ``None`` shares when
    no customer is in both runs."""
    both = migration.filter(pl.col("old_segment").is_not_null() & pl.col("new_segment").is_not_null())
    total = int(both["customers"].sum())
    kept = int(both.filter(pl.col("old_segment") == pl.col("new_segment"))["customers"].sum())
    old = {s: i for i, s in enumerate(sorted(set(both["old_segment"].to_list())))}
    new = {s: i for i, s in enumerate(sorted(set(both["new_segment"].to_list())))}
    table = np.zeros((len(old), len(new)), np.int64)
    for o, n, c in both.select("old_segment", "new_segment", "customers").iter_rows():
        table[old[o], new[n]] += c
    best = optimal_overlap(table)
    return {"customers_in_both": total, "kept_id": kept, "optimal_relabelling": best,
            "kept_share": kept / total if total else None, "optimal_share": best / total if total else None}
