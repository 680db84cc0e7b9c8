"""Cohort tables against a plain Python computation, and the pivot."""

import datetime as dt
from collections import defaultdict

import polars as pl
import pytest

from segmint.engine.config import RunConfig
from segmint.engine.pipeline import compute_cohorts
from tests.reference_map import order_net


def _reference(lines: pl.DataFrame, as_of: dt.date) -> dict:
    """Cohort = month of the first purchase (an order with net amount >= 0); active = a purchase that month."""
    orders = defaultdict(lambda: [None, []])
    for cid, oid, ts, amount in lines.select("customer_id", "order_id", "ts", "amount").iter_rows():
        order = orders[(cid, oid)]
        order[0] = ts if order[0] is None else min(order[0], ts)
        order[1].append(amount)
    month = {}
    bought = defaultdict(set)
    for (cid, _), (ts, amounts) in orders.items():
        if order_net(amounts) >= 0:
            m = ts.year * 12 + ts.month
            month[cid] = min(month.get(cid, m), m)
            bought[cid].add(m)
    size = defaultdict(int)
    for m in month.values():
        size[m] += 1
    active = defaultdict(set)
    for cid, months in bought.items():
        for m in months:
            active[(month[cid], m - month[cid])].add(cid)
    revenue = defaultdict(float)
    for cid, ts, amount in lines.select("customer_id", "ts", "amount").iter_rows():
        revenue[(month[cid], max(ts.year * 12 + ts.month - month[cid], 0))] += amount
    last = as_of.year * 12 + as_of.month
    return {(c, k): (size[c], len(active[(c, k)]), revenue[(c, k)])
            for c in size for k in range(last - c + 1)}


def test_cohorts_match_plain_python(small_data, tmp_path):
    table = compute_cohorts([small_data / "transactions"], tmp_path / "c", RunConfig()).cohorts
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
    # The as-of month (2026-06, ending at the data's last time, not the month's end) is incomplete.
    complete = dict(table.group_by("cohort").agg(pl.col("complete_month").last()).iter_rows())
    assert not any(complete.values())
    assert table.filter(pl.col("months_since_first") == 0)["complete_month"].sum() == table["cohort"].n_unique() - 1


def test_a_month_ending_at_the_as_of_is_complete(small_data, tmp_path):
    table = compute_cohorts([small_data / "transactions"], tmp_path / "c",
                            RunConfig(as_of="2026-05-31", max_reject_share=1.0)).cohorts
    assert table.filter(pl.col("cohort") == pl.col("cohort").max())["complete_month"].all()


@pytest.mark.parametrize("order_id", [12345, 2**63 - 1])
def test_a_line_without_an_order_id_is_an_order_of_its_own_whatever_the_other_ids(tmp_path, order_id):
    # The largest int64 order id once stood for "no order id": a line without one joined that order.
    t = dt.datetime(2024, 1, 1)
    pl.DataFrame({"customer_id": [1, 1, 2, 2], "ts": [t, t + dt.timedelta(days=40)] * 2, "amount": [10.0, 5.0] * 2,
                  "order_id": pl.Series([order_id, None, 7, None], dtype=pl.Int64)}).write_parquet(tmp_path / "t.parquet")
    table = compute_cohorts([tmp_path / "t.parquet"], tmp_path / "c", RunConfig()).cohorts
    month1 = table.filter(pl.col("months_since_first") == 1)
    assert month1["active_customers"].item() == 2


def test_an_as_of_at_the_end_of_year_9999_completes_its_month(tmp_path):
    # The as-of's next microsecond decided whether its month was complete: past year 9999, exit 1.
    pl.DataFrame({"customer_id": [1, 2], "ts": [dt.datetime(9999, 11, 5), dt.datetime(9999, 12, 5)],
                  "amount": [10.0, 20.0]}).write_parquet(tmp_path / "t.parquet")
    for as_of, complete in (("9999-12-31", True), ("9999-12-30", False)):
        result = compute_cohorts([tmp_path / "t.parquet"], tmp_path / as_of, RunConfig(as_of=as_of))
        assert result.cohorts.filter(pl.col("cohort") == dt.date(9999, 12, 1))["complete_month"].to_list() == \
            [complete]


@pytest.mark.parametrize("order_type", [pl.Int64, pl.String])
def test_an_orders_lines_apart_in_the_input_are_one_order(tmp_path, order_type):
    # Order 7 of customer 1 is a purchase of 50 and a return of 80 on Jan 5 (net -30: no purchase), its two lines
    # apart in the input. Text order ids give such lines two ids (engine.codes.TextIds): read as two orders, the 50
    # made January customer 1's cohort; its first purchase is order 9, in March.
    day = dt.datetime(2024, 1, 5, 10)
    lines = pl.DataFrame({
        "customer_id": [1, 2, 1, 1, 2],
        "order_id": pl.Series([7, 8, 9, 7, 8]).cast(order_type),
        "ts": [day, day, dt.datetime(2024, 3, 3), day, day],
        "amount": [50.0, 10.0, 20.0, -80.0, 5.0],
    })
    (tmp_path / "tx").mkdir()
    lines.write_parquet(tmp_path / "tx" / "part.parquet")
    table = compute_cohorts([tmp_path / "tx"], tmp_path / "c", RunConfig(max_reject_share=1.0)).cohorts
    first_months = table.filter(pl.col("months_since_first") == 0)
    sizes = dict(zip(first_months["cohort"].to_list(), first_months["cohort_size"].to_list(), strict=True))
    assert sizes == {dt.date(2024, 1, 1): 1, dt.date(2024, 3, 1): 1}
