"""Every reject reason, row conservation, dedupe, and time parsing."""

import datetime as dt

import polars as pl
import pytest

from segmint.engine.config import Columns, RunConfig, parse_as_of
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.io.clean import REASONS, clean

COLS = Columns(customer="cid", time="t", time_format="%Y-%m-%d %H:%M", amount="amt", order=None,
               channel=None, category=None)


def _dirty() -> pl.DataFrame:
    return pl.DataFrame({
        "cid": ["a", "a", None, "b", "b", "c", "c", "d", "d", "d"],
        "t": ["2024-01-01 10:00", "2024-01-02 10:00", "2024-01-01 10:00", None, "yesterday",
              "2024-01-03 09:00", "2024-01-03 09:00", "2024-01-04 00:00", "2024-02-01 00:00",
              "2024-01-04 00:00"],
        "amt": [10.0, 5.0, 3.0, 1.0, 2.0, float("nan"), 7.0, float("inf"), 4.0, 8.0],
    })


def test_rows_conserved_on_dirty_input():
    res = clean(_dirty(), RunConfig(columns=COLS, as_of="2024-01-31"))
    assert res.rows_in == 10
    assert res.rows_used + sum(res.rejected.values()) == res.rows_in
    assert res.rejects.height == sum(res.rejected.values())
    assert res.rejected == {"null_customer_id": 1, "null_timestamp": 1, "unparseable_timestamp": 1,
                            "non_finite_amount": 2, "after_as_of": 1, "duplicate": 0}
    by_reason = dict(res.rejects.select("reason", "cid").iter_rows())
    assert by_reason["unparseable_timestamp"] == "b"
    assert by_reason["after_as_of"] == "d"
    # Rejects carry the source columns exactly as read, plus the reason.
    assert res.rejects.columns == ["cid", "t", "amt", "reason"]
    assert set(res.rejects["reason"]) <= set(REASONS)


def test_as_of_defaults_to_latest_valid_timestamp():
    res = clean(_dirty(), RunConfig(columns=COLS))
    assert res.as_of == dt.datetime(2024, 2, 1)
    assert res.rejected["after_as_of"] == 0


def test_identical_lines_are_kept_and_counted():
    df = pl.DataFrame({"cid": ["a", "a", "a"], "t": ["2024-01-01 10:00"] * 3, "amt": [5.0, 5.0, 6.0]})
    res = clean(df, RunConfig(columns=COLS))
    assert res.rows_used == 3
    assert res.repeated_lines == 1


def test_dedupe_on_rejects_every_repeat_after_the_first():
    df = pl.DataFrame({"cid": ["a", "a", "a", "b", None], "t": ["2024-01-01 10:00"] * 5,
                       "amt": [5.0, 5.0, 5.0, 5.0, 5.0]})
    res = clean(df, RunConfig(columns=COLS, dedupe_on=("cid", "t")))
    assert res.rejected["duplicate"] == 2
    assert res.rejected["null_customer_id"] == 1
    assert res.rows_used == 2


def test_dedupe_on_unmapped_column_is_a_config_error():
    with pytest.raises(ConfigError, match="not mapped"):
        RunConfig(columns=COLS, dedupe_on=("nope",))


def test_all_rows_rejected_is_a_contract_error():
    df = pl.DataFrame({"cid": [None, None], "t": ["2024-01-01 10:00"] * 2, "amt": [1.0, 2.0]})
    with pytest.raises(InputContractError, match="no usable rows"):
        clean(df, RunConfig(columns=COLS))


def test_quantity_times_price_and_timezones():
    cols = Columns(customer="cid", time="t", amount=None, quantity="q", price="p", order=None,
                   channel=None, category=None)
    df = pl.DataFrame({"cid": [1, 2], "q": [2, 3], "p": [1.5, 2.0],
                       "t": [dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 1, 2, 12)]}).with_columns(
        pl.col("t").dt.replace_time_zone("Europe/Paris"))
    res = clean(df, RunConfig(columns=cols))
    assert res.lines["amount"].to_list() == [3.0, 6.0]
    assert res.lines["ts"].to_list() == [dt.datetime(2024, 1, 1, 11), dt.datetime(2024, 1, 2, 11)]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-03-05", dt.datetime(2024, 3, 5, 23, 59, 59, 999999)),
    ("2024-03-05T06:30", dt.datetime(2024, 3, 5, 6, 30)),
    ("2024-03-05T06:30+02:00", dt.datetime(2024, 3, 5, 4, 30)),
])
def test_parse_as_of(text, expected):
    assert parse_as_of(text) == expected


def test_parse_as_of_rejects_garbage():
    with pytest.raises(ConfigError, match="--as-of"):
        parse_as_of("last tuesday")


def test_hive_partitioned_directory_and_glob_inputs(small_data, tmp_path):
    from segmint.engine.pipeline import validate

    tx = pl.read_parquet(small_data / "transactions")
    hive = tmp_path / "hive"
    tx.with_columns(month=pl.col("ts").dt.strftime("%Y-%m")).write_parquet(hive, partition_by="month")
    assert len(list(hive.glob("month=*"))) > 12
    by_dir = validate([hive], RunConfig())
    by_glob = validate([str(hive / "month=2025-*" / "*.parquet")], RunConfig())
    assert by_dir.rows_in == tx.height
    assert by_glob.rows_in == tx.filter(pl.col("ts").dt.year() == 2025).height


def test_repeated_lines_matches_the_naive_count():
    import numpy as np

    from segmint.engine.io.clean import repeated_lines

    rng = np.random.default_rng(0)
    df = pl.DataFrame({"a": rng.integers(0, 20, 5000), "b": rng.integers(0, 5, 5000).astype(str),
                       "c": pl.Series([[1.5, None, float("nan")][i] for i in rng.integers(0, 3, 5000)],
                                      dtype=pl.Float64)})
    assert repeated_lines(df) == df.height - df.n_unique()
    assert repeated_lines(df.unique(maintain_order=True)) == 0
