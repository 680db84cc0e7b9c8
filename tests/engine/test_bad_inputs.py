"""Bad inputs that used to exit 1 ("unexpected") get a clear exit 2 or 3, or a right answer."""

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, ClvConfig, Columns, FeatureConfig, RunConfig, load_toml
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.pipeline import compute_feature_table, run, validate


@pytest.mark.parametrize(("text", "needle"), [
    ('[run]\nmemory_limit = "lots"\n', "is not a size"),
    ('[cluster]\nk = "five"\n', "cluster.k (--k) must be a positive integer or 'auto', got 'five'"),
    ('[cluster]\nk = 8.0\n', "cluster.k (--k) must be a positive integer or 'auto', got 8.0"),
    ('[cluster]\nmicro_k = "0"\n', "cluster.micro_k (--micro-k) must be a positive integer or 'auto', got '0'"),
    ('[cluster]\nniter = "30"\n', "cluster.niter must be an integer, got '30'"),
    ('[run]\nmax_reject_share = true\n', "run.max_reject_share must be a number"),
    ('[run]\nas_of = "soon"\n', "--as-of 'soon'"),
    ("[columns]\ncustomer = 7\n", "columns.customer must be a string"),
    ("cluster = 3\n", "[cluster] in"),
    ('[features]\nrfm_grid = [1]\n', "rfm_grid"),
    ("[cluster\n", "not valid TOML"),
    # The keys of that section, not the fields other sections fill (it listed cluster, clv, storage_options).
    ("[run]\nbogus = 1\n", "unknown key(s) ['bogus'] in [run]; known: ['as_of', 'buckets', 'compress_scratch',"),
    ("[lifecycle]\nbogus = 1\n", "in [lifecycle]; known: ['at_risk_ratio',"),
    # A section's keys inside another: [features] lifecycle was overwritten by [lifecycle]'s defaults (exit 0),
    # [run] columns a keyword given twice (exit 1).
    ("[features.lifecycle]\nnew_days = 400\n", "['lifecycle'] in [features] ([lifecycle] is a section of its own)"),
    ('[run]\ncolumns = "x"\n', "['columns'] in [run] ([columns] is a section of its own)"),
    # NaN, infinities and negatives: exit 1 writing run.json at the end of the run, or no customer new (exit 0).
    ("[lifecycle]\nnew_days = nan\n", "lifecycle.new_days must be a positive number, got nan"),
    ("[lifecycle]\nnew_days = -5\n", "lifecycle.new_days must be a positive number, got -5.0"),
    # Tenure is fractional (a same-day buyer's is above 0): new_days = 0 made no customer new.
    ("[lifecycle]\nnew_days = 0\n", "lifecycle.new_days must be a positive number, got 0.0"),
    ("[lifecycle]\nlapsed_days = inf\n", "lifecycle.lapsed_days must be a positive number, got inf"),
    ("[clv]\nhorizon = nan\n", "--horizon must be > 0, got nan"),
    ("[clv]\nhorizon = inf\n", "--horizon must be > 0, got inf"),
    ("[cluster]\nmatch_distance = nan\n", "cluster.match_distance must be a number >= 0"),
    ("[cluster]\nmatch_distance = -1.0\n", "cluster.match_distance must be a number >= 0"),
    ("[cluster]\nseed = -1\n", "--seed must be in [0, 2147483643], got -1"),
    ("[cluster]\nseed = 4294967296\n", "--seed must be in [0, 2147483643]"),
    ("[features]\ncluster_features = []\n", "features.cluster_features is empty"),
])
def test_config_file_type_errors_name_the_field(tmp_path, text, needle):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load_toml(tmp_path / "c.toml")
    assert needle in str(err.value) and str(err.value).count(str(tmp_path / "c.toml")) == 1


def test_config_file_lists_and_feature_names_are_read_as_meant(small_data, tmp_path):
    # [cluster] attributes, a list in TOML, was refused as "must be a tuple (a list in TOML)".
    (tmp_path / "c.toml").write_text('[cluster]\nattributes = ["region"]\n'
                                     '[customers]\npaths = ["c.parquet"]\nattributes = ["region"]\n')
    assert load_toml(tmp_path / "c.toml").cluster.attributes == ("region",)
    # A misspelled log feature left its feature unlogged, with exit 0.
    cfg = RunConfig(features=dataclasses.replace(RunConfig().features, log_features=("frequncy",)))
    with pytest.raises(ConfigError, match=r"features.log_features names \['frequncy'\], which are not features"):
        run([small_data / "transactions"], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()
    # Features this data lacks (no events, no kiosk channel) are names of features, not misspellings.
    lacking = ("frequency", "conversion_rate", "channel_share_kiosk")
    run([small_data / "transactions"], tmp_path / "o",
        RunConfig(features=dataclasses.replace(RunConfig().features, log_features=lacking)))


@pytest.mark.parametrize(("features", "needle"), [
    # Clustered on the id as a number, and on the text code "545" as 545, exit 0.
    (("customer_id", "frequency"), r"\['customer_id'\] are not numeric features"),
    (("rfm_code",), r"\['rfm_code'\] are not numeric features"),
    # A status or an attribute failed a cast (exit 1, quoting the attribute's cells).
    (("activity_status", "frequency"), r"\['activity_status'\] are not numeric features"),
    (("region", "frequency"), r"\['region'\] are not numeric features.*--cluster-attrs"),
])
def test_cluster_features_are_numeric_features(small_data, tmp_path, features, needle):
    from segmint.engine.config import CustomerSource

    cfg = RunConfig(features=FeatureConfig(cluster_features=features),
                    customers=CustomerSource(paths=(str(small_data / "customers.parquet"),), attributes=("region",)))
    with pytest.raises(ConfigError, match=needle):
        run([small_data / "transactions"], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()


def test_clv_as_a_cluster_feature_without_clv_says_why(tmp_path):
    """Refused after the map and the fits as "not available", where CLV was disabled or could not be fitted."""
    with pytest.raises(ConfigError, match=r"names CLV column\(s\) \['clv'\] but \[clv\] enabled = false"):
        RunConfig(features=FeatureConfig(cluster_features=("frequency", "clv")), clv=ClvConfig(enabled=False))
    once = pl.DataFrame({"customer_id": range(200), "ts": [dt.datetime(2024, 1, 1 + i % 28) for i in range(200)],
                         "amount": [10.0] * 200})   # nobody repeats: no CLV fit
    once.write_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputContractError, match=r"\['clv'\] need CLV, which was not fitted: CLV needs at least 3 "):
        run([tmp_path / "t.parquet"], tmp_path / "o",
            RunConfig(cluster=ClusterConfig(k=2), features=FeatureConfig(cluster_features=("frequency", "clv"))))
    assert not (tmp_path / "o").exists()


def test_an_id_column_mapped_as_the_time_column_is_said_without_quoting_its_ids(tmp_path, monkeypatch):
    # Its ids were quoted as "times like 'RAWID-000000-SECRET'", pseudonymised run or not.
    monkeypatch.setenv("SEGMINT_ID_KEY", "s3cret-key-value-of-32-characters")
    frame = pl.DataFrame({"customer_id": [f"RAWID-{i:06d}-SECRET" for i in range(50)],
                          "ts": [dt.datetime(2024, 1, 1 + i % 28) for i in range(50)], "amount": [5.0] * 50,
                          "order_id": [f"O{i}" for i in range(50)]})
    frame.write_parquet(tmp_path / "t.parquet")
    for fmt in (None, "%Y-%m-%d"):
        columns = Columns(customer="order_id", time="customer_id", time_format=fmt, order=None)
        cfg = RunConfig(columns=columns, pseudonymize_ids=True)
        with pytest.raises(ConfigError, match="column 'customer_id' holds values none of which looks like a time "
                                              ".*check which column is mapped as the time column") as e:
            run([tmp_path / "t.parquet"], tmp_path / "o", cfg)
        assert "RAWID" not in str(e.value)
    # Ids with digit groups or a month's letters among others (UUIDs, hex hashes, emails) are not times either.
    import uuid
    for ids in ([str(uuid.UUID(int=7_000_000_000 + i)) for i in range(50)], [f"may.lee{i}@x.com" for i in range(50)],
                [f"{i:04d}feb92c54bb9b38dec" for i in range(50)]):
        odd = frame.with_columns(pl.Series("customer_id", ids))
        odd.write_parquet(tmp_path / "t.parquet")
        cfg = RunConfig(columns=Columns(customer="order_id", time="customer_id", order=None), pseudonymize_ids=True)
        with pytest.raises(ConfigError, match="holds values none of which looks like a time") as e:
            run([tmp_path / "t.parquet"], tmp_path / "o", cfg)
        assert not any(i in str(e.value) for i in ids)
    # US dates with one junk value among them are quoted, and given their order, not a pattern to work out.
    us = frame.with_columns(pl.col("ts").dt.strftime("%m/%d/%Y").alias("when"))
    us.with_columns(pl.when(pl.int_range(50) == 49).then(pl.lit("unknown")).otherwise("when").alias("when")) \
        .write_parquet(tmp_path / "u.parquet")
    with pytest.raises(ConfigError,
                       match=r"holds times like '01/.*the month comes first: give --time-format '%m/%d/%Y'"):
        run([tmp_path / "u.parquet"], tmp_path / "o", RunConfig(columns=Columns(time="when")))
    # Times written in a form of their own (Oracle's 31-JAN-24) are still quoted, with the pattern to give.
    oracle = frame.with_columns(pl.col("ts").dt.strftime("%d-%b-%y").str.to_uppercase().alias("when"))
    oracle.write_parquet(tmp_path / "o.parquet")
    with pytest.raises(ConfigError, match=r"column 'when' holds times like '01-JAN-24' .*strftime pattern"):
        run([tmp_path / "o.parquet"], tmp_path / "o", RunConfig(columns=Columns(time="when")))


@pytest.mark.parametrize("buckets", [1, 3])
def test_a_later_file_of_times_in_another_unit_or_form_stops_the_run(tmp_path, buckets):
    """The plan judged the time column on the first file's first rows: a second file in epoch seconds among
    milliseconds was read as January 1970 (exit 0, tenures of 20,000 days), one of US dates among ISO times
    was rejected row by row (exit 0 under the reject share)."""
    base = dt.datetime(2024, 1, 1)
    times = [base + dt.timedelta(hours=7 * i) for i in range(3000)]
    frame = pl.DataFrame({"customer_id": [i % 300 for i in range(3000)], "ts": times, "amount": [5.0] * 3000})
    ms = frame.with_columns(pl.col("ts").dt.epoch("ms"))
    for name, first, second, fmt, needle in [
            ("epoch", ms.head(2000), ms.tail(1000).with_columns(pl.col("ts") // 1000), "epoch_ms", "give --time-format "
             "epoch_s"),
            ("text", frame.head(2000).with_columns(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M")),
             frame.tail(1000).with_columns(pl.col("ts").dt.to_string("%m/%d/%Y %H:%M")), None, "not ISO 8601"),
            # A pattern given: a later file written another way was quarantined row by row, exit 0.
            ("pattern", frame.head(2000).with_columns(pl.col("ts").dt.to_string("%m/%d/%Y %H:%M")),
             frame.tail(1000).with_columns(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M")), "%m/%d/%Y %H:%M",
             "^--time-format '%m/%d/%Y %H:%M' does not read most times .* such as '20.*those are ISO 8601")]:
        (tmp_path / name).mkdir()
        first.write_parquet(tmp_path / name / "a.parquet")
        second.write_parquet(tmp_path / name / "b.parquet")
        cfg = RunConfig(cluster=ClusterConfig(k=2), buckets=buckets, columns=Columns(time_format=fmt))
        with pytest.raises(ConfigError, match=needle):
            run([tmp_path / name], tmp_path / f"o{name}", cfg)
        assert not (tmp_path / f"o{name}").exists()
        first.write_parquet(tmp_path / name / "b.parquet")   # both in the first one's unit or form: read
        assert run([tmp_path / name], tmp_path / f"o{name}", cfg).manifest["rows"]["used"] == 4000


def test_times_are_judged_in_the_input_as_read_whatever_the_buckets(tmp_path):
    # Judged in each bucket's scratch, whose chunks mix files by customer, 40% of customers writing ISO times
    # among US ones passed with 1 or 2 buckets and stopped with 4 or 8. Placeholders without a digit, or all of
    # one value, are not another way of writing times: their rows are quarantined.
    base = dt.datetime(2024, 1, 1)
    frame = pl.DataFrame({"customer_id": [i % 40 for i in range(400)],
                          "ts": [base + dt.timedelta(hours=13 * i) for i in range(400)], "amount": [5.0] * 400})
    iso = pl.col("customer_id") < 16
    frame.with_columns(pl.when(iso).then(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M"))
                       .otherwise(pl.col("ts").dt.to_string("%m/%d/%Y %H:%M")).alias("ts")).write_parquet(
        tmp_path / "t.parquet")
    placeholders = pl.when(pl.int_range(400) < 300).then(pl.lit("N/A")).when(pl.int_range(400) < 360) \
        .then(pl.lit("0")).otherwise(pl.col("ts").dt.to_string("%m/%d/%Y %H:%M"))
    frame.with_columns(placeholders.alias("ts")).write_parquet(tmp_path / "placeholders.parquet")
    # One day's file written in ISO is all one value, and a time: refused, not taken for a placeholder.
    frame.with_columns(pl.lit("2024-03-01 10:00").alias("ts")).write_parquet(tmp_path / "oneday.parquet")
    cols = Columns(time_format="%m/%d/%Y %H:%M", order=None, channel=None, category=None)
    with pytest.raises(ConfigError, match="those are ISO 8601"):
        validate([tmp_path / "oneday.parquet"], RunConfig(columns=cols))
    for name, used in (("t.parquet", 240), ("placeholders.parquet", 40)):
        for buckets in (1, 2, 4, 8):
            cfg = RunConfig(columns=cols, buckets=buckets, max_reject_share=1.0)
            assert validate([tmp_path / name], cfg).rows_used == used, (name, buckets)


@pytest.mark.parametrize("buckets", [1, 3])
def test_side_tables_are_held_to_the_transactions_rules(small_data, tmp_path, buckets):
    """Events in milliseconds read as epoch_s (every time past year 9999) left every customer without sessions,
    exit 0; an events or customers-table id 12.7 was cast to 12 (another customer's sessions and region, exit
    0); a list attribute failed the run after its every stage (exit 1)."""
    from segmint.engine.config import CustomerSource, EventSource

    events = pl.read_parquet(small_data / "events")
    customers = pl.read_parquet(small_data / "customers.parquet")
    events.with_columns(pl.col("ts").dt.epoch("ms")).write_parquet(tmp_path / "ms.parquet")
    frac = pl.when(pl.int_range(pl.len()) == 3).then(12.7).otherwise(pl.col("customer_id").cast(pl.Float64))
    events.with_columns(frac.alias("customer_id")).write_parquet(tmp_path / "ev_frac.parquet")
    customers.with_columns(frac.alias("customer_id")).write_parquet(tmp_path / "cust_frac.parquet")
    customers.with_columns(tags=pl.lit(["a"])).write_parquet(tmp_path / "cust_list.parquet")
    customers.with_columns(tags=pl.lit(dt.timedelta(days=1))).write_parquet(tmp_path / "cust_duration.parquet")
    # Logged-out visitors (events of no customer) are most of some sites' events: no reason to stop.
    anonymous = pl.when(pl.int_range(pl.len()) % 5 < 3).then(None).otherwise(pl.col("customer_id"))
    events.with_columns(anonymous.alias("customer_id")).write_parquet(tmp_path / "anonymous.parquet")
    no_time = pl.when(pl.int_range(pl.len()) % 5 < 3).then(None).otherwise(pl.col("ts"))
    events.with_columns(no_time.alias("ts")).write_parquet(tmp_path / "no_time.parquet")
    no_type = pl.when(pl.int_range(pl.len()) % 5 < 3).then(None).otherwise(pl.col("event_type"))
    events.with_columns(no_type.alias("event_type")).write_parquet(tmp_path / "no_type.parquet")
    base = RunConfig(cluster=ClusterConfig(k=3), buckets=buckets)
    ev = lambda path, fmt=None: EventSource(paths=(str(tmp_path / path),), time_format=fmt)  # noqa: E731
    cust = lambda path, attrs=("region",): CustomerSource(paths=(str(tmp_path / path),), attributes=attrs)  # noqa: E731
    for cfg, error, needle in [
            (dataclasses.replace(base, events=ev("ms.parquet", "epoch_s")), ConfigError,
             r"--event-time-format epoch_s reads under 98 in 100 of the sampled times .*give --event-time-format "
             r"epoch_ms"),
            (dataclasses.replace(base, events=ev("no_time.parquet")), InputContractError,
             r"event rows of a customer up to the as-of .* were rejected \(null_timestamp: .*--event-time-format"),
            # Told to check the time column and its format (helper sweep).
            (dataclasses.replace(base, events=ev("no_type.parquet")), InputContractError,
             r"were rejected \(null_event_type: .*; check the events' event type column \(--event-type-col\)"),
            (dataclasses.replace(base, events=ev("ev_frac.parquet")), InputContractError,
             "customer id column 'customer_id' of the events input is Float64 and ids are not whole"),
            (dataclasses.replace(base, customers=cust("cust_frac.parquet")), InputContractError,
             "of the customers table is Float64 and ids are not whole numbers .*1 in the part read before stopping"
             r"\); ids are never rounded: fix the column$"),
            (dataclasses.replace(base, customers=cust("cust_list.parquet", ("tags",))), InputContractError,
             "attribute 'tags' .* is List"),
            (dataclasses.replace(base, customers=cust("cust_duration.parquet", ("tags",))), InputContractError,
             "attribute 'tags' .* is Duration")]:
        with pytest.raises(error, match=needle):
            run([small_data / "transactions"], tmp_path / "o", cfg)
        assert not (tmp_path / "o").exists()
    counts = run([small_data / "transactions"], tmp_path / "o", dataclasses.replace(base, events=ev(
        "anonymous.parquet"))).manifest["events"]["rows"]
    assert counts["rejected_by_reason"]["null_customer_id"] > counts["used"]
    # Events dated after the run's start are after the derived as-of too: left out of the share as with that as-of
    # given (they stopped the run without --as-of, exit 3, and not with it).
    later = dt.datetime.now() + dt.timedelta(days=3650)
    events.with_columns(pl.when(pl.int_range(pl.len()) % 5 < 3).then(later).otherwise(pl.col("ts")).alias("ts")) \
        .write_parquet(tmp_path / "future.parquet")
    counts = run([small_data / "transactions"], tmp_path / "o", dataclasses.replace(base, events=ev(
        "future.parquet"), overwrite=True)).manifest["events"]["rows"]
    assert counts["rejected_by_reason"]["future_timestamp"] > counts["used"] > 0


def test_commands_that_read_no_side_tables_leave_them_alone_whatever_the_buckets(small_data, tmp_path):
    # validate, cohorts and clv use neither events nor a customers table: with several buckets a configuration's
    # events were partitioned and judged all the same, so events in a wrong unit stopped validate with 4 buckets
    # and not with 1.
    from segmint.engine.config import EventSource
    from segmint.engine.pipeline import compute_cohorts

    events = pl.read_parquet(small_data / "events").with_columns(pl.col("ts").dt.epoch("s"))
    events.write_parquet(tmp_path / "s.parquet")
    wrong = EventSource(paths=(str(tmp_path / "s.parquet"),), time_format="epoch_ms")
    used = {b: validate([small_data / "transactions"], RunConfig(buckets=b, events=wrong)).rows_used for b in (1, 4)}
    assert used[1] == used[4] > 0
    cohorts = [compute_cohorts([small_data / "transactions"], tmp_path / f"c{b}", RunConfig(buckets=b, events=wrong))
               .cohorts for b in (1, 4)]
    assert cohorts[0].equals(cohorts[1])
    with pytest.raises(ConfigError, match="--event-time-format epoch_ms puts"):   # run reads them: judged
        run([small_data / "transactions"], tmp_path / "o", RunConfig(buckets=4, events=wrong))


@pytest.mark.parametrize("buckets", [1, 3])
def test_a_later_events_file_of_times_in_another_unit_stops_the_run(small_data, tmp_path, buckets):
    """As for transactions: a second events file in epoch seconds among milliseconds was read as January 1970,
    and sessions, page views and funnel stages came out wrong with exit 0."""
    from segmint.engine.config import EventSource

    events = pl.read_parquet(small_data / "events").with_columns(pl.col("ts").dt.epoch("ms"))
    (tmp_path / "ev").mkdir()
    half = events.height // 2
    events.head(half).write_parquet(tmp_path / "ev" / "a.parquet")
    events.tail(events.height - half).with_columns(pl.col("ts") // 1000).write_parquet(tmp_path / "ev" / "b.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=3), buckets=buckets,
                    events=EventSource(paths=(str(tmp_path / "ev"),), time_format="epoch_ms"))
    with pytest.raises(ConfigError, match="--event-time-format epoch_ms puts .* give --event-time-format epoch_s"):
        run([small_data / "transactions"], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()


def test_events_none_of_which_is_usable_stop_the_run_but_a_back_test_s_later_events_do_not(small_data, tmp_path):
    # Events dated a decade on (a wrong unit or year) are all future_timestamp, which the events' reject share leaves
    # out: every customer's sessions, page views and conversions were 0, exit 0 (helper sweep). Events all after the
    # as-of are a back-test's, an export starting later (review): no event up to it, as the as-of sees them.
    from segmint.engine.config import EventSource

    (tmp_path / "ev").mkdir()
    events = pl.read_parquet(small_data / "events")
    events.with_columns(ts=pl.col("ts") + pl.duration(days=3650)).write_parquet(tmp_path / "ev" / "e.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=3), events=EventSource(paths=(str(tmp_path / "ev"),)))
    with pytest.raises(InputContractError, match=rf"none of the {events.height:,} event rows is an event of a "
                                                 rf"customer up to the as-of \(future_timestamp: {events.height:,}\)"):
        run([small_data / "transactions"], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()
    accepted = run([small_data / "transactions"], tmp_path / "all", dataclasses.replace(cfg, max_reject_share=1.0))
    assert accepted.manifest["events"]["rows"]["used"] == 0
    # Logged-out visitors' events beside them (review: they made the back-test stop).
    anonymous = pl.when(pl.int_range(pl.len()) % 10 == 0).then(None).otherwise(pl.col("customer_id"))
    events.with_columns(ts=pl.lit(dt.datetime(2026, 9, 1)), customer_id=anonymous).write_parquet(
        tmp_path / "ev" / "e.parquet")
    later = run([small_data / "transactions"], tmp_path / "later", cfg)   # the transactions end on 2026-06-30
    rejected = later.manifest["events"]["rows"]["rejected_by_reason"]
    assert rejected["after_as_of"] + rejected["null_customer_id"] == events.height and rejected["null_customer_id"]
    sessions = pl.read_parquet(tmp_path / "later" / "assignments")["sessions"]
    assert sessions.len() > 0 and (sessions == 0).all()


def test_a_feature_named_twice_is_refused_where_the_config_is_read():
    # It weighed twice in every distance, exit 0.
    with pytest.raises(ConfigError, match=r"names \['frequency'\] more than once"):
        FeatureConfig(cluster_features=("frequency", "recency_days", "frequency"))
    with pytest.raises(ConfigError, match=r"log_features names \['rfm_code'\], which are not features"):
        from segmint.engine.preprocess import fit_scaler

        fit_scaler(pl.DataFrame({"customer_id": [1, 2], "frequency": [1.0, 2.0], "rfm_code": ["545", "111"]}),
                   ["frequency"], ["rfm_code"])


def test_config_file_spellings_of_one_setting_are_one_setting(tmp_path):
    from segmint.engine.config import config_hash

    # '' leaves an optional column out, as --channel-col '' does: it named a column '' (exit 3).
    (tmp_path / "c.toml").write_text('[columns]\nchannel = ""\norder = ""\n[cluster]\nmicro_k = "AUTO"\n')
    cfg = load_toml(tmp_path / "c.toml")
    assert cfg.columns.channel is None and cfg.columns.order is None and cfg.columns.category == "category"
    assert cfg.cluster.micro_k == "auto"   # as --micro-k AUTO and k = "AUTO" are taken
    # 30 and 30.0 are one setting: the hash, --resume's fingerprint among them, told them apart.
    hashes = set()
    for days in ("30", "30.0"):
        (tmp_path / "c.toml").write_text(f"[lifecycle]\nnew_days = {days}\n[clv]\nhorizon = 52\n")
        hashes.add(config_hash(load_toml(tmp_path / "c.toml")))
    assert len(hashes) == 1 and hashes == {config_hash(RunConfig(clv=ClvConfig(horizon=52.0)))}


def test_config_file_conveniences_are_read_as_meant(tmp_path):
    (tmp_path / "c.toml").write_text('[run]\nmemory_limit = "2GB"\nas_of = 2024-06-30\ndedupe_on = "customer_id"\n'
                                     '[cluster]\nk = "auto"\nmicro_k = "auto"\n')
    cfg = load_toml(tmp_path / "c.toml")
    assert cfg.memory_limit == 2_000_000_000 and cfg.as_of == "2024-06-30"
    assert cfg.dedupe_on == ("customer_id",)  # one column, not its characters
    assert cfg.cluster.k is None and cfg.cluster.micro_k == "auto"


def test_a_symlinked_output_is_refused(small_data, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="symbolic link"):
        run([small_data / "transactions"], tmp_path / "link", RunConfig(overwrite=True))
    assert (tmp_path / "real").is_dir() and (tmp_path / "link").is_symlink()


def test_times_past_year_9999_are_quarantined_not_fatal(tmp_path):
    df = pl.DataFrame({"customer_id": [1, 2, 3], "ts": ["2024-01-01", "2024-01-02", "10000-01-01"],
                       "amount": [1.0, 2.0, 3.0]})
    df.write_csv(tmp_path / "t.csv")
    rep = validate([tmp_path / "t.csv"], RunConfig(columns=Columns(order=None, channel=None, category=None)))
    assert rep.rows_used == 2 and rep.rejected["unparseable_timestamp"] == 1
    far = pl.DataFrame({"customer_id": [1, 2], "ts": pl.Series(["2024-01-01", "9999-12-31"]).str.to_datetime(),
                        "amount": [1.0, 2.0]})
    far.write_parquet(tmp_path / "f.parquet")
    rep = validate([tmp_path / "f.parquet"], RunConfig(max_reject_share=1.0))
    assert rep.rejected["future_timestamp"] == 1 and rep.as_of.year == 2024


def test_an_unwritable_home_falls_back_for_the_kernel_cache(tmp_path, small_data):
    import shutil

    from segmint.engine.runtime import numba_cache_dir

    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    # The fallback is under the temporary directory; seeded with this session's compiled kernels so the
    # command below loads them instead of compiling every kernel again (20 s on a fresh machine).
    tmp = tmp_path / "tmp"
    shutil.copytree(numba_cache_dir(), tmp / f"segmint-numba-{os.getuid()}")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"HOME": str(home), "TMPDIR": str(tmp)}
    code = ("from segmint.engine.runtime import numba_cache_dir; import tempfile; d = numba_cache_dir(); "
            "assert str(d).startswith(tempfile.gettempdir()), d; print(d)")
    if os.geteuid() == 0:  # root writes anywhere: make the home a file instead, which nobody can mkdir under
        home.rmdir()
        home.write_text("")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    r = subprocess.run([sys.executable, "-m", "segmint.cli.app", "validate", str(small_data / "transactions")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_k_auto_respects_the_minimum_share_in_the_final_fit(small_data, tmp_path):
    result = run([small_data / "transactions"], tmp_path / "o",
                 RunConfig(cluster=ClusterConfig(k=None, min_segment_share=0.05)))
    sizes = pl.read_parquet(tmp_path / "o" / "profiles.parquet")["share"]
    assert sizes.min() >= 0.05 and 4 <= result.manifest["k"] <= 16
    scan = result.manifest["k_scan"]
    assert [r["k"] for r in scan] == list(range(4, 17))
    assert all(r["eligible"] == (r["min_share"] >= 0.05) for r in scan)


# The hostile-input sweep of issue #20: each used to end in exit 1 ("unexpected") or a crash.

def _lines(n_customers: int = 50, lines: int = 4) -> pl.DataFrame:
    n = n_customers * lines
    step = dt.timedelta(days=600) / n
    return pl.DataFrame({"customer_id": np.arange(n) % n_customers,
                         "ts": [dt.datetime(2024, 1, 1) + i * step for i in range(n)],
                         "amount": np.linspace(1.0, 100.0, n), "order_id": np.arange(n)})


@pytest.mark.parametrize(("unit", "per_second"), [("epoch_s", 1), ("epoch_ms", 1000), ("epoch_us", 10**6)])
def test_epoch_times_outside_the_datetime_range_are_quarantined(tmp_path, unit, per_second):
    # A Unix time in the wrong unit is ~1000x too large: year 55,000 and beyond, or a wrap-around.
    valid = [1_700_000_000 * per_second, 1_700_086_400 * per_second, 1_700_172_800 * per_second]
    invalid = [2**62, -(2**62), 20_000 * 365 * 86_400 * per_second]
    pl.DataFrame({"customer_id": [1, 1, 5, 2, 3, 4], "ts": valid[:2] + valid[2:] + invalid,
                  "amount": [1.0] * 6}).write_parquet(tmp_path / "t.parquet")
    rep = validate([tmp_path / "t.parquet"], RunConfig(columns=Columns(time_format=unit, order=None, channel=None,
                                                                       category=None), max_reject_share=1.0))
    assert rep.rows_used == 3 and rep.rejected["unparseable_timestamp"] == 3
    assert rep.first_ts == dt.datetime(2023, 11, 14, 22, 13, 20) and rep.last_ts == dt.datetime(2023, 11, 16, 22, 13, 20)


def test_a_datetime_column_outside_years_1_to_9999_is_quarantined(tmp_path):
    far = pl.Series([-5000 * 365 * 86_400 * 10**6, 1_700_000_000 * 10**6, 20_000 * 365 * 86_400 * 10**6]).cast(
        pl.Datetime("us"))
    pl.DataFrame({"customer_id": [1, 2, 3], "ts": far, "amount": [1.0] * 3}).write_parquet(tmp_path / "t.parquet")
    rep = validate([tmp_path / "t.parquet"], RunConfig(max_reject_share=1.0))
    assert rep.rows_used == 1 and rep.rejected["unparseable_timestamp"] == 2


def test_amounts_near_the_float_maximum_are_quarantined_or_refused_never_nan(tmp_path):
    huge = _lines().with_columns(amount=pl.when(pl.col("customer_id") < 2).then(1e308).otherwise(pl.col("amount")))
    huge.write_parquet(tmp_path / "huge.parquet")
    rep = validate([tmp_path / "huge.parquet"], RunConfig())
    assert rep.rejected["amount_overflow"] == 8 and rep.rejected_amount["amount_overflow"] is None
    out = tmp_path / "o"
    result = run([tmp_path / "huge.parquet"], out, RunConfig(cluster=ClusterConfig(k=3), clv=ClvConfig(enabled=False)))
    assert result.manifest["rows"]["rejected_amount_by_reason"]["amount_overflow"] is None
    json.loads((out / "run.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    # Two customers whose own totals are finite but whose sum is not: refused, not inf or NaN.
    pl.DataFrame({"customer_id": [1, 2, 3], "ts": [dt.datetime(2024, 1, d) for d in (1, 2, 3)],
                  "amount": [1.5e308, 1.5e308, 1.0]}).write_parquet(tmp_path / "sum.parquet")
    with pytest.raises(InputContractError, match="sums beyond the float range"):
        run([tmp_path / "sum.parquet"], tmp_path / "o2", RunConfig(cluster=ClusterConfig(k=1),
                                                                    clv=ClvConfig(enabled=False)))
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("k", [3, None])
def test_customers_all_alike_are_refused_naming_the_fix(tmp_path, k):
    n = 200
    pl.DataFrame({"customer_id": np.arange(n), "ts": [dt.datetime(2024, 1, 1)] * n, "amount": [10.0] * n,
                  "order_id": np.arange(n)}).write_parquet(tmp_path / "same.parquet")
    with pytest.raises(InputContractError, match=r"only 1 distinct value\(s\) of the clustering features.*lower --k"):
        run([tmp_path / "same.parquet"], tmp_path / "o", RunConfig(cluster=ClusterConfig(k=k)))
    assert not (tmp_path / "o").exists()


def test_hive_partition_keys_are_columns(tmp_path):
    lines = _lines()
    for channel, part in (("web", lines.filter(pl.col("customer_id") % 2 == 0)),
                          ("store", lines.filter(pl.col("customer_id") % 2 == 1))):
        (tmp_path / "tx" / f"channel={channel}").mkdir(parents=True)
        part.write_parquet(tmp_path / "tx" / f"channel={channel}" / "part.parquet")
    result = run([tmp_path / "tx"], tmp_path / "o", RunConfig(cluster=ClusterConfig(k=2), clv=ClvConfig(enabled=False)))
    shares = pl.read_parquet(tmp_path / "o" / "assignments").sort("customer_id")
    assert result.manifest["columns"]["channel"] == "channel"
    assert shares["channel_share_web"].to_list() == [float(c % 2 == 0) for c in range(50)]
    # A column the files hold wins over a folder of the same name.
    (tmp_path / "tx2" / "channel=ignored").mkdir(parents=True)
    lines.with_columns(channel=pl.lit("app")).write_parquet(tmp_path / "tx2" / "channel=ignored" / "p.parquet")
    run([tmp_path / "tx2"], tmp_path / "o2", RunConfig(cluster=ClusterConfig(k=2), clv=ClvConfig(enabled=False)))
    assert "channel_share_app" in pl.read_parquet(tmp_path / "o2" / "assignments").columns


def test_a_category_with_a_level_per_line_is_linear_and_exact(tmp_path):
    # A SKU mapped as the category: as many levels as lines. Every customer bought 4 distinct ones.
    lines = _lines(n_customers=2000).with_columns(category=pl.format("sku-{}", pl.int_range(pl.len())))
    lines.write_parquet(tmp_path / "sku.parquet")
    run([tmp_path / "sku.parquet"], tmp_path / "o", RunConfig(cluster=ClusterConfig(k=3), clv=ClvConfig(enabled=False)))
    table = pl.read_parquet(tmp_path / "o" / "assignments")
    assert (table["category_count"] == 4).all()
    assert np.allclose(table["category_entropy"].to_numpy(), np.log(4), rtol=0, atol=1e-15)


def test_messages_carry_no_id_and_no_secret(tmp_path):
    pl.DataFrame({"customer_id": [1.0, 123456.5], "ts": [dt.datetime(2024, 1, 1)] * 2,
                  "amount": [1.0, 2.0]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputContractError) as err:
        validate([tmp_path / "t.parquet"], RunConfig())
    assert "not whole numbers" in str(err.value) and "123456" not in str(err.value)
    from segmint.cli._options import parse_storage_options

    with pytest.raises(ConfigError) as err:
        parse_storage_options(["aws_secret_access_key:hunter2"])
    assert "hunter2" not in str(err.value) and "KEY=VALUE" in str(err.value)


@pytest.mark.parametrize("rows_first", [100, 0])
def test_an_optional_column_in_some_files_only_is_refused_not_dropped(tmp_path, rows_first):
    # The first file's schema alone decided: its lacking order ids (or channels, in an empty file) unmapped the
    # role for every file, and the others' orders and channels were silently dropped (exit 0).
    lines = _lines().with_columns(channel=pl.lit("web"))
    for name, column in (("order", "order_id"), ("channel", "channel")):
        folder = tmp_path / name
        folder.mkdir()
        lines.head(rows_first).drop(column).write_parquet(folder / "a.parquet")
        lines.slice(rows_first).write_parquet(folder / "b.parquet")
        with pytest.raises(InputContractError, match=f"'{column}' .*not found in .*a.parquet; .*b.parquet has it"):
            run([folder], tmp_path / f"o-{name}", RunConfig(cluster=ClusterConfig(k=2)))
        assert not (tmp_path / f"o-{name}").exists()
    # A column that no file has is unmapped, as before.
    lines.drop("order_id").write_parquet(tmp_path / "none.parquet")
    result = run([tmp_path / "none.parquet"], tmp_path / "o", RunConfig(cluster=ClusterConfig(k=2)))
    assert result.manifest["columns"]["order"] is None


def test_an_empty_file_of_null_columns_is_read_as_no_rows(tmp_path):
    # pandas writes an empty frame's columns as Null: the file was refused as another schema, though it adds
    # nothing; first or not.
    lines = _lines().with_columns(channel=pl.lit("web"))
    empty = pl.DataFrame({c: pl.Series([], dtype=pl.Null) for c in lines.columns})
    whole = run([_write(tmp_path / "whole", [lines])], tmp_path / "o-whole", RunConfig(cluster=ClusterConfig(k=2)))
    for at in (0, 1, 2):
        parts = [lines.head(100), lines.slice(100)]
        parts.insert(at, empty)
        result = run([_write(tmp_path / f"in{at}", parts)], tmp_path / f"o{at}", RunConfig(cluster=ClusterConfig(k=2)))
        assert result.manifest["rows"] == whole.manifest["rows"]
        assert pl.read_parquet(tmp_path / f"o{at}" / "assignments").equals(
            pl.read_parquet(tmp_path / "o-whole" / "assignments"))
    # Its types are not compared, but its columns are there: one lacking a mapped column is still refused.
    parts = [empty.drop("channel"), lines]
    with pytest.raises(InputContractError, match="'channel' .*not found in .*0.parquet; .*1.parquet has it"):
        run([_write(tmp_path / "lacking", parts)], tmp_path / "o-lacking", RunConfig(cluster=ClusterConfig(k=2)))


def _write(folder, frames):
    folder.mkdir()
    for i, frame in enumerate(frames):
        frame.write_parquet(folder / f"{i}.parquet")
    return folder


def test_assign_needs_every_column_the_model_was_trained_with(small_run, small_data, tmp_path):
    from segmint.engine.pipeline import assign_customers

    lines = pl.read_parquet(small_data / "transactions")
    for column in ("order_id", "channel", "category"):
        lines.drop(column).write_parquet(tmp_path / f"no-{column}.parquet")
        with pytest.raises(InputContractError, match=f"'{column}' not found in .*the model was trained with it"):
            assign_customers(small_run / "model", [tmp_path / f"no-{column}.parquet"], tmp_path / f"o-{column}",
                             RunConfig())
        assert not (tmp_path / f"o-{column}").exists()


def test_column_types_segmint_cannot_read_are_refused_in_one_line(tmp_path):
    # Each went up as exit 1: a Rust panic with a traceback (decimal256, a +05:30 zone) or a KeyError deep in
    # the map (a list or struct per line).
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 40
    base = {"customer_id": pa.array(np.arange(n) % 5), "amount": pa.array(np.linspace(1.0, 9.0, n)),
            "ts": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(days=i) for i in range(n)], pa.timestamp("us"))}
    cases = {
        "amount": (pa.array([decimal.Decimal("1.25")] * n, pa.decimal256(40, 2)), "wider than the 38 digits"),
        "channel": (pa.array([["web"]] * n), "one text or number per line"),
        "category": (pa.array([{"a": 1}] * n), "one text or number per line"),
        "ts": (pa.array(base["ts"].cast(pa.int64()), pa.int64()).cast(pa.timestamp("us", "+05:30")),
               "time zone '\\+05:30', which Polars cannot read"),
        "order_id": (pa.array([decimal.Decimal(i) for i in range(n)], pa.decimal256(50, 0)), "wider than the 38"),
        # Not mapped, but Polars reads every column's schema: a zone inside a struct panicked the same way.
        "extra": (pa.StructArray.from_arrays([base["ts"].cast(pa.timestamp("us", "-03:30"))], ["at"]),
                  "'extra' .* time zone '-03:30'"),
    }
    for column, (values, needle) in cases.items():
        pq.write_table(pa.table({**base, column: values}), tmp_path / f"{column}.parquet")
        with pytest.raises(InputContractError, match=needle):
            validate([tmp_path / f"{column}.parquet"], RunConfig())
    # A whole-hour offset is a zone Polars names (Etc/GMT+8): read as any other.
    pq.write_table(pa.table({**base, "ts": base["ts"].cast(pa.int64()).cast(pa.timestamp("us", "-08:00"))}),
                   tmp_path / "hour.parquet")
    assert validate([tmp_path / "hour.parquet"], RunConfig()).rows_used == n
    # A side table's columns too.
    from segmint.engine.config import CustomerSource
    from segmint.engine.io import contract

    pq.write_table(pa.table({"customer_id": pa.array([decimal.Decimal(1)], pa.decimal256(40, 0)),
                             "region": ["north"]}), tmp_path / "customers.parquet")
    with pytest.raises(InputContractError, match="wider than the 38"):
        contract.customers(CustomerSource(paths=(str(tmp_path / "customers.parquet"),), attributes=("region",)))


def test_text_view_columns_are_read_as_text(tmp_path):
    # A file written from string_view columns keeps the type; Arrow's take has no kernel for it (exit 1).
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = _lines().with_columns(pl.format("c{}", "customer_id").alias("customer_id"),
                                  pl.format("o{}", "order_id").alias("order_id"))
    table = lines.to_arrow()
    pq.write_table(table, tmp_path / "plain.parquet")
    views = table.cast(pa.schema([f.with_type(pa.string_view()) if pa.types.is_large_string(f.type) else f
                                  for f in table.schema]))
    pq.write_table(views, tmp_path / "views.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=2), clv=ClvConfig(enabled=False), buckets=2)
    for name in ("plain", "views"):
        run([tmp_path / f"{name}.parquet"], tmp_path / name, cfg)
    read = [pl.read_parquet(tmp_path / name / "assignments").sort("customer_id") for name in ("plain", "views")]
    assert read[0].equals(read[1])


def test_integer_amounts_beyond_two_to_the_53_are_their_nearest_float(tmp_path):
    # Arrow's safe cast refused them (exit 1, 'unexpected ArrowInvalid'); Polars, where rows are parsed, rounds.
    amounts = [2**63 - 1, 2**53 + 1, 5, 7]
    pl.DataFrame({"customer_id": [1, 2, 3, 3], "ts": [dt.datetime(2024, 1, d) for d in (1, 2, 3, 4)],
                  "amount": pl.Series(amounts, dtype=pl.Int64)}).write_parquet(tmp_path / "t.parquet")

    compute_feature_table([tmp_path / "t.parquet"], tmp_path / "o", RunConfig(as_of="2024-02-01"))
    table = pl.read_parquet(tmp_path / "o" / "features").sort("customer_id")
    assert table["monetary_total"].to_list() == [float(2**63 - 1), float(2**53 + 1), 12.0]


@pytest.mark.parametrize(("given", "values", "fix"), [("epoch_ms", "s", "epoch_s"), ("epoch_us", "ms", "epoch_ms"),
                                                       ("epoch_ns", "us", "epoch_us"), ("epoch_ns", "s", "epoch_s"),
                                                       ("epoch_us", "s", "epoch_s")])
def test_an_epoch_unit_a_thousand_times_too_fine_is_refused(tmp_path, given, values, fix):
    # Unix seconds read as milliseconds put every purchase in January 1970, and the run went on (exit 0).
    cols = _daily_epochs(tmp_path / "t.parquet", values, given)
    with pytest.raises(ConfigError, match=f"--time-format {given} puts the sampled times .* in 1970.*give "
                                          f"--time-format {fix}"):
        validate([tmp_path / "t.parquet"], RunConfig(columns=cols))
    assert validate([tmp_path / "t.parquet"], RunConfig(columns=Columns(
        time_format=fix, order=None, channel=None, category=None))).rows_used == 40
    # A first file without readable times says nothing: the next one is judged.
    (tmp_path / "d").mkdir()
    pl.DataFrame({"customer_id": [9, 9], "ts": [None, None], "amount": [1.0, 1.0]},
                 schema_overrides={"ts": pl.Int64}).write_parquet(tmp_path / "d" / "a.parquet")
    (tmp_path / "t.parquet").rename(tmp_path / "d" / "b.parquet")
    with pytest.raises(ConfigError, match=f"give --time-format {fix}"):
        validate([tmp_path / "d"], RunConfig(columns=cols, max_reject_share=1.0))


@pytest.mark.parametrize(("given", "values"), [("epoch_s", "ms"), ("epoch_s", "us"), ("epoch_ms", "us"),
                                               ("epoch_us", "ns"), ("epoch_s", "ns")])
def test_an_epoch_unit_a_thousand_times_too_coarse_is_refused_naming_the_unit(tmp_path, given, values):
    # Milliseconds read as seconds land past year 9999: every row was quarantined and the run stopped with
    # "check the time column and --time-format", naming no unit (a model's epoch_s given a batch in ms alike).
    cols = _daily_epochs(tmp_path / "t.parquet", values, given)
    with pytest.raises(ConfigError, match=f"--time-format {given} reads under 98 in 100 of the sampled times of "
                                          f"column 'ts' .*give --time-format epoch_{values}$"):
        validate([tmp_path / "t.parquet"], RunConfig(columns=cols))


def _daily_epochs(path, unit: str, given: str) -> Columns:
    """40 daily Unix times from November 2023 in ``unit`` at ``path``; the mapping that reads them as ``given``."""
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    seconds = 1_700_000_000 + np.arange(40) * 86_400
    pl.DataFrame({"customer_id": np.arange(40) % 5, "ts": seconds * per_second, "amount": np.ones(40)}).write_parquet(
        path)
    return Columns(time_format=given, order=None, channel=None, category=None)


def test_one_stray_value_does_not_let_a_unit_too_fine_through(tmp_path):
    # The latest sampled time decided: one 99999999999999999 (year 5138 as microseconds) and every purchase of
    # the 200 others was read in January 1970, exit 0.
    ms = np.append((1_700_000_000 + np.arange(200) * 86_400) * 1000, 99_999_999_999_999_999)
    pl.DataFrame({"customer_id": np.arange(201) % 5, "ts": ms, "amount": np.ones(201)}).write_parquet(
        tmp_path / "t.parquet")
    cols = Columns(time_format="epoch_us", order=None, channel=None, category=None)
    with pytest.raises(ConfigError, match="give --time-format epoch_ms"):
        validate([tmp_path / "t.parquet"], RunConfig(columns=cols))


@pytest.mark.parametrize(("given", "per_second"), [("epoch_ms", 10**3), ("epoch_us", 10**6), ("epoch_ns", 10**9)])
def test_a_minority_of_values_in_a_coarser_unit_is_quarantined_not_read_in_1970(tmp_path, given, per_second):
    # One row in five in Unix seconds among finer times: the chunk passed the unit check (its middle 98% reach
    # 2023) and those rows were read as January 1970: tenures of 19,700 days, exit 0.
    seconds = 1_700_000_000 + np.arange(200) * 86_400
    stray = np.arange(200) % 5 == 0
    ts = np.where(stray, seconds, seconds * per_second)
    pl.DataFrame({"customer_id": np.arange(200) % 10, "ts": ts, "amount": np.ones(200)}).write_parquet(
        tmp_path / "t.parquet")
    cfg = RunConfig(columns=Columns(time_format=given, order=None, channel=None, category=None),
                    as_of="2024-06-01")
    report = validate([tmp_path / "t.parquet"], cfg)
    assert report.rejected["unparseable_timestamp"] == 40 and report.rows_used == 160
    assert report.first_ts == dt.datetime(2023, 11, 15, 22, 13, 20)
    compute_feature_table([tmp_path / "t.parquet"], tmp_path / "o", cfg)
    assert pl.read_parquet(tmp_path / "o" / "features")["tenure_days"].max() < 200
    rejects = pl.read_parquet(tmp_path / "o" / "rejects")
    assert rejects.height == 40 and rejects["ts"].to_list() == seconds[stray].tolist()


def test_times_of_1970_in_a_fine_unit_are_taken_as_given(tmp_path):
    # Read as seconds they would fall in 1973, no likelier: nothing to correct.
    pl.DataFrame({"customer_id": np.arange(40) % 5, "ts": 100_000_000 + np.arange(40) * 3_600_000,
                  "amount": np.ones(40)}).write_parquet(tmp_path / "t.parquet")
    cols = Columns(time_format="epoch_ms", order=None, channel=None, category=None)
    report = validate([tmp_path / "t.parquet"], RunConfig(columns=cols, as_of="1970-03-01"))
    assert report.rows_used == 40 and report.first_ts.year == 1970


def test_one_segment_has_no_margin_rather_than_an_infinite_one(tmp_path):
    # k=1 wrote margin +inf into the assignments (compare then warned of an invalid subtraction).
    _lines().write_parquet(tmp_path / "t.parquet")
    for k in (1, 2):
        run([tmp_path / "t.parquet"], tmp_path / f"o{k}", RunConfig(cluster=ClusterConfig(k=k)))
        margin = pl.read_parquet(tmp_path / f"o{k}" / "assignments")["margin"]
        assert margin.dtype == pl.Float32 and margin.len() == 50
        assert margin.null_count() == 50 if k == 1 else margin.is_finite().all()


def test_a_memory_limit_too_low_is_quoted_in_the_unit_it_was_given_in(tmp_path):
    # --memory-limit reads MB as 10^6 bytes: 20MB was quoted back as "19MB", and the least to give in MiB.
    from segmint.engine.config import parse_size
    from segmint.engine.runtime import current_rss

    _lines().write_parquet(tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match=r"^--memory-limit 20MB is below .*; give at least (\d+)MB$") as err:
        run([tmp_path / "t.parquet"], tmp_path / "o", RunConfig(memory_limit=parse_size("20MB")))
    least = int(str(err.value).rsplit(" ", 1)[1][:-2])
    assert least * 10**6 > current_rss() and least % 10 == 0
    # The least quoted is not refused when given (quoted to the MB, it was: the process's memory varies).
    run([tmp_path / "t.parquet"], tmp_path / "least", RunConfig(memory_limit=least * 10**6, cluster=ClusterConfig(k=2)))
    with pytest.raises(ConfigError, match=r"^--memory-limit 1,000 bytes is below"):   # it read "0MB"
        run([tmp_path / "t.parquet"], tmp_path / "o", RunConfig(memory_limit=parse_size("1KB")))


def test_a_k_beyond_the_customers_names_the_k_that_applies(tmp_path):
    # A warm start keeps the previous run's k, yet the default --k 8 was named; --k auto named k=4 and "lower --k".
    _lines(n_customers=5).write_parquet(tmp_path / "five.parquet")
    _lines(n_customers=2).write_parquet(tmp_path / "two.parquet")
    run([tmp_path / "two.parquet"], tmp_path / "prev", RunConfig(cluster=ClusterConfig(k=2)))
    warm = run([tmp_path / "five.parquet"], tmp_path / "o", RunConfig(previous=str(tmp_path / "prev")))
    assert warm.manifest["k"] == 2
    run([tmp_path / "five.parquet"], tmp_path / "p6", RunConfig(cluster=ClusterConfig(k=5)))
    with pytest.raises(ConfigError, match=r"^k=5 is larger than the number of customers \(2\); a warm start keeps"):
        run([tmp_path / "two.parquet"], tmp_path / "o2", RunConfig(previous=str(tmp_path / "p6")))
    with pytest.raises(ConfigError, match=r"^--k auto scans k from 4 \(\[cluster\] k_min\), more than the 2 customers"):
        run([tmp_path / "two.parquet"], tmp_path / "o3", RunConfig(cluster=ClusterConfig(k=None)))


def test_a_model_made_with_settings_now_refused_says_so_not_damaged(small_run, tmp_path):
    # A model whose run mapped one column to two roles (accepted then) was called "damaged or edited".
    import shutil

    from segmint.engine.model import Model

    model = shutil.copytree(small_run / "model", tmp_path / "model")
    doc = json.loads((model / "model.json").read_text())
    doc["columns"]["category"] = doc["columns"]["channel"]
    (model / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InputContractError, match="holds settings segmint refuses .*mapped to both"):
        Model.load(model)


def test_a_csv_side_table_beside_integer_ids_is_told_to_become_parquet(small_data, tmp_path):
    # "map id columns of the same type (--customers-id-col)" was the advice, which no column of a CSV file follows:
    # its cells are text.
    from segmint.engine.config import CustomerSource

    pl.read_parquet(small_data / "customers.parquet").write_csv(tmp_path / "customers.csv")
    cfg = RunConfig(cluster=ClusterConfig(k=3), customers=CustomerSource(paths=(str(tmp_path / "customers.csv"),),
                                                                         attributes=("region",)))
    with pytest.raises(InputContractError, match=r"has String customer ids but the transactions have Int64; write "
                                                 r"the customers table as Parquet with Int64 ids"):
        run([small_data / "transactions"], tmp_path / "o", cfg)
    assert not (tmp_path / "o").exists()


def test_the_api_takes_lists_for_tuples_and_names_a_frame_in_one_line():
    # CustomerSource(paths=["c.parquet"]) was refused (a list is not a tuple), and a DataFrame given as paths was
    # printed whole in the message, over many lines (helper sweep).
    from segmint.engine.config import CustomerSource

    assert CustomerSource(paths=["c.parquet"], attributes=["region"]) == CustomerSource(paths=("c.parquet",),
                                                                                          attributes=("region",))
    whole = [1, 2, 3, 4, 5]
    assert FeatureConfig(rfm_grid=[["All", whole, whole]]).rfm_grid == (("All", tuple(whole), tuple(whole)),)
    with pytest.raises(ConfigError, match=r"^customers.paths must be a tuple \(a list in TOML\) of strings, got a "
                                          r"DataFrame$"):
        CustomerSource(paths=pl.DataFrame({"a": range(100)}))


def test_k_and_micro_k_read_alike_from_the_api_a_config_file_and_the_cli(tmp_path):
    # TOML took k = "5" and refused micro_k = "3", the API refused both, the CLI took both; ClusterConfig(k="five")
    # read "must be an integer or None", leaving out the "auto" it takes.
    from segmint.cli._options import build_config

    (tmp_path / "c.toml").write_text('[cluster]\nk = " 5 "\nmicro_k = "3"\n')
    from_toml = load_toml(tmp_path / "c.toml").cluster
    from_cli = build_config(None, cluster={"k": "5", "micro_k": "3"}).cluster
    assert ClusterConfig(k="5", micro_k="3") == ClusterConfig(k=np.int64(5), micro_k=3) == from_toml == from_cli
    assert ClusterConfig(k="AUTO").k is None and ClusterConfig(micro_k=" Auto ").micro_k == "auto"
    for bad in ("five", "1_000", "+5", "", 8.0, True, 0):
        with pytest.raises(ConfigError, match=re.escape(f"cluster.k (--k) must be a positive integer or 'auto', "
                                                        f"got {bad!r}")):
            ClusterConfig(k=bad)


@pytest.mark.parametrize(("a", "b"), [("007", "7"), ("\u0663", "3"), ("\u00b2", "5"), ("-0", "0"), ("+4", "4")])
def test_hive_folder_values_that_one_integer_would_merge_stay_two_customers(tmp_path, a, b):
    # Folders customer_id=007 and customer_id=7 were read as Int64 7, both, and their customers' orders added up
    # (exit 0); an Arabic-Indic three joined customer 3 the same way, and a superscript two stopped the run with a
    # ValueError. Each folder is its own customer, its id the folder's text, its features those of its own rows.
    lines = _lines(n_customers=2)
    lines.write_parquet(tmp_path / "ids.parquet")
    for folder, cid in ((a, 0), (b, 1)):
        (tmp_path / "tx" / f"customer_id={folder}").mkdir(parents=True)
        lines.filter(pl.col("customer_id") == cid).drop("customer_id").write_parquet(
            tmp_path / "tx" / f"customer_id={folder}" / "part.parquet")
    cfg = RunConfig(clv=ClvConfig(enabled=False))
    compute_feature_table([tmp_path / "tx"], tmp_path / "hive", cfg)
    compute_feature_table([tmp_path / "ids.parquet"], tmp_path / "ids", cfg)
    hive = pl.read_parquet(tmp_path / "hive" / "features")
    assert hive["customer_id"].dtype == pl.String and sorted(hive["customer_id"].to_list()) == sorted([a, b])
    ids = pl.read_parquet(tmp_path / "ids" / "features")
    for folder, cid in ((a, 0), (b, 1)):
        assert hive.filter(pl.col("customer_id") == folder).drop("customer_id").to_dicts() == \
            ids.filter(pl.col("customer_id") == cid).drop("customer_id").to_dicts()
