"""Cohort tables against a plain Python computation, and the pivot."""

import datetime as dt
from collections import defaultdict

import polars as pl
import pytest

from segmint.engine.config import RunConfig
from segmint.engine.pipeline import compute_cohorts


def _reference(lines: pl.DataFrame, as_of: dt.date) -> dict:
    first: dict = {}
    for cid, ts in lines.select("customer_id", "ts").iter_rows():
        first[cid] = min(first.get(cid, ts), ts)
    index = {cid: (ts.year * 12 + ts.month) for cid, ts in first.items()}
    size = defaultdict(int)
    for m in index.values():
        size[m] += 1
    active = defaultdict(set)
    revenue = defaultdict(float)
    for cid, ts, amount in lines.select("customer_id", "ts", "amount").iter_rows():
        key = (index[cid], ts.year * 12 + ts.month - index[cid])
        revenue[key] += amount
        if amount > 0:
            active[key].add(cid)
    last = as_of.year * 12 + as_of.month
    return {(c, k): (size[c], len(active[(c, k)]), revenue[(c, k)])
            for c in size for k in range(last - c + 1)}


def test_cohorts_match_plain_python(small_data, tmp_path):
    table = compute_cohorts([small_data / "transactions"], tmp_path / "c", RunConfig())
    lines = pl.read_parquet(small_data / "transactions")
    ref = _reference(lines, lines["ts"].max().date())
    assert table.height == len(ref)
    for row in table.iter_rows(named=True):
        key = (row["cohort"].year * 12 + row["cohort"].month, row["months_since_first"])
        size, active, revenue = ref[key]
        assert (row["cohort_size"], row["active_customers"]) == (size, active)
        assert row["revenue"] == pytest.approx(revenue, abs=1e-6)
        assert row["retention"] == pytest.approx(active / size)
    m0 = table.filter(pl.col("months_since_first") == 0)
    assert (m0["retention"] == 1.0).all()
    assert table.group_by("cohort").agg(pl.col("cohort_size").first())["cohort_size"].sum() == \
        lines["customer_id"].n_unique()
    pivot = pl.read_parquet(tmp_path / "c" / "retention_pivot.parquet")
    assert pivot.columns[:4] == ["cohort", "cohort_size", "m0", "m1"]
    assert pivot.columns[-1] == f"m{table['months_since_first'].max()}"
    assert (tmp_path / "c" / "_SUCCESS").exists()
