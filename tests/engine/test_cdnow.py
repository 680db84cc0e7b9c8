"""The lifetimes-compatible columns equal lifetimes' own summary on CDNOW, customer by customer."""

import polars as pl
from polars.testing import assert_series_equal

from segmint.engine.config import Columns, RunConfig
from segmint.engine.pipeline import compute_feature_table
from tests.fixtures import DATA

CDNOW_COLUMNS = Columns(customer="customer_id", time="date", time_format="%Y%m%d", amount="dollar_value")


def test_lt_columns_match_lifetimes_on_cdnow(cdnow_parquet, tmp_path):
    cfg = RunConfig(columns=CDNOW_COLUMNS, as_of="1998-06-30")
    compute_feature_table([cdnow_parquet], tmp_path / "f", cfg)
    table = pl.read_parquet(tmp_path / "f" / "features")
    ref = pl.read_parquet(DATA / "lifetimes_summary_daily_master.parquet")
    assert table.height == ref.height == 23_570
    got = table.join(ref, on="customer_id", how="full", coalesce=True).sort("customer_id")
    assert got.height == 23_570
    assert_series_equal(got["lt_frequency"], got["frequency_right"].cast(pl.Int64), check_names=False)
    assert_series_equal(got["lt_recency"], got["recency"].cast(pl.Float64), check_names=False)
    assert_series_equal(got["lt_T"], got["T"].cast(pl.Float64), check_names=False)
    # The reference file rounds monetary_value to 8 decimals.
    assert_series_equal(got["lt_monetary"], got["monetary_value"], check_names=False, abs_tol=1e-6)


def test_cdnow_keeps_its_255_identical_lines(cdnow_parquet):
    from segmint.engine.pipeline import validate

    rep = validate([cdnow_parquet], RunConfig(columns=CDNOW_COLUMNS))
    assert rep.repeats_on_mapped_columns == 255
    assert rep.rows_used == rep.rows_in == 69_659
