"""The pipeline a data engineer writes in an afternoon instead of running segmint, run as a peer.

DuckDB computes per-customer recency, tenure, distinct orders, monetary, AOV and refund share from the
Parquet files; scikit-learn standardises them and clusters with ``KMeans(k=8, n_init=1)``; Polars writes
the assignments partitioned by segment. It does none of what segmint adds (reject reasons and their
quarantine, order netting, repeats, returns-only customers, CLV, sequence and mix features, profiles,
names, a reusable model), which is why it is the bar for time and memory, not for output.

``python bench/handwritten.py TRANSACTIONS OUT --threads N --seed S`` prints its stage times as one
JSON line; ``segmint bench`` runs it in a child process beside ``segmint run`` to compare wall time and
peak RSS. With ``--features-only`` it is the features command a user writes instead of ``segmint features``:
DuckDB's step alone, its table written to OUT as one Parquet file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["handwritten_pipeline", "handwritten_features", "FEATURES"]

FEATURES = ("recency_days", "tenure_days", "orders", "monetary", "aov", "refund_share")


def handwritten_pipeline(transactions: Path, out: Path, threads: int, seed: int, k: int = 8) -> dict[str, Any]:
    """Run the pipeline; seconds per step and the number of customers segmented."""
    import duckdb  # noqa: F401 - loaded before the first step's clock starts, as the other libraries are
    import numpy as np
    import polars as pl
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    con = _connect(threads)   # open to the end, as a script's connection is
    features = handwritten_features(con, transactions)
    seconds["duckdb features"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    x = StandardScaler().fit_transform(features.select(FEATURES).to_numpy().astype(np.float64))
    labels = KMeans(k, n_init=1, random_state=seed).fit_predict(x)
    seconds["scale + k-means"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    features.with_columns(segment=pl.Series(labels, dtype=pl.Int32)).write_parquet(out, partition_by="segment")
    seconds["write"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return {"seconds": {name: round(s, 3) for name, s in seconds.items()}, "customers": features.height}


def handwritten_features(con, transactions: Path):
    """The pipeline's first step on DuckDB connection ``con``: per-customer features, a Polars frame by customer
    id."""
    import polars as pl

    return pl.from_arrow(con.sql(f"""
        WITH lines AS (SELECT customer_id, ts, amount, order_id FROM read_parquet('{transactions}/*.parquet')),
             latest AS (SELECT max(ts) AS as_of FROM lines)
        SELECT customer_id,
               date_diff('second', max(ts), any_value(as_of)) / 86400.0 AS recency_days,
               date_diff('second', min(ts), any_value(as_of)) / 86400.0 AS tenure_days,
               count(DISTINCT order_id) AS orders,
               sum(amount) AS monetary,
               sum(amount) / count(DISTINCT order_id) AS aov,
               avg(CASE WHEN amount < 0 THEN 1.0 ELSE 0.0 END) AS refund_share
        FROM lines, latest
        GROUP BY customer_id
        ORDER BY customer_id""").to_arrow_table())


def _connect(threads: int):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET enable_progress_bar = false")
    return con


def _features_command(transactions: Path, out: Path, threads: int) -> dict[str, Any]:
    """``handwritten_features`` written to ``out``: seconds per step and the number of customers."""
    import duckdb  # noqa: F401 - loaded before the clock starts, as the pipeline's libraries are
    import polars  # noqa: F401

    t0 = time.perf_counter()
    con = _connect(threads)
    features = handwritten_features(con, transactions)
    t1 = time.perf_counter()
    features.write_parquet(out)
    t2 = time.perf_counter()
    seconds = {"duckdb features": t1 - t0, "write": t2 - t1, "total": t2 - t0}
    return {"seconds": {name: round(s, 3) for name, s in seconds.items()}, "customers": features.height}


def _main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("transactions", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features-only", action="store_true", help="DuckDB's features written to OUT, no clustering")
    a = p.parse_args()
    # scikit-learn and NumPy's BLAS take their thread count from these; set before they load.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(a.threads))
    done = (_features_command(a.transactions, a.out, a.threads) if a.features_only
            else handwritten_pipeline(a.transactions, a.out, a.threads, a.seed))
    print(json.dumps(done))


if __name__ == "__main__":
    _main()
