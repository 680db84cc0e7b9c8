"""The three profile files of a run: Parquet for programs, JSON with its column meanings, CSV for people.

- ``profiles.parquet``: every column at full precision.
- ``profiles.json``: ``{"units": {...}, "columns": {column: {"unit", "description"}}, "clv": {...},
  "segments": [rows]}``, strict JSON (a non-finite number fails the write); ``clv`` names the purchase
  model behind the CLV columns (``bgnbd``, or ``nbd`` with the note saying no dropout was detected),
  null without CLV.
- ``profiles.csv``: the columns a marketer opens in a spreadsheet (``MARKETER_COLUMNS``), ``aov_kpi``
  as ``revenue_per_order``, rounded by unit (money to cents, shares to 0.01 %).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from segmint.engine.analytics.clv import ClvParams
from segmint.engine.io import store
from segmint.engine.io.sink import write_json
from segmint.engine.profile_columns import UNITS, describe, describe_columns

__all__ = ["write_profiles", "marketer_table", "MARKETER_COLUMNS"]

# (profile column, CSV header); clv_total only when the run has CLV.
MARKETER_COLUMNS = (
    ("segment", "segment"), ("name", "name"), ("customers", "customers"), ("share", "share"),
    ("revenue", "revenue"), ("revenue_share", "revenue_share"), ("orders_per_customer", "orders_per_customer"),
    ("aov_kpi", "revenue_per_order"), ("repurchase_rate", "repurchase_rate"), ("lapsed_rate", "lapsed_rate"),
    ("clv_total", "clv_total"), ("recency_days_median", "recency_days_median"),
    ("frequency_median", "frequency_median"), ("aov_median", "aov_median"),
)
_OPTIONAL = {"clv_total"}
_DECIMALS = {"currency": 2, "share": 4, "days": 1, "orders": 2, "count": 2}


def write_profiles(directory: str | Path, profiles: pl.DataFrame, options: store.Options | None = None,
                   clv: ClvParams | None = None) -> None:
    """Write profiles.parquet, profiles.json and profiles.csv of ``profiles`` (one row per segment) into
    ``directory``, a local folder or an object-store prefix (``options`` as for engine.io.store); ``clv``
    is the CLV model the profiles' CLV columns come from."""
    store.write_parquet(profiles, store.join(directory, "profiles.parquet"), options)
    model = {"purchase_model": clv.purchase_model, "note": clv.note} if clv is not None else None
    write_json(store.join(directory, "profiles.json"), {"units": UNITS, "columns": describe_columns(profiles.columns),
                                                        "clv": model, "segments": profiles.to_dicts()}, options)
    store.write_bytes(store.join(directory, "profiles.csv"), marketer_table(profiles).write_csv().encode(), options)


def marketer_table(profiles: pl.DataFrame) -> pl.DataFrame:
    """The CSV's columns, renamed and rounded for reading."""
    cols = []
    for source, header in MARKETER_COLUMNS:
        if source in _OPTIONAL and source not in profiles.columns:
            continue
        expr = pl.col(source)
        decimals = _DECIMALS.get(describe(source).unit)
        if decimals is not None and profiles.schema[source].is_float():
            expr = expr.round(decimals)
        cols.append(expr.alias(header))
    return profiles.select(cols)
