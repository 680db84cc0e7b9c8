"""CLV calibration/holdout check on generated data.

``python -m segmint.bench.clv_holdout DATA_DIR --calibration-end 2025-06-30``
fits the CLV models on transactions up to the calibration end and compares, for
the same customers over the next ``--horizon`` weeks, the predicted purchase days
and discounted value with what actually happened. ``DATA_DIR/transactions`` holds
``customer_id``, ``ts`` and ``amount`` (as ``segmint generate`` writes them).

Each purchase model is scored where the data let it be fitted: ``auto`` (what a run
uses), ``bgnbd`` and ``nbd`` (the no-dropout limit), so the two can be compared on the
same holdout: the total of predicted purchase days against the actual one, and per
customer the root mean squared error (the score a conditional mean minimises) and the mean
absolute error.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

from segmint.engine.analytics.clv import ClvFitError
from segmint.engine.config import ClvConfig, RunConfig, parse_as_of
from segmint.engine.pipeline import compute_clv

__all__ = ["main", "holdout"]

MODELS = ("auto", "bgnbd", "nbd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder written by 'segmint generate'")
    parser.add_argument("--calibration-end", default="2025-06-30")
    parser.add_argument("--horizon", type=float, default=52.0, help="weeks")
    args = parser.parse_args()
    print(json.dumps(holdout(Path(args.data) / "transactions", args.calibration_end, args.horizon), indent=1))


def holdout(tx: Path, calibration_end: str, horizon: float) -> dict:
    """Every model's predictions for the holdout against what happened (a model the data cannot
    identify is reported with the reason)."""
    raw = pl.read_parquet(tx)
    end = parse_as_of(calibration_end)
    until = end + pl.duration(weeks=horizon)
    actual = (raw.filter((pl.col("ts") > end) & (pl.col("ts") <= until) & (pl.col("amount") > 0))
              .group_by("customer_id")
              .agg(pl.col("ts").dt.date().n_unique().alias("days"), pl.col("amount").sum().alias("revenue")))
    doc: dict = {}
    for model in MODELS:
        # Every row after the calibration end is rejected (after_as_of): that is the holdout.
        cfg = RunConfig(as_of=calibration_end, clv=ClvConfig(horizon=horizon, purchase_model=model),
                        max_reject_share=1.0)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                params = compute_clv([tx], Path(tmp) / "clv", cfg).clv
            except ClvFitError as exc:
                doc[model] = {"not_fitted": str(exc)}
                continue
            predicted = pl.read_parquet(Path(tmp) / "clv" / "clv")
        both = predicted.join(actual, on="customer_id", how="left").fill_null(0)
        doc["customers"] = both.height
        doc[model] = {
            "params": params.to_dict(),
            "purchase_days": {"predicted": round(both["expected_purchases"].sum()), "actual": int(both["days"].sum())},
            # The predictions are conditional means: the squared error is the score they minimise.
            "rmse": round(float(((both["expected_purchases"] - both["days"]) ** 2).mean() ** 0.5), 6),
            "mean_absolute_error": round(float((both["expected_purchases"] - both["days"]).abs().mean()), 6),
            "value": {"predicted_discounted_clv": round(both["clv"].sum()), "actual_revenue": round(both["revenue"].sum())},
        }
    return doc


if __name__ == "__main__":
    main()
