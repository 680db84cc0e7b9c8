"""CLV calibration/holdout check on generated data.

``python -m segmint.bench.clv_holdout DATA_DIR --calibration-end 2025-06-30``
fits BG/NBD + Gamma-Gamma on transactions up to the calibration end and
compares, for the same customers over the next ``--horizon`` weeks, the
predicted purchase days and discounted value with what actually happened.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

from segmint.engine.config import ClvConfig, RunConfig, parse_as_of
from segmint.engine.pipeline import compute_clv

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder written by 'segmint generate'")
    parser.add_argument("--calibration-end", default="2025-06-30")
    parser.add_argument("--horizon", type=float, default=52.0, help="weeks")
    args = parser.parse_args()
    tx = Path(args.data) / "transactions"
    # Every row after the calibration end is rejected (after_as_of): that is the holdout.
    cfg = RunConfig(as_of=args.calibration_end, clv=ClvConfig(horizon=args.horizon), max_reject_share=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        params = compute_clv([tx], Path(tmp) / "clv", cfg).clv
        predicted = pl.read_parquet(Path(tmp) / "clv" / "clv")
    raw = pl.read_parquet(tx)
    end = parse_as_of(args.calibration_end)
    until = end + pl.duration(weeks=args.horizon)
    actual = (raw.filter((pl.col("ts") > end) & (pl.col("ts") <= until) & (pl.col("amount") > 0))
              .group_by("customer_id")
              .agg(pl.col("ts").dt.date().n_unique().alias("days"), pl.col("amount").sum().alias("revenue")))
    both = predicted.join(actual, on="customer_id", how="left").fill_null(0)
    print(json.dumps({
        "customers": both.height, "params": params.to_dict(),
        "purchase_days": {"predicted": round(both["expected_purchases"].sum()), "actual": int(both["days"].sum())},
        "value": {"predicted_discounted_clv": round(both["clv"].sum()), "actual_revenue": round(both["revenue"].sum())},
    }, indent=1))


if __name__ == "__main__":
    main()
