"""What a run started with ``--previous`` reads of the previous run besides its model: which segment each
customer was in, counted against this run's segments (engine.cluster.matching matches ids on it).

The previous run's assignments are read in one place, ``previous_assignments``, and only their two
columns ``customer_id`` and ``segment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from segmint.engine.config import RunConfig
from segmint.engine.errors import InputContractError
from segmint.engine.io import store
from segmint.engine.io.committed import is_output, open_output
from segmint.engine.io.pseudonym import key_fingerprint

__all__ = ["previous_assignments", "shared_customers", "pseudonym_key"]


def previous_assignments(run_dir: str | Path, options: store.Options | None = None) -> pl.LazyFrame | None:
    """``customer_id`` and ``segment`` of every customer of the committed run at ``run_dir`` (the files its
    manifest lists, never a part of a run being written there); None where there are no readable
    assignments (a model folder given as the previous run, a damaged or removed output)."""
    try:
        if not is_output(run_dir, options):
            return None
        output = open_output(run_dir, options)
        if not output.has("assignments"):
            return None
        frame = output.scan("assignments").select("customer_id", pl.col("segment").cast(pl.Int64))
        frame.collect_schema()  # an unreadable or foreign folder fails here, not in the middle of the fit
    except (OSError, pl.exceptions.PolarsError, InputContractError):
        return None
    return frame


def shared_customers(ids: pl.Series, labels: np.ndarray, k: int, previous: Any,
                     cfg: RunConfig) -> tuple[np.ndarray | None, str | None]:
    """Customers of this run's profile sample (``ids``, in new segment row ``labels``) by previous segment:
    int[k, previous.k], columns in ``previous.segment_ids`` order; or None and the reason ids are
    matched on centroids instead."""
    fallback = "ids matched on centroids: "
    if bool(previous.provenance.get("pseudonymized_ids")) != cfg.pseudonymize_ids:
        return None, (fallback + "one of the two runs pseudonymises customer ids (--pseudonymize-ids) and the "
                                 "other does not, so their customers cannot be joined")
    options = dict(cfg.storage_options)
    before = previous_assignments(cfg.previous, options)
    if before is None:
        run_dir = store.parent(cfg.previous)
        if previous_assignments(run_dir, options) is not None:
            # a model folder said the run's assignments, which sit beside it, were not readable
            return None, (fallback + f"{cfg.previous} is a model folder; give --previous its run folder, {run_dir}, "
                                     f"to match on the customers both runs share")
        return None, fallback + f"the previous run's assignments are not readable at {cfg.previous}/assignments"
    theirs = before.collect_schema()["customer_id"]
    if theirs != ids.dtype:
        return None, (fallback + f"customer ids were {theirs} in the previous run and are {ids.dtype} in this one, "
                                 f"so their customers cannot be joined")
    if cfg.pseudonymize_ids and pseudonym_key(cfg.previous, options) not in (None, key_fingerprint()):
        # Said as compare says it: the note read "no customer of this run was in the previous run".
        return None, (fallback + "the two runs pseudonymise customer ids with two keys (SEGMINT_ID_KEY), so no "
                                 "customer of one can be found in the other; give this run the previous run's key")
    column = {sid: j for j, sid in enumerate(previous.segment_ids)}
    now = pl.LazyFrame({"customer_id": ids, "row": pl.Series(labels, dtype=pl.Int64)})
    both = now.join(before, on="customer_id", how="inner").select("row", "segment").collect()
    unknown = set(both["segment"].unique().to_list()) - set(column)
    if unknown:
        return None, (fallback + f"the previous run's assignments hold segments {sorted(unknown)} that its model "
                                 f"does not: they are not from the same run")
    if both.height == 0:
        return None, fallback + "no customer of this run was in the previous run"
    table = np.zeros((k, len(column)), np.int64)
    np.add.at(table, (both["row"].to_numpy(), both["segment"].replace_strict(column).to_numpy()), 1)
    return table, None


def pseudonym_key(run_dir: str | Path, options: store.Options | None) -> str | None:
    """The previous run's ``pseudonym_key`` (its key's fingerprint, in run.json); None where it has none (a run
    of a segmint that did not record it) or its run.json cannot be read."""
    try:
        doc = open_output(run_dir, options).read_json("run.json")
    except (OSError, ValueError, InputContractError):
        return None
    return doc.get("pseudonym_key") if isinstance(doc, dict) else None
