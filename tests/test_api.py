"""The Python API a notebook uses: only ``import segmint``."""

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import polars as pl
import pytest


def test_a_notebook_runs_loads_predicts_and_reads_results(small_data, tmp_path):
    import segmint

    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=4, seed=1)))
    assert result.summary.height == 4 and result.summary["customers"].sum() == 3000
    assignments = result.assignments().collect()
    assert assignments.height == 3000 and {"segment", "distance", "clv"} <= set(assignments.columns)
    assert result.profiles()["customers"].to_list() == result.summary["customers"].to_list()
    # The recency printed beside a name is the median the name is judged by, not the mean.
    assert result.profiles()["recency_days_median"].to_list() == result.summary["recency_days_median"].to_list()
    assert not list(tmp_path.glob(".segmint-input-*"))  # the in-memory input was spilled and removed

    model = segmint.Model.load(result.out)
    some = assignments.head(5)["customer_id"]
    scored = model.predict(tx.filter(pl.col("customer_id").is_in(some.implode())), as_of=result.manifest["as_of"])
    want = assignments.filter(pl.col("customer_id").is_in(some.implode())).sort("customer_id")
    assert scored.sort("customer_id")["segment"].to_list() == want["segment"].cast(pl.Int32).to_list()
    assert scored.sort("customer_id")["clv"].to_list() == pytest.approx(want["clv"].to_list())
    assert set(scored["name"]) <= set(result.summary["name"])


def test_predict_reads_a_frame_chunk_by_chunk_and_an_empty_one(small_data, tmp_path):
    import segmint

    result = segmint.run(str(small_data / "transactions"), tmp_path / "run", segmint.RunConfig())
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    tx = pl.read_parquet(small_data / "transactions")
    # A customer's lines fall in several chunks.
    chunked = pl.concat([tx.slice(0, tx.height // 3), tx.head(0), tx.slice(tx.height // 3)], rechunk=False)
    assert chunked.n_chunks() >= 2
    whole = model.predict(chunked.rechunk(), as_of=as_of)
    assert model.predict(chunked, as_of=as_of).equals(whole) and whole.height == 3000
    # A datetime with a zone, or a date (its end), as the text that writes them: a TypeError before.
    when = dt.datetime.fromisoformat(as_of)
    assert model.predict(tx, as_of=when.replace(tzinfo=dt.timezone.utc).astimezone(
        dt.timezone(dt.timedelta(hours=5)))).equals(model.predict(tx, as_of=when))
    assert model.predict(tx, as_of=when.date()).equals(model.predict(tx, as_of=when.date().isoformat()))
    empty = model.predict(tx.head(0), as_of=as_of)
    assert empty.height == 0 and empty.columns == whole.columns
    # A column the model was trained with, missing: Polars' ColumnNotFoundError went up, not a segmint error.
    with pytest.raises(segmint.InputContractError, match="the transactions given lack 'channel', which the model"):
        model.predict(tx.drop("channel"), as_of=as_of)


def test_inputs_may_be_a_path_a_list_a_lazyframe_or_arrow(small_data, tmp_path):
    import pyarrow.dataset as ds

    import segmint

    path = str(small_data / "transactions")
    counts = {segmint.validate(data).rows_in for data in (
        path, [path], pl.scan_parquet(f"{path}/*.parquet"), ds.dataset(path), pl.read_parquet(path).to_arrow())}
    assert counts == {pl.read_parquet(path).height}
    features = segmint.features(path, tmp_path / "f")
    assert features.features().collect().height == 3000
    assert segmint.clv(path, tmp_path / "c").clv.r > 0
    assert segmint.cohorts(path, tmp_path / "h").cohorts.height > 0


def test_wrong_types_are_refused_with_the_field_named(small_data):
    import segmint

    with pytest.raises(segmint.ConfigError, match="run.cluster must be a ClusterConfig"):
        segmint.RunConfig(cluster={"k": 5})
    with pytest.raises(segmint.ConfigError, match="config must be a segmint.RunConfig"):
        segmint.run(str(small_data / "transactions"), "x", {"k": 5})
    with pytest.raises(segmint.ConfigError, match="transactions must be a path"):
        segmint.validate(42)
    # A plain function as progress failed in the first stage with an AttributeError (exit 1).
    with pytest.raises(segmint.ConfigError, match=r"progress must have the methods start\(stage\)"):
        segmint.validate(str(small_data / "transactions"), progress=print)
    # k "auto", as the CLI and TOML say it, is k None.
    assert segmint.ClusterConfig(k="auto") == segmint.ClusterConfig(k=None)


def test_a_progress_object_hears_every_stage(small_data):
    import segmint

    class Events:
        def __init__(self):
            self.finished = []

        def start(self, stage):
            pass

        def advance(self, stage, done, total):
            pass

        def done(self, stage, seconds, info):
            self.finished.append(stage)

    events = Events()
    segmint.validate(str(small_data / "transactions"), progress=events)
    assert events.finished[0] == "plan" and "map" in events.finished


def test_errors_about_in_memory_data_name_it_not_the_file_it_went_through(small_data, tmp_path, monkeypatch):
    import segmint

    monkeypatch.chdir(tmp_path)
    lines = pl.read_parquet(small_data / "transactions")
    with pytest.raises(segmint.InputContractError) as err:
        segmint.features(lines.drop("amount"), "out")
    assert "'amount' (--amount-col) not found in the DataFrame given" in str(err.value)
    assert ".segmint-input" not in str(err.value)
    with pytest.raises(segmint.InputContractError, match="'amount' in the LazyFrame given is String"):
        segmint.run(lines.lazy().with_columns(pl.col("amount").cast(pl.String)), tmp_path / "o")
    with pytest.raises(segmint.InputContractError, match="transactions \\(the DataFrame given\\) has no rows"):
        segmint.validate(lines.head(0))
    assert not list(tmp_path.glob(".segmint-input-*"))
    # The folders made to hold the data beside the output went away with it when the run failed.
    with pytest.raises(segmint.InputContractError):
        segmint.run(lines.drop("amount"), tmp_path / "a" / "b" / "out")
    assert not (tmp_path / "a").exists()


def test_predict_scores_as_the_run_did_with_its_as_of_and_its_dedupe(small_data, tmp_path):
    # Rows later than the clock were dropped as "future" though as_of was given (674 of 3,000 customers missing,
    # exit 0), and a run's --dedupe-on was not in its model: predict kept the duplicates the run rejected.
    import segmint

    tx = pl.read_parquet(small_data / "transactions")
    later = tx.with_columns(pl.col("ts") + pl.duration(days=3 * 365))   # beyond today: the run gives its as-of
    doubled = pl.concat([later, later.filter(pl.col("customer_id") % 3 == 0)])
    dedupe = ("customer_id", "ts", "amount", "order_id")
    horizon = later["ts"].max().date().isoformat()
    cfg = segmint.RunConfig(cluster=segmint.ClusterConfig(k=4, seed=1), as_of=horizon, dedupe_on=dedupe)
    result = segmint.run(doubled, tmp_path / "run", cfg)
    assert result.manifest["rows"]["rejected_by_reason"]["duplicate"] > 0
    run = result.assignments().collect().sort("customer_id")
    model = segmint.Model.load(result.out)
    assert model.dedupe_on == dedupe
    scored = model.predict(doubled, as_of=result.manifest["as_of"]).sort("customer_id")
    assert scored["customer_id"].to_list() == run["customer_id"].to_list()
    for column in ("segment", "distance", "m_score", "clv"):
        assert scored[column].cast(pl.Float64).to_list() == run[column].cast(pl.Float64).to_list(), column
    # assign without dedupe_on cleans the batch as the model's run did.
    assigned = segmint.assign(result.out, doubled, tmp_path / "assigned", segmint.RunConfig(as_of=horizon))
    assert assigned.manifest["rows"]["rejected_by_reason"] == result.manifest["rows"]["rejected_by_reason"]
    assert assigned.assignments().collect().sort("customer_id")["m_score"].to_list() == run["m_score"].to_list()
    # A model of the version before kept no dedupe_on: loaded from its run, it is read from its run.json (an
    # assign without --dedupe-on rejected none of the duplicates its run rejected, exit 0).
    from segmint.engine.model import _from_doc

    doc = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    older = {k: v for k, v in doc.items() if k not in ("dedupe_on", "events")} | {"format_version": 2}
    assert _from_doc(older, result.manifest["config"]).dedupe_on == dedupe
    assert _from_doc(older, {}).dedupe_on is None   # a model folder copied out of its run: not known
    (tmp_path / "run" / "model" / "model.json").write_text(json.dumps(older))   # as the version before wrote it
    assert segmint.Model.load(tmp_path / "run").dedupe_on == dedupe
    # One written between the two formats kept its dedupe_on in the file: kept, with or without its run.
    kept = older | {"dedupe_on": list(dedupe)}
    assert _from_doc(kept, {}).dedupe_on == dedupe == _from_doc(kept, {"dedupe_on": None}).dedupe_on
    # Asked to keep duplicates, it does: the customers who have them spend more.
    kept = model.predict(doubled, as_of=result.manifest["as_of"], dedupe_on=()).sort("customer_id")
    assert kept["m_score"].to_list() != scored["m_score"].to_list()


def test_predict_checks_its_rows_as_assign_checks_files(small_data, tmp_path):
    import numpy as np
    import pandas as pd

    import segmint

    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    some = tx.filter(pl.col("customer_id") < tx["customer_id"].min() + 50)
    want = model.predict(some, as_of=as_of)
    assert want.height > 0
    # Times in a form segmint will not guess, or integers without a unit: 0 rows came back without a word.
    # Named as predict takes it, not as the CLI's flag.
    with pytest.raises(segmint.ConfigError, match="time_format="):
        model.predict(some.with_columns(pl.col("ts").dt.strftime("%d/%m/%Y %H:%M")), as_of=as_of)
    with pytest.raises(segmint.InputContractError, match="time_format="):
        model.predict(some.with_columns(pl.col("ts").dt.epoch("s")), as_of=as_of)
    # Amounts as text (a JSON payload's) are read as they were before these checks.
    assert model.predict(some.with_columns(pl.col("amount").cast(pl.String)), as_of=as_of).equals(want)
    # Every row's time unreadable with the model's format: said, and time_format= reads them.
    dmy = some.with_columns(pl.col("ts").dt.strftime("%d/%m/%Y %H:%M:%S%.6f"))
    csv_model = dataclasses.replace(model, columns=dataclasses.replace(model.columns, time_format="%Y%m%d"))
    with pytest.raises(segmint.ConfigError, match=r"^time_format= '%Y%m%d' does not read most times .*give "
                                                  r"time_format= '%d/%m/%Y %H:%M:%S'"):
        csv_model.predict(dmy, as_of=as_of)
    again = csv_model.predict(dmy, as_of=as_of, time_format="%d/%m/%Y %H:%M:%S%.f")
    assert again.equals(want)
    # A LazyFrame is read; pandas rows that do not make a table, and an as-of of another type, are refused in
    # segmint's words (pyarrow's ArrowTypeError and an AttributeError before).
    assert model.predict(some.lazy(), as_of=as_of).equals(want)
    mixed = some.to_pandas().astype({"customer_id": object})
    mixed.loc[0, "customer_id"] = "x"
    with pytest.raises(segmint.InputContractError, match="cannot be read as a table"):
        model.predict(mixed, as_of=as_of)
    with pytest.raises(segmint.InputContractError, match="cannot be read as a table"):
        segmint.run(mixed, tmp_path / "mixed")
    with pytest.raises(segmint.ConfigError, match="as_of must be text, a date or a datetime"):
        model.predict(some, as_of=np.datetime64("2024-01-01"))
    # Named as predict takes it (the CLI's --as-of was named).
    with pytest.raises(segmint.ConfigError, match=r"^as_of= '30/06/2024' is not a date or datetime"):
        model.predict(some, as_of="30/06/2024")
    assert model.predict(some.to_pandas(), as_of=pd.Timestamp(as_of)).equals(want)


def test_predict_stops_above_the_reject_share_as_assign_does(small_data, tmp_path):
    import segmint

    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    some = tx.filter(pl.col("customer_id") < tx["customer_id"].min() + 50)
    # Amounts of 60% of the rows unreadable (a JSON payload's "n/a"): those customers' histories were short,
    # and their segments another's, without a word.
    bad = some.with_columns(pl.when(pl.int_range(pl.len()) % 5 < 3).then(pl.lit("n/a"))
                            .otherwise(pl.col("amount").cast(pl.String)).alias("amount"))
    rejected = int((pl.int_range(some.height, eager=True) % 5 < 3).sum())
    with pytest.raises(segmint.InputContractError,
                       match=rf"^{rejected} of the {some.height} rows given \(.*%\) cannot be used \("
                             rf"unparseable_amount {rejected}\), above max_reject_share=0.5; .*raise max_reject_share"):
        model.predict(bad, as_of=as_of)
    # Below the share, or with it raised, the usable rows are scored, as assign does.
    kept = model.predict(bad, as_of=as_of, max_reject_share=0.7)
    assert kept.height > 0 and kept.equals(model.predict(bad.filter(pl.col("amount") != "n/a"), as_of=as_of))
    # Rows after a given as-of are left out by choice, not counted, whatever their reason, as assign counts them.
    later = some.with_columns(pl.col("ts") + pl.duration(days=3650))
    later_bad = later.with_columns(pl.lit(None, pl.Float64).alias("amount"))
    assert model.predict(pl.concat([some, later, later_bad]), as_of=as_of).equals(model.predict(some, as_of=as_of))
    # A one-customer call of a customer who only returned is empty, one whose history came twice is deduplicated:
    # left out or dropped as documented, not refused.
    one = some.filter(pl.col("customer_id") == some["customer_id"][0])
    assert model.predict(one.with_columns(pl.col("amount").abs() * -1), as_of=as_of).height == 0
    assert model.predict(pl.concat([one, one, one]), as_of=as_of, dedupe_on=one.columns).equals(
        model.predict(one, as_of=as_of))
    # Exactly the share is not above it: 3 of 10 at 0.3 (1 - 7/10 is 0.30000000000000004 in floats).
    ten = pl.concat([one.head(1)] * 10).with_columns(
        (pl.lit(dt.datetime(2020, 1, 1)) + pl.duration(days=pl.int_range(10))).alias("ts"))
    three_bad = ten.with_columns(pl.when(pl.int_range(10) < 3).then(None).otherwise(pl.col("amount")).alias("amount"))
    assert model.predict(three_bad, as_of=as_of, max_reject_share=0.3, dedupe_on=()).height == 1
    with pytest.raises(segmint.InputContractError, match="3 of the 10 rows"):
        model.predict(three_bad, as_of=as_of, max_reject_share=0.29, dedupe_on=())
    for wrong in (2, True, "0.5", float("nan")):
        with pytest.raises(segmint.ConfigError, match=r"max_reject_share must be a number in \[0, 1\]"):
            model.predict(some, as_of=as_of, max_reject_share=wrong)


def test_predict_on_many_rows_takes_rejected_rows_of_its_text_views(small_data, tmp_path):
    # A frame of many rows is read with its channels and categories as Polars holds them (string views, which
    # Arrow's take has no kernel for): rows rejected as read, rows rejected per customer (duplicates) and amounts
    # in a locale's format, among them, are taken as the small calls take them.
    import segmint
    from segmint.engine.runtime import FEW_ROWS

    tx = pl.read_parquet(small_data / "transactions")
    assert tx.height >= FEW_ROWS and tx.schema["channel"] == pl.String
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    want = model.predict(tx, as_of=as_of)
    bad = tx.head(40).with_columns(pl.lit(None, pl.Float64).alias("amount"), pl.lit(None, pl.String).alias("channel"))
    assert model.predict(pl.concat([tx, bad]), as_of=as_of).equals(want)
    assert model.predict(pl.concat([tx, tx.head(500)]), as_of=as_of, dedupe_on=tx.columns).equals(
        model.predict(tx, as_of=as_of, dedupe_on=tx.columns))
    text = tx.with_columns(pl.col("amount").cast(pl.String))
    assert model.predict(pl.concat([text, bad.with_columns(pl.lit("n/a").alias("amount"))]), as_of=as_of).equals(want)
    with pytest.raises(segmint.InputContractError, match="writes numbers such as '1,234.50'"):
        model.predict(pl.concat([text, bad.with_columns(pl.lit("1,234.50").alias("amount"))]), as_of=as_of)


def test_a_failed_run_of_a_frame_leaves_no_folder_it_made(small_data, tmp_path, monkeypatch):
    # The frame's copy goes beside the output: the folders made for it went where empty, but 'new', made to
    # reach 'new/..', stayed.
    import segmint

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("segmint.engine.model.Model.save", boom)
    tx = pl.read_parquet(small_data / "transactions")
    (tmp_path / "keep").mkdir()
    for out in (tmp_path / "new" / ".." / "made" / "out", tmp_path / "keep" / ".." / "made" / "out"):
        with pytest.raises(RuntimeError, match="disk full"):
            segmint.run(tx, out, segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
        assert [p.name for p in tmp_path.iterdir()] == ["keep"]
    # A run that succeeds leaves the path given to it one that reaches its output ('new', empty, stays).
    monkeypatch.undo()
    result = segmint.run(tx, tmp_path / "new" / ".." / "made" / "out",
                         segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
    assert result.assignments().collect().height == 3000


def test_the_copy_of_a_frame_a_killed_call_left_is_removed_by_the_next_call(small_data, tmp_path):
    # A frame given to segmint.run goes through a Parquet copy beside the output (in the temp folder for an
    # object store's); killed (SIGKILL, or SIGTERM, which the library does not catch), the copy of every
    # transaction stayed for good.
    import socket
    import subprocess
    import sys

    import segmint

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left, live = tmp_path / ".segmint-input-dead0000", tmp_path / ".segmint-input-live0000"
    for folder, pid in ((left, gone.pid), (live, os.getpid())):
        folder.mkdir()
        (folder / "input.parquet").write_bytes(b"customer data")
        (folder / "_owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                                         "pid_namespace": _namespace(), "resume": False}))
    segmint.run(pl.read_parquet(small_data / "transactions"), tmp_path / "run",
                segmint.RunConfig(cluster=segmint.ClusterConfig(k=3)))
    assert not left.exists() and live.exists()   # another live process's copy stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "run"]


def _namespace():
    from segmint.engine.runtime import pid_namespace

    return pid_namespace()


def test_in_memory_data_is_read_for_its_mapped_columns_only(small_data, tmp_path):
    # Every column was converted: an unused Object or Int128 column, or a 40-digit Decimal in pandas, stopped the
    # run with the library's own error (a Rust panic past `except Exception`); a failing LazyFrame likewise.
    from decimal import Decimal

    import segmint

    tx = pl.read_parquet(small_data / "transactions").head(3_000)
    cfg = segmint.RunConfig(cluster=segmint.ClusterConfig(k=3))
    want = segmint.run(tx, tmp_path / "plain", cfg).summary
    odd = tx.with_columns(pl.Series("note", [object()] * tx.height, dtype=pl.Object),
                          pl.col("amount").cast(pl.Int128, strict=False).alias("wide"))
    assert segmint.run(odd, tmp_path / "odd", cfg).summary.equals(want)
    frame = tx.to_pandas()
    frame["big"] = [Decimal("1e40")] * len(frame)
    assert segmint.run(frame, tmp_path / "pandas", cfg).summary.equals(want)
    failing = tx.lazy().with_columns(pl.lit("a").cast(pl.Int64).alias("customer_id"))   # fails when collected
    with pytest.raises(segmint.InputContractError, match="the transactions given cannot be read as a table"):
        segmint.run(failing, tmp_path / "f", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd", "pandas", "plain"]


def test_run_json_names_each_share_columns_channel(small_data, tmp_path):
    # Channels in other scripts than Latin all read "blank" in their column names (Сайт, Приложение:
    # channel_share_blank, _blank_2), and only model.json said which was which.
    import segmint

    tx = pl.read_parquet(small_data / "transactions").head(3_000)
    names = sorted(tx["channel"].unique().to_list())
    cyrillic = tx.with_columns(pl.col("channel").replace({names[0]: "Сайт", names[1]: "Приложение"}))
    manifest = segmint.run(cyrillic, tmp_path / "r", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3))).manifest
    columns = manifest["channel_columns"]
    assert sorted(columns.values()) == sorted(manifest["channels"]) and list(columns.values()) == manifest["channels"]
    assert {columns["channel_share_blank"], columns["channel_share_blank_2"]} == {"Сайт", "Приложение"}
    features = pl.read_parquet(tmp_path / "r" / "assignments")
    assert all(c in features.columns for c in columns)


def test_in_memory_assign_reads_the_models_columns_and_a_missing_one_is_named(small_data, tmp_path):
    # The batch was narrowed to the caller's (default) mapping: a model of amounts in 'net' lost that column
    # ("'net' not found", listing a frame that held it). And a required column missing beside an unused column
    # that does not convert was refused for that column.
    import segmint

    tx = pl.read_parquet(small_data / "transactions").head(3_000).with_columns(net=pl.col("amount"))
    cfg = segmint.RunConfig(cluster=segmint.ClusterConfig(k=3))
    mapped = segmint.RunConfig(cluster=segmint.ClusterConfig(k=3), columns=segmint.Columns(amount="net"))
    run = segmint.run(tx, tmp_path / "run", mapped)
    scored = segmint.assign(tmp_path / "run", tx, tmp_path / "scored", cfg)
    assert scored.manifest["rows"]["used"] == run.manifest["rows"]["used"]
    odd = tx.rename({"ts": "timestamp"}).with_columns(pl.Series("note", [object()] * tx.height, dtype=pl.Object))
    with pytest.raises(segmint.InputContractError, match=r"column 'ts' \(--time-col\) not found in the DataFrame "
                                                         r"given; available: customer_id, timestamp, amount"):
        segmint.validate(odd, cfg)


def test_predict_gives_a_micro_segment_models_micro_segments_as_assign_does(small_data, tmp_path):
    # A model of micro-segments (personalised campaigns) scored a customer in real time without its micro-segment,
    # outlier flag or expected spend per purchase.
    import segmint

    cfg = segmint.RunConfig(cluster=segmint.ClusterConfig(k=4, seed=1, micro_k=3))
    result = segmint.run([small_data / "transactions"], tmp_path / "run", cfg)
    tx = pl.read_parquet(small_data / "transactions")
    scored = segmint.Model.load(result.out).predict(tx, as_of=result.manifest["as_of"]).sort("customer_id")
    run = result.assignments().collect().sort("customer_id")
    for column in ("segment", "micro_segment", "outlier", "expected_avg_value", "clv"):
        assert scored[column].to_list() == run[column].to_list(), column


def test_predict_says_when_a_customer_is_left_out_for_amounts_beyond_the_float_range(small_data, tmp_path):
    import segmint

    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    one = tx.filter(pl.col("customer_id") == tx["customer_id"][0]).head(2)
    # Amounts summing beyond the float range: the customer came back as an empty frame, without a word.
    with pytest.raises(segmint.InputContractError,
                       match=r"none of the 2 rows given can be used \(amount_overflow 2\)"):
        model.predict(one.with_columns(pl.lit(1e308).alias("amount")), as_of=as_of)
    # A batch sent twice with dedupe_on is judged as sent once: one good row and one without an amount pass.
    pair = pl.concat([one.head(1), one.tail(1).with_columns(pl.lit(None, pl.Float64).alias("amount"))])
    once = model.predict(pair, as_of=as_of, dedupe_on=one.columns)
    assert once.height == 1 and once.equals(model.predict(pl.concat([pair, pair]), as_of=as_of, dedupe_on=one.columns))
    # Sent twice, with dedupe_on: the copies made them half of the rows, and the result was empty, exit 0.
    twice = pl.concat([one, one]).with_columns(pl.lit(1e308).alias("amount"))
    with pytest.raises(segmint.InputContractError,
                       match=r"none of the 4 rows given can be used \(amount_overflow 2, duplicate 2\)"):
        model.predict(twice, as_of=as_of, dedupe_on=one.columns)


def test_columns_of_types_no_reader_takes_and_a_text_dedupe_on_are_refused_in_one_line(small_data, tmp_path):
    import segmint

    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1)))
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    some = tx.head(20)
    # Arrow's and Polars' own errors (exit 1 in the CLI) before.
    wide = some.with_columns(pl.col("customer_id").cast(pl.Int128))
    objects = some.with_columns(pl.Series("channel", [object()] * some.height, dtype=pl.Object))
    for frame, said in ((wide, "is Int128; segmint reads integers of up to 64 bits"),
                        (objects, "holds Python objects")):
        with pytest.raises(segmint.InputContractError, match=f"column '.*' in the transactions given {said}"):
            model.predict(frame, as_of=as_of)
        with pytest.raises(segmint.InputContractError, match=f"column '.*' in the DataFrame given {said}"):
            segmint.assign(result.out, frame, tmp_path / "a")
    # A Parquet file Arrow cannot open (Polars writes Int128 so) is named with the fix, not "unexpected".
    wide.write_parquet(tmp_path / "wide.parquet")
    with pytest.raises(segmint.InputContractError, match=r"cannot read .*wide.parquet: .*cast it when writing"):
        segmint.validate(tmp_path / "wide.parquet")
    # Its letters were taken for columns: "not mapped: ['c', 'u', 's', ...]".
    with pytest.raises(segmint.ConfigError, match=r"dedupe_on must be a list of column names, got the text 'ts'"):
        model.predict(some, as_of=as_of, dedupe_on="ts")
    with pytest.raises(segmint.ConfigError, match=r"got the text '': give \[\] for none"):
        model.predict(some, as_of=as_of, dedupe_on="")


def test_predict_gives_the_pseudonyms_of_a_pseudonymised_run_when_asked(small_data, tmp_path, monkeypatch):
    import segmint

    monkeypatch.setenv("SEGMINT_ID_KEY", "s3cret-key-value-of-32-characters")
    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=3, seed=1),
                                                                 pseudonymize_ids=True))
    model, as_of = segmint.Model.load(result.out), result.manifest["as_of"]
    some = tx.filter(pl.col("customer_id") < tx["customer_id"].min() + 30)
    # No way to get them before: the ids came back raw, to be joined with nothing the run wrote.
    got = model.predict(some, as_of=as_of, pseudonymize_ids=True)
    want = result.assignments().collect().join(got.select("customer_id"), on="customer_id").sort("customer_id")
    assert got.height == want.height == some["customer_id"].n_unique()
    assert got.sort("customer_id")["segment"].to_list() == want["segment"].cast(pl.Int32).to_list()
    assert model.predict(some, as_of=as_of)["customer_id"].dtype == pl.Int64   # as given, by default
    monkeypatch.setenv("SEGMINT_ID_KEY", "another-key-value-of-32-characters")
    with pytest.raises(segmint.ConfigError, match="pseudonymised customer ids with another key"):
        model.predict(some, as_of=as_of, pseudonymize_ids=True)
    # A model whose provenance lacks the key's fingerprint (an earlier segmint kept it in run.json alone): read there.
    fingerprint = model.provenance["pseudonym_key"]
    model_json = Path(result.out) / "model" / "model.json"
    doc = json.loads(model_json.read_text())
    del doc["provenance"]["pseudonym_key"]
    model_json.write_text(json.dumps(doc))
    assert segmint.Model.load(result.out).provenance["pseudonym_key"] == fingerprint
    with pytest.raises(segmint.ConfigError, match="pseudonymised customer ids with another key"):
        segmint.Model.load(result.out).predict(some, as_of=as_of, pseudonymize_ids=True)
    with pytest.raises(segmint.ConfigError, match="pseudonymize_ids must be True or False, got 'no'"):
        model.predict(some, as_of=as_of, pseudonymize_ids="no")
    import numpy as np
    assert model.predict(some, as_of=as_of, pseudonymize_ids=np.False_)["customer_id"].dtype == pl.Int64
    monkeypatch.delenv("SEGMINT_ID_KEY")
    with pytest.raises(segmint.ConfigError, match=r"^pseudonymize_ids=True needs a secret key"):
        model.predict(some, as_of=as_of, pseudonymize_ids=True)


@pytest.mark.parametrize("k", [1, 4])
def test_predict_scores_as_the_score_stage_scores_a_feature_table_one_customer_or_all(small_data, tmp_path, k):
    # predict runs the score stage's steps on the features' arrays (one frame made at the end), its kernels on the
    # calling thread for a few rows: the same columns and bits as score_table on the table the map makes, for one
    # customer at a time (one-line customers among them) or all in one call.
    import segmint
    from segmint.engine.features.table import features_of
    from segmint.engine.model import _as_of
    from segmint.engine.pipeline.score import score_table

    tx = pl.read_parquet(small_data / "transactions")
    result = segmint.run(tx, tmp_path / "run", segmint.RunConfig(cluster=segmint.ClusterConfig(k=k, seed=1)))
    model = segmint.Model.load(result.out)
    as_of = result.manifest["as_of"]
    whole = model.predict(tx, as_of=as_of)
    table = features_of(tx, model._config(None, None), as_of=_as_of(as_of), now=dt.datetime.max,
                        channels=model.channels, as_of_given=True).table
    want = score_table(table, model.scoring())
    assert whole.drop("name").equals(want.select(whole.drop("name").columns))
    assert whole.height == 3000 and whole["margin"].is_null().all() == (k == 1)
    names = dict(zip(result.summary["segment"].to_list(), result.summary["name"].to_list(), strict=True))
    assert whole["name"].to_list() == [names[s] for s in whole["segment"].to_list()]
    lines = tx.group_by("customer_id").len()
    some = pl.concat([lines.filter(pl.col("len") == 1).head(5), lines.filter(pl.col("len") > 1).head(15)])
    assert some.height == 20
    one_by_one = pl.concat([model.predict(tx.filter(pl.col("customer_id") == c), as_of=as_of)
                            for c in some["customer_id"]]).sort("customer_id")
    assert one_by_one.equals(whole.filter(pl.col("customer_id").is_in(some["customer_id"].implode())))
