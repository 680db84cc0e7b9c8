"""The run directory: layout, determinism, atomicity, assign round trip, privacy, RFM and lifecycle."""

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, Columns, FeatureConfig, RunConfig
from segmint.engine.errors import ConfigError, InputContractError, OutputExistsError
from segmint.engine.model import Model
from segmint.engine.pipeline import assign_customers, compute_feature_table, run


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*.parquet"))}


def test_run_directory_layout(small_run):
    names = {p.name for p in small_run.iterdir()}
    assert names == {"assignments", "profiles.parquet", "profiles.json", "profiles.csv", "model", "rejects",
                     "run.json", "_manifest.json", "_SUCCESS"}
    segs = sorted(p.name for p in (small_run / "assignments").iterdir())
    assert segs == [f"segment={i}" for i in range(6)]
    a = pl.read_parquet(small_run / "assignments")
    assert a.columns[:3] == ["customer_id", "distance", "margin"] and a.columns[-1] == "segment"
    assert a["customer_id"].is_unique().all()
    # Segment 0 is the largest; ids follow decreasing size.
    sizes = a.group_by("segment").len().sort("segment")["len"].to_list()
    assert sizes == sorted(sizes, reverse=True)
    manifest = json.loads((small_run / "run.json").read_text())
    rows = manifest["rows"]
    assert rows["in"] == rows["used"] + rows["rejected"]
    assert manifest["customers"] == a.height
    assert manifest["clustering"]["n_train"] <= a.height
    assert list(manifest["stages"]) == ["plan", "partition", "map", "fit", "cluster", "score", "profile"]
    assert manifest["status"] == "succeeded" and manifest["schema_version"] == 2 and manifest["run_id"]
    assert manifest["memory"]["limit_bytes"] > 0 and manifest["memory"]["peak_rss_mb"] > 0
    listed = {f["path"] for f in json.loads((small_run / "_manifest.json").read_text())["files"]}
    on_disk = {str(p.relative_to(small_run)) for p in small_run.rglob("*") if p.is_file()}
    assert listed == on_disk - {"_manifest.json", "_SUCCESS"}


def test_assignments_are_readable_by_every_tool(small_run):
    import duckdb
    import pyarrow.dataset as ds

    table = ds.dataset(small_run / "assignments", partitioning="hive").to_table()
    assert table.num_rows == 3000 and "segment" in table.column_names
    got = duckdb.sql(f"select count(*), count(distinct segment) from "
                     f"read_parquet('{small_run}/assignments/*/*.parquet', hive_partitioning=true)").fetchall()[0]
    assert got == (3000, 6)
    # pandas is in the test extra: this check runs in CI, it is not skipped.
    import pandas

    frame = pandas.read_parquet(small_run / "assignments")
    assert len(frame) == 3000 and frame["segment"].nunique() == 6
    assert sorted(frame["customer_id"]) == sorted(table.column("customer_id").to_pylist())


def test_outputs_are_written_at_zstd_level_1(small_run, tmp_path):
    # Outputs at zstd level 1 (store.write_parquet), not Polars' default 3: a part written again from its values
    # at level 1 is the same bytes, at level 3 it is not.
    import pyarrow.parquet as pq

    part = max((small_run / "assignments").glob("segment=*/part-*.parquet"), key=lambda p: p.stat().st_size)
    meta = pq.read_metadata(part)
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    frame = pl.read_parquet(part)
    for level in (1, 3):
        frame.write_parquet(tmp_path / f"{level}.parquet", compression="zstd", compression_level=level)
    assert part.read_bytes() == (tmp_path / "1.parquet").read_bytes() != (tmp_path / "3.parquet").read_bytes()


def test_same_input_seed_threads_give_identical_outputs_under_another_hash_seed(small_data, small_cfg, small_run,
                                                                                tmp_path):
    # Rerun in a child process whose str hashes differ from this one's (PYTHONHASHSEED): set and
    # dict-of-str orders change there, and no output may depend on them.
    import os

    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    code = ("import sys; from segmint.engine.config import ClusterConfig, RunConfig; "
            "from segmint.engine.pipeline import run; "
            "run([sys.argv[1]], sys.argv[2], RunConfig(cluster=ClusterConfig(k=int(sys.argv[3]), seed=int(sys.argv[4]))))")
    assert small_cfg == RunConfig(cluster=ClusterConfig(k=small_cfg.cluster.k, seed=small_cfg.cluster.seed))
    again = tmp_path / "again"
    subprocess.run([sys.executable, "-c", code, str(small_data / "transactions"), str(again), str(small_cfg.cluster.k),
                    str(small_cfg.cluster.seed)], check=True, env={**os.environ, "PYTHONHASHSEED": seed})
    # Every file, byte for byte, except those that name the run (its id and times).
    named = {"run.json", "_manifest.json", "model/model.json"}
    files = {str(p.relative_to(small_run)) for p in small_run.rglob("*") if p.is_file()} - named
    assert {str(p.relative_to(again)) for p in again.rglob("*") if p.is_file()} - named == files
    assert any(name.startswith("assignments/") for name in files) and "profiles.parquet" in files
    for name in sorted(files):
        assert (small_run / name).read_bytes() == (again / name).read_bytes(), name
    model, model_again = (json.loads((d / "model" / "model.json").read_text()) for d in (small_run, again))
    for doc in (model, model_again):
        doc["provenance"].pop("run_id")
    assert model == model_again


def test_assign_round_trip_reproduces_training_segments(small_data, small_run, tmp_path):
    scored = tmp_path / "scored"
    assign_customers(small_run, [small_data / "transactions"], scored, RunConfig())
    trained = pl.read_parquet(small_run / "assignments").sort("customer_id")
    again = pl.read_parquet(scored / "assignments").sort("customer_id")
    same = ["customer_id", "segment", "r_score", "rfm_segment", "p_alive", "clv"]
    assert trained.select(same).equals(again.select(same))
    np.testing.assert_allclose(trained["distance"], again["distance"], rtol=1e-6)
    assert not (scored / "model").exists()
    # run.json's config says the model's k (6), not the default (8) assign was not asked for.
    doc = json.loads((scored / "run.json").read_text())
    assert doc["k"] == doc["config"]["cluster"]["k"] == 6


def test_assign_scores_a_model_that_clusters_on_clv(small_data, tmp_path):
    feats = FeatureConfig(cluster_features=("recency_days", "frequency", "p_alive", "clv"))
    cfg = RunConfig(features=feats, cluster=ClusterConfig(k=4))
    run([small_data / "transactions"], tmp_path / "r", cfg)
    assign_customers(tmp_path / "r", [small_data / "transactions"], tmp_path / "s", RunConfig())
    a, b = (pl.read_parquet(tmp_path / d / "assignments").sort("customer_id") for d in ("r", "s"))
    assert a["segment"].equals(b["segment"])


def test_existing_output_needs_overwrite(small_data, small_cfg, small_run):
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run([small_data / "transactions"], small_run, small_cfg)


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_an_output_overlapping_an_input_is_refused_and_the_input_survives(small_data, tmp_path, where):
    data = tmp_path / "data"
    data.mkdir()
    pl.read_parquet(small_data / "transactions").head(5000).write_parquet(data / "t.parquet")
    out = {"same": data / "t.parquet", "parent": data, "inside": data / "t.parquet" / "run"}[where]
    before = (data / "t.parquet").read_bytes()
    with pytest.raises(ConfigError, match="overlaps the input"):
        run([data / "t.parquet"], out, RunConfig(overwrite=True, cluster=ClusterConfig(k=2)))
    with pytest.raises(ConfigError, match="overlaps the input"):
        compute_feature_table([data], out, RunConfig(overwrite=True))
    assert (data / "t.parquet").read_bytes() == before


def test_assign_into_its_model_folder_is_refused(small_data, small_run):
    with pytest.raises(ConfigError, match="overlaps the input"):
        assign_customers(small_run, [small_data / "transactions"], small_run / "model" / "x", RunConfig())


def test_failed_run_leaves_previous_output_intact(small_data, small_cfg, tmp_path, monkeypatch):
    out = tmp_path / "out"
    cfg = dataclasses.replace(small_cfg, cluster=ClusterConfig(k=3))
    run([small_data / "transactions"], out, cfg)
    before = _digest(out)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("segmint.engine.model.Model.save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run([small_data / "transactions"], out, dataclasses.replace(cfg, overwrite=True))
    assert _digest(out) == before
    assert (out / "_SUCCESS").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or work folder left behind


def test_the_folders_a_run_made_go_with_it_where_it_left_them_empty(small_data, small_cfg, tmp_path, monkeypatch):
    """A run makes the missing folders above its output and its --work-dir: a failed run left them behind,
    empty (exit 3 at --out new/deep/o left new/deep), and so did a finished run its --work-dir. Folders that
    hold anything, or were there before, stay."""
    from segmint.engine.io.sink import staged_dir, staged_file

    tx = [small_data / "transactions"]
    cfg = dataclasses.replace(small_cfg, cluster=ClusterConfig(k=3))
    run(tx, tmp_path / "a" / "b" / "out", dataclasses.replace(cfg, work_dir=str(tmp_path / "w" / "x")))
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["out"]
    (tmp_path / "given").mkdir()
    run(tx, tmp_path / "a" / "out2", dataclasses.replace(cfg, work_dir=str(tmp_path / "given")))
    assert (tmp_path / "given").is_dir() and not any((tmp_path / "given").iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("segmint.engine.model.Model.save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run(tx, tmp_path / "n" / "m" / "out", dataclasses.replace(cfg, work_dir=str(tmp_path / "v" / "u")))
    for staged in (staged_dir, staged_file):   # the other commands' outputs (report, compare, abtest)
        with pytest.raises(RuntimeError, match="disk full"), staged(tmp_path / "s" / "t" / "out", overwrite=False):
            boom()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "given"]
    # A folder reached through '..' is the folder it names: an empty one the user had stays.
    (tmp_path / "dots" / "keep").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="disk full"), \
            staged_file(tmp_path / "dots" / "new" / ".." / "keep" / "out", overwrite=False):
        boom()
    assert (tmp_path / "dots" / "keep").is_dir()
    # The folders making it makes go too: 'new', made to reach 'new/..', stayed.
    with pytest.raises(RuntimeError, match="disk full"), \
            staged_file(tmp_path / "dots" / "new" / ".." / "made" / "out", overwrite=False):
        boom()
    assert sorted(p.name for p in (tmp_path / "dots").iterdir()) == ["keep"]
    with pytest.raises(RuntimeError, match="disk full"):
        run(tx, tmp_path / "dots" / "new" / ".." / "made" / "out", cfg)
    assert sorted(p.name for p in (tmp_path / "dots").iterdir()) == ["keep"]
    # Written, the output must still be found by the path given: 'new' stays, empty as it is.
    with staged_file(tmp_path / "dots" / "new" / ".." / "file", overwrite=False) as tmp:
        tmp.write_text("x")
    assert (tmp_path / "dots" / "new" / ".." / "file").read_text() == "x"
    monkeypatch.undo()
    given = tmp_path / "dots" / "other" / ".." / "made" / "out"
    run(tx, given, cfg)
    assert (given / "_SUCCESS").is_file()


def test_a_partition_write_failing_on_one_thread_fails_the_run_with_nothing_left(small_data, small_cfg, tmp_path,
                                                                                 monkeypatch):
    """A partition job writes its buckets' files two at a time: an error in either thread is the job's
    error, and the run fails with the previous output intact and no scratch left."""
    from segmint.engine.pipeline import partition

    out = tmp_path / "out"
    cfg = dataclasses.replace(small_cfg, cluster=ClusterConfig(k=3), buckets=4)
    run([small_data / "transactions"], out, cfg)
    before = _digest(out)
    write, written = partition._write_ipc, []

    def failing(table, path, plan):
        if "bucket=00002" in path:
            raise OSError("disk full")
        written.append(path)
        write(table, path, plan)

    monkeypatch.setattr(partition, "_write_ipc", failing)
    with pytest.raises(OSError, match="disk full"):
        run([small_data / "transactions"], out, dataclasses.replace(cfg, overwrite=True))
    assert written   # the other buckets' files were being written beside the failing one
    assert _digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_killed_run_leaves_nothing_the_next_run_does_not_remove(small_data, tmp_path):
    """SIGTERM removes the staging and work folders (exit 143); after kill -9 the next run on the
    same output removes them (their owner process is gone)."""
    from tests.fixtures import segmint_child, wait_for

    out = tmp_path / "out"
    for sig, rc in ((signal.SIGTERM, 143), (signal.SIGKILL, -9)):
        # The child pauses mid-run (with its staging and work folders) until the signal comes: a run
        # that finished first (a second, with warm kernels) made this test fail with exit 0.
        marker = tmp_path.parent / f"{tmp_path.name}-paused-{sig}"
        with open(tmp_path.parent / f"err-{sig}", "w+") as err:
            proc = segmint_child("run", small_data / "transactions", "--out", out, "--k", 3, "--buckets", 3,
                                 paused=marker, stderr=err)
            assert wait_for(marker.parent, marker.name), "the run never reached its model"
            proc.send_signal(sig)
            assert proc.wait(60) == rc
            err.seek(0)
            message = err.read()
        leftovers = list(tmp_path.glob(".out.*"))
        if sig == signal.SIGTERM:
            assert leftovers == [] and "terminated" in message
        else:
            assert leftovers  # kill -9 cannot clean up...
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3)))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # ...the next run does


def test_pseudonymized_ids_never_expose_raw_ids_or_key(small_data, tmp_path, monkeypatch):
    from segmint.engine.config import CustomerSource, EventSource

    monkeypatch.setenv("SEGMINT_ID_KEY", "s3cret-key-value-of-32-characters")
    out = tmp_path / "p"
    tx = pl.read_parquet(small_data / "transactions")
    dirty = pl.concat([tx, tx.head(20).with_columns(amount=pl.lit(float("nan")))])
    dirty.write_parquet(tmp_path / "t.parquet")
    cfg = RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True, buckets=3,
                    events=EventSource(paths=(str(small_data / "events"),)),
                    customers=CustomerSource(paths=(str(small_data / "customers.parquet"),), attributes=("region",)))
    run([tmp_path / "t.parquet"], out, cfg)
    ids = pl.read_parquet(out / "assignments")["customer_id"]
    assert ids.dtype == pl.String and ids.str.len_chars().unique().to_list() == [64]
    raw = set(pl.read_parquet(small_data / "personas.parquet")["customer_id"].cast(pl.String))
    assert pl.read_parquet(out / "rejects").height == 20
    for folder in ("assignments", "rejects", "funnel", "event_rejects"):
        for path in (out / folder).rglob("*.parquet"):
            frame = pl.read_parquet(path)
            column = "customer_id"
            assert not raw & set(frame[column].cast(pl.String).drop_nulls()), path
    for path in out.rglob("*"):
        if path.is_file():
            assert b"s3cret-key-value-of-32-characters" not in path.read_bytes()


@pytest.mark.parametrize("table", ["events", "customers"])
def test_side_table_ids_of_another_type_are_refused_with_pseudonyms_too(small_data, tmp_path, monkeypatch, table):
    """Pseudonymised, a customers or events table with text ids beside integer transaction ids was read: the
    pseudonym of 7 is not that of "007", so such customers joined nothing (exit 0), where without pseudonyms
    the run stops."""
    from segmint.engine.config import CustomerSource, EventSource

    monkeypatch.setenv("SEGMINT_ID_KEY", "s3cret-key-value-of-32-characters")
    source = small_data / ("events" if table == "events" else "customers.parquet")
    frame = pl.read_parquet(source)
    frame.with_columns(pl.format("00{}", pl.col("customer_id"))).write_parquet(tmp_path / "side.parquet")
    side = ({"events": EventSource(paths=(str(tmp_path / "side.parquet"),))} if table == "events" else
            {"customers": CustomerSource(paths=(str(tmp_path / "side.parquet"),), attributes=("region",))})
    for pseudonymize in (False, True):
        cfg = RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=pseudonymize, **side)
        with pytest.raises(InputContractError, match="String customer ids but the transactions have Int64"):
            run([small_data / "transactions"], tmp_path / f"out{pseudonymize}", cfg)
        assert not (tmp_path / f"out{pseudonymize}").exists()


def test_assign_with_a_pseudonymised_model_writes_pseudonyms_or_refuses(small_data, tmp_path, monkeypatch):
    # Without the flag, the assignments of a pseudonymised model's batch held the raw ids, with exit 0.
    monkeypatch.setenv("SEGMINT_ID_KEY", "s3cret-key-value-of-32-characters")
    run([small_data / "transactions"], tmp_path / "p", RunConfig(cluster=ClusterConfig(k=3), pseudonymize_ids=True))
    with pytest.raises(ConfigError, match="pseudonymised customer ids: score with --pseudonymize-ids"):
        assign_customers(tmp_path / "p", [small_data / "transactions"], tmp_path / "raw", RunConfig())
    assert not (tmp_path / "raw").exists()
    assign_customers(tmp_path / "p", [small_data / "transactions"], tmp_path / "a", RunConfig(pseudonymize_ids=True))
    scored = pl.read_parquet(tmp_path / "a" / "assignments").sort("customer_id")
    assert scored["customer_id"].str.len_chars().unique().to_list() == [64]
    assert scored.equals(pl.read_parquet(tmp_path / "p" / "assignments").sort("customer_id").select(scored.columns))
    # Another key gave the batch's customers other pseudonyms than the run's, without a word.
    monkeypatch.setenv("SEGMINT_ID_KEY", "another-key-value-of-32-characters")
    with pytest.raises(ConfigError, match="pseudonymised customer ids with another key"):
        assign_customers(tmp_path / "p", [small_data / "transactions"], tmp_path / "k",
                         RunConfig(pseudonymize_ids=True))
    # The model folder alone (no run.json beside it) was scored under the other key, exit 0.
    import shutil

    shutil.copytree(tmp_path / "p" / "model", tmp_path / "model")
    with pytest.raises(ConfigError, match="pseudonymised customer ids with another key"):
        assign_customers(tmp_path / "model", [small_data / "transactions"], tmp_path / "m",
                         RunConfig(pseudonymize_ids=True))


def test_pseudonymize_without_key_fails_before_any_work(small_data, tmp_path, monkeypatch):
    monkeypatch.delenv("SEGMINT_ID_KEY", raising=False)
    read = []
    monkeypatch.setattr("segmint.engine.io.sources._scan", lambda *a: read.append(a))
    for buckets in (1, 4):
        with pytest.raises(ConfigError, match="SEGMINT_ID_KEY"):
            run([small_data / "transactions"], tmp_path / "x", RunConfig(pseudonymize_ids=True, buckets=buckets))
    # A short key is a guessable one: the pseudonyms could be reversed by trying keys.
    monkeypatch.setenv("SEGMINT_ID_KEY", "k" * 31)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        run([small_data / "transactions"], tmp_path / "x", RunConfig(pseudonymize_ids=True))
    assert read == [] and not (tmp_path / "x").exists()


def test_only_mapped_columns_are_read_and_written(tmp_path):
    df = pl.DataFrame({"cid": [1, 1, 2, 3, 3, 4], "t": ["2024-01-01", "2024-02-01", "2024-01-05", "2024-01-09",
                                                       "2024-03-01", "2024-02-02"],
                       "amt": [5.0, 6.0, 7.0, float("nan"), 9.0, 3.0], "email": ["x@y.z"] * 6})
    df.write_parquet(tmp_path / "in.parquet")
    cols = Columns(customer="cid", time="t", time_format="%Y-%m-%d", amount="amt")
    out = tmp_path / "out"
    result = run([tmp_path / "in.parquet"], out, RunConfig(columns=cols, cluster=ClusterConfig(k=2)))
    for path in out.rglob("*.parquet"):
        assert "email" not in pl.read_parquet_schema(path)
    assert "x@y.z" not in (out / "run.json").read_text()
    rejects = pl.read_parquet(out / "rejects")
    assert rejects.columns == ["cid", "t", "amt", "reason"]
    assert rejects["reason"].to_list() == ["non_finite_amount"]
    # Four customers cannot identify a CLV model: left out with the reason, not fitted wildly.
    assert "skipped" in result.manifest["clv"]


def test_rfm_scores_match_plain_polars_quintiles(small_run):
    a = pl.read_parquet(small_run / "assignments")
    cuts = Model.load(small_run).rfm_cuts

    def score(col, qs):
        return sum(((pl.col(col) > q).cast(pl.Int8)) for q in qs)

    q = [0.2, 0.4, 0.6, 0.8]
    ref = a.select(
        (5 - score("recency_days", [a["recency_days"].quantile(x, "linear") for x in q])).alias("r"),
        (1 + score("frequency", [a["frequency"].quantile(x, "linear") for x in q])).alias("f"),
        (1 + score("monetary_total", [a["monetary_total"].quantile(x, "linear") for x in q])).alias("m"),
    )
    assert a["r_score"].cast(pl.Int32).to_list() == ref["r"].cast(pl.Int32).to_list()
    assert a["f_score"].cast(pl.Int32).to_list() == ref["f"].cast(pl.Int32).to_list()
    assert a["m_score"].cast(pl.Int32).to_list() == ref["m"].cast(pl.Int32).to_list()
    assert cuts.recency == tuple(a["recency_days"].quantile(x, "linear") for x in q)
    champions = a.filter(pl.col("rfm_segment") == "Champions")
    assert champions.height > 0
    assert (champions["r_score"] == 5).all() and champions["f_score"].is_in([4, 5]).all()


def test_activity_status_on_hand_built_customers(tmp_path):
    # As of 2024-12-31 (end of day), with the default thresholds.
    rows = [
        ("new", "2024-12-20", 10.0), ("new", "2024-12-30", 5.0),                       # first order 11 days ago
        ("gone", "2023-06-01", 10.0), ("gone", "2023-07-01", 10.0),                    # silent > 365 days
        ("rhythm", "2024-10-01", 5.0), ("rhythm", "2024-11-01", 5.0), ("rhythm", "2024-12-01", 5.0),  # 31 / 30.5
        ("slow", "2024-06-01", 5.0), ("slow", "2024-07-01", 5.0), ("slow", "2024-09-01", 5.0),  # 121 d / 46.5 d
        ("late", "2024-02-01", 5.0), ("late", "2024-03-01", 5.0),                     # 305 d / 29 d > 3
        ("once", "2024-11-01", 5.0), ("once_old", "2024-06-01", 5.0),                 # one day: 60 d / 213 d
    ]
    pl.DataFrame(rows, schema=["customer_id", "ts", "amount"], orient="row").write_parquet(tmp_path / "t.parquet")
    compute_feature_table([tmp_path / "t.parquet"], tmp_path / "f", RunConfig(as_of="2024-12-31"))
    got = dict(pl.read_parquet(tmp_path / "f" / "features").select(
        "customer_id", pl.col("activity_status").cast(pl.String)).iter_rows())
    assert got == {"new": "new", "gone": "lapsed", "rhythm": "active", "slow": "at_risk", "late": "lapsed",
                   "once": "active", "once_old": "at_risk"}


def test_profiles_reconcile_with_assignments(small_run):
    a = pl.read_parquet(small_run / "assignments")
    p = pl.read_parquet(small_run / "profiles.parquet")
    assert p["customers"].sum() == a.height
    assert p["share"].sum() == pytest.approx(1.0)
    assert p["revenue_share"].sum() == pytest.approx(1.0)
    assert p["name"].is_unique().all()
    seg0 = a.filter(pl.col("segment") == 0)
    row = p.filter(pl.col("segment") == 0).row(0, named=True)
    assert row["revenue"] == pytest.approx(seg0["monetary_total"].sum(), rel=1e-12)
    assert row["aov_mean"] == pytest.approx(seg0["aov"].mean())
    assert row["recency_days_p90"] == pytest.approx(seg0["recency_days"].quantile(0.9, "linear"))
    z = (seg0["frequency"].mean() - a["frequency"].mean()) / a["frequency"].std()
    assert row["frequency_zlift"] == pytest.approx(z)
    median = seg0["aov"].median()
    pct = 100 * ((a["aov"] < median).sum() + (a["aov"] <= median).sum()) / 2 / a.height
    assert row["aov_median_pct"] == pytest.approx(pct)
    assert json.loads((small_run / "profiles.json").read_text())["segments"][0]["name"] == row["name"]


def test_every_word_of_a_segment_name_holds_for_its_profile(small_run):
    from segmint.engine.profile import NAME_RULES

    profiles = pl.read_parquet(small_run / "profiles.parquet")
    checked = 0
    for row in profiles.iter_rows(named=True):
        for word in row["name"].split(" · "):
            if word in NAME_RULES:
                assert eval(NAME_RULES[word], {}, row), (row["name"], word)  # noqa: S307 - our own rules
                checked += 1
    assert checked >= 3 * profiles.height


@pytest.mark.parametrize(("pct", "stage"), [(30.0, "Recent"), (30.5, "Steady"), (50.0, "Steady"), (50.5, "Lapsing"),
                                          (69.9, "Lapsing"), (70.0, "Dormant")])
def test_the_recency_bands_and_the_middle_that_every_tie_takes(pct, stage):
    # Customers who all bought at the as-of tie at mid-rank 50: every segment was "Lapsing" with recency 0.
    from segmint.engine.profile import NAME_RULES, segment_name

    row = {"recency_days_median_pct": pct, "frequency_median_pct": 50.0, "aov_median_pct": 50.0,
           "frequency_median": 2.0, "new_rate": 0.0, "refund_share_median": 0.0}
    assert segment_name(row).split(" · ")[0] == stage
    assert eval(NAME_RULES[stage], {}, row)  # noqa: S307 - our own rules


def test_each_words_rule_is_the_one_the_docs_state():
    # word_holds judges a name's words (segment_name, the report); NAME_RULES states them (docs, report text).
    import random

    from segmint.engine.profile import NAME_RULES, word_holds

    rng = random.Random(0)
    for _ in range(2000):
        row = {"recency_days_median_pct": rng.choice([0.0, 30.0, 30.5, 50.0, 50.5, 70.0, rng.uniform(0, 100)]),
               "frequency_median_pct": rng.choice([35.0, 75.0, rng.uniform(0, 100)]),
               "aov_median_pct": rng.choice([25.0, 75.0, rng.uniform(0, 100)]),
               "frequency_median": rng.choice([1.0, 2.0]), "repurchase_rate": rng.choice([0.2, 0.5, 0.9]),
               "new_rate": rng.choice([0.1, 0.5, 0.7]), "refund_share_median": rng.choice([0.0, 0.1, 0.3])}
        for word, rule in NAME_RULES.items():
            assert word_holds(word, row) == eval(rule, {}, row), (word, row)  # noqa: S307 - our own rules


def test_twins_are_told_apart_by_the_feature_that_differs_most():
    from segmint.engine.profile import _disambiguate

    prof = pl.DataFrame({"segment": [0, 1, 2], "recency_days_median_pct": [20.0, 22.0, 80.0],
                         "channel_share_app_median_pct": [90.0, 10.0, 50.0],
                         "aov_median_pct": [50.0, 55.0, 50.0]})
    assert _disambiguate(prof, ["A", "A", "B"]) == ["A · more app", "A · less app", "B"]


def test_model_round_trips_exactly_and_refuses_tampering(small_run, tmp_path):
    model = Model.load(small_run)
    model.save(tmp_path / "m")
    again = Model.load(tmp_path / "m")
    np.testing.assert_array_equal(model.centroids, again.centroids)
    assert again.scaler == model.scaler and again.rfm_cuts == model.rfm_cuts
    assert again.columns == model.columns and again.features == model.features
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    for edit, needle in ((lambda d: d["centroids"][0].__setitem__(0, float("nan")), "non-finite"),
                         (lambda d: d["centroids"].pop(), "names for"),
                         (lambda d: d["scaler"]["std"].__setitem__(0, 0.0), "scaler"),
                         (lambda d: d.pop("rfm_cuts"), "rfm_cuts"),
                         (lambda d: d["rfm_cuts"]["frequency"].reverse(), "rfm_cuts.frequency must be in increasing"),
                         (lambda d: d["columns"].__setitem__("customer", 5), "columns.customer"),
                         (lambda d: d["scaler"]["log"].__setitem__(0, "no"), "scaler.log must be true or false"),
                         (lambda d: d["clv"].__setitem__("time_unit", "month"), "CLV time_unit 'month'"),
                         (lambda d: d.__setitem__("micro", [[[0.0] * len(d["scaler"]["features"])]]),
                          "micro must hold the centroids of each of the"),
                         # Two centroids run together in one row were reshaped into two.
                         (lambda d: d.__setitem__("micro", [[[0.0] * 2 * len(d["scaler"]["features"])]]
                                                  * len(d["centroids"])), "micro centroids must be finite rows"),
                         (lambda d: d.__setitem__("format_version", 1), "format_version")):
        broken = json.loads(json.dumps(doc))
        edit(broken)
        (tmp_path / "m" / "model.json").write_text(json.dumps(broken))
        with pytest.raises(InputContractError, match=needle):
            Model.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text('{"format_version": 2, "centroids": [[1')
    with pytest.raises(InputContractError, match="cannot be read"):
        Model.load(tmp_path / "m")


def test_rfm_grid_from_config_overrides_the_default(tmp_path, small_data):
    from segmint.engine.config import load_toml

    cells = "\n".join(f'[[features.rfm_grid]]\nname = "{name}"\nr = {list(rs)}\nf = [1, 2, 3, 4, 5]'
                      for name, rs in (("Recent", (4, 5)), ("Middle", (3,)), ("Old", (1, 2))))
    (tmp_path / "grid.toml").write_text(cells + "\n")
    cfg = load_toml(tmp_path / "grid.toml")
    compute_feature_table([small_data / "transactions"], tmp_path / "f", cfg)
    seg = pl.read_parquet(tmp_path / "f" / "features").select(pl.col("rfm_segment").cast(pl.String), "r_score")
    assert set(seg["rfm_segment"]) == {"Recent", "Middle", "Old"}
    assert (seg.filter(pl.col("rfm_segment") == "Recent")["r_score"] >= 4).all()
    (tmp_path / "bad.toml").write_text('[[features.rfm_grid]]\nname = "All"\nr = [1]\nf = [1]\n')
    with pytest.raises(ConfigError, match="25"):
        load_toml(tmp_path / "bad.toml")


@pytest.mark.parametrize("id_type", [pl.Int64, pl.String])
def test_order_lines_collapse_and_returns_are_not_purchases(tmp_path, id_type):
    df = pl.DataFrame({
        "customer_id": ["b", "a", "a", "a", "a", "b", "b"] if id_type == pl.String else [2, 1, 1, 1, 1, 2, 2],
        "ts": ["2024-01-05", "2024-01-01", "2024-01-01", "2024-01-03", "2024-01-04", "2024-01-06", "2024-01-09"],
        "amount": [5.0, 10.0, 2.5, -2.5, 7.0, 1.0, -3.0],
        "order_id": ["o9", "o1", "o1", "o1", None, None, "c1"],
    })
    df.write_parquet(tmp_path / "t.parquet")
    compute_feature_table([tmp_path / "t.parquet"], tmp_path / "f", RunConfig())
    t = pl.read_parquet(tmp_path / "f" / "features")
    rows = {r["customer_id"]: r for r in t.iter_rows(named=True)}
    a, b = rows["a" if id_type == pl.String else 1], rows["b" if id_type == pl.String else 2]
    # a: order o1 (three lines, one a later refund) + one line without an order id = 2 orders.
    assert (a["frequency"], a["monetary_total"], a["aov"]) == (2, 17.0, 8.5)
    assert a["refund_share"] == pytest.approx(2.5 / 19.5)
    # b: two purchases, then a cancellation invoice (c1): not an order, not the last purchase.
    assert (b["frequency"], b["monetary_total"], b["lt_frequency"]) == (2, 3.0, 1)
    assert b["recency_days"] == 3.0  # the as-of is the latest valid time: the cancellation's, 2024-01-09


def test_features_do_not_depend_on_how_ids_are_spelled(small_data):
    # Compact integer ids take the lookup-table path of the customer grouping; sparse
    # ones (spanning int64) and strings take the sorting path. Same customers, same features.
    from segmint.engine.features.table import compute_features

    lines = pl.read_parquet(small_data / "transactions")
    cfg = RunConfig()
    as_of = lines["ts"].max()
    want = compute_features(lines, as_of, cfg.features).table
    ids = pl.col("customer_id")
    spellings = {"sparse": ids * 10**12 - 5 * 10**18 + ids % 2 * 10**18,
                 "string": pl.format("c{}", ids.cast(pl.String))}
    for name, expr in spellings.items():
        mapping = lines.select(original=ids, customer_id=expr).unique()
        got = compute_features(lines.with_columns(customer_id=expr), as_of, cfg.features).table
        got = got.join(mapping, on="customer_id").sort("original").drop("customer_id").rename(
            {"original": "customer_id"}).select(want.columns)
        assert got.equals(want), name


@pytest.mark.parametrize("place", ["work_dir", "temp"])
def test_scratch_of_a_killed_run_is_removed_by_the_next_wherever_it_lies(small_data, tmp_path, monkeypatch, place):
    """Beside a local output the staging always did; under --work-dir or in the temp folder (no local --out)
    every SIGKILLed run's scratch stayed. A live run's and a resumable run's are left alone."""
    import socket
    import tempfile

    from segmint.engine.pipeline import validate

    base = tmp_path / "scratch"
    monkeypatch.setattr(tempfile, "tempdir", str(base) if place == "temp" else None)
    parent = base if place == "temp" else base / "w"
    parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owners = {"dead": (int(dead.stdout), False), "live": (os.getpid(), False), "kept": (int(dead.stdout), True)}
    for name, (pid, resume) in owners.items():
        folder = parent / f".segmint.work-{name}"
        (folder / "tx").mkdir(parents=True)
        (folder / "_owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "resume": resume}))
    cfg = RunConfig(buckets=3, work_dir=str(parent) if place == "work_dir" else None)
    assert validate([small_data / "transactions"], cfg).rows_in > 0
    assert sorted(p.name for p in parent.iterdir()) == [".segmint.work-kept", ".segmint.work-live"]


def test_run_json_seconds_is_the_time_the_run_took(small_data, small_cfg, tmp_path, monkeypatch):
    """started_at is cut to the second; seconds was counted from it and read up to a second too long. Here
    the clock the run reads is at .999999 of a second as the run starts, the worst case."""
    import time
    import types

    import segmint.engine.pipeline.commands as commands

    class AtSecondsEnd(dt.datetime):
        shift: dt.timedelta | None = None

        @classmethod
        def now(cls, tz=None):
            real = dt.datetime.now(tz)
            if cls.shift is None:
                cls.shift = dt.timedelta(microseconds=999_999 - real.microsecond)
            return real + cls.shift

    monkeypatch.setattr(commands, "dt", types.SimpleNamespace(**{**vars(dt), "datetime": AtSecondsEnd}))
    t0 = time.monotonic()
    result = run([small_data / "transactions"], tmp_path / "run", small_cfg)
    took = time.monotonic() - t0
    seconds = result.manifest["seconds"]
    assert sum(stage["seconds"] for stage in result.manifest["stages"].values()) <= seconds <= took


_KILL_AT = '''
import os, pathlib, shutil, signal, sys
from segmint.engine.io import lease, sink
point = sys.argv.pop(1)
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "commit":            # the manifest written, before _SUCCESS
    lease.Lease.check = die
elif point == "replace":         # _SUCCESS written in the staging folder, before it is renamed
    sink._replace = die
elif point == "delete_old":      # the replaced output half deleted (its _SUCCESS among the first files gone)
    rmtree = shutil.rmtree          # exchanged, it is under the staging folder's name; renamed, an old-* one
    def half(path, *args, **kwargs):
        if (".old-" in str(path) or ".staging-" in str(path)) and (pathlib.Path(path) / "_SUCCESS").exists():
            (pathlib.Path(path) / "_SUCCESS").unlink()
            die()
        return rmtree(path, *args, **kwargs)
    shutil.rmtree = half
elif point == "remove_work":     # the run's scratch half removed (its done markers first, as a file system may)
    rmtree = shutil.rmtree
    def half(path, *args, **kwargs):
        if ".work-" in str(path):
            rmtree(pathlib.Path(path) / "done", ignore_errors=True)
            rmtree(pathlib.Path(path) / "features", ignore_errors=True)
            die()
        return rmtree(path, *args, **kwargs)
    shutil.rmtree = half
from segmint.cli.app import main
sys.exit(main())
'''


@pytest.mark.parametrize("point", ["commit", "replace", "delete_old"])
@pytest.mark.parametrize("name", ["out", "out[1]"])
def test_a_run_killed_while_committing_leaves_nothing_the_next_run_does_not_remove(small_data, tmp_path, point, name):
    # A staging folder killed after its manifest was written had lost its owner file, and a replaced output killed
    # while being deleted had lost its _SUCCESS: neither was taken for segmint's, and each stayed beside the output
    # for good, a copy of its customers. An output named with '[' had its folders looked for by a glob, which
    # matched another output's ('.out1.old-*' for 'out[1]') and none of its own.
    out = tmp_path / name
    other = tmp_path / ".out1.old-0"   # another output's (out1), left alone
    other.mkdir()
    neighbour = tmp_path / f".{name}.old-x.staging-1"   # the staging folder of an output named 'out.old-x'
    neighbour.mkdir()
    args = ["run", str(small_data / "transactions"), "--out", str(out), "--k", "3", "--overwrite"]
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3)))
    killed = subprocess.run([sys.executable, "-c", _KILL_AT, point, *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(p.name.startswith(f".{name}.") for p in tmp_path.iterdir()), "the kill left nothing to clean"
    assert (out / "_SUCCESS").is_file()   # a reader sees the old output or the new one
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3), overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({name, other.name, neighbour.name})
    assert not (out / "_owner.json").exists()


def test_a_resumable_run_killed_while_its_scratch_is_removed_leaves_its_output_committed(small_data, tmp_path):
    """The scratch was removed before the commit: killed meanwhile, a --resume run left a record naming half a
    scratch folder, and every --resume run after failed (exit 1, 'unexpected FileNotFoundError') advising
    --resume, with a copy of the output and the scratch beside it."""
    out = tmp_path / "out"
    args = ["run", str(small_data / "transactions"), "--out", str(out), "--k", "3", "--buckets", "3", "--resume"]
    killed = subprocess.run([sys.executable, "-c", _KILL_AT, "remove_work", *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    want = pl.read_parquet(out / "assignments").sort("customer_id")   # committed before its scratch went
    again = subprocess.run([sys.executable, "-m", "segmint.cli.app", *args, "--overwrite"], capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr
    assert pl.read_parquet(out / "assignments").sort("customer_id").equals(want)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_what_a_kill_between_two_steps_of_a_write_left_is_removed_by_the_next_run(small_data, tmp_path):
    # A lease's temporary file killed before its link (the holder's host and pid), and a staging or work folder
    # killed between its mkdir and its owner file, stayed beside the output for good.
    out = tmp_path / "out"
    left = [tmp_path / "..out.lock.json.0123456789ab.tmp", tmp_path / ".out.staging-20261205T000000Z-0123abcd",
            tmp_path / ".out.work-20261205T000000Z-0123abcd"]
    left[0].write_text("{}")
    left[1].mkdir()
    left[2].mkdir()
    fresh = [tmp_path / "..out.lock.json.ba9876543210.tmp", tmp_path / ".out.staging-20261205T000001Z-0123abcd"]
    for path in left:
        os.utime(path, (0, dt.datetime.now().timestamp() - 120))
    fresh[0].write_text("{}")
    fresh[1].mkdir()   # another run's, a moment old: its owner file is on its way
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *(p.name for p in fresh)])


@pytest.mark.parametrize("how", ["first", "exchange", "two renames"])
def test_a_signal_just_after_the_commit_keeps_the_new_output_and_says_so(small_data, tmp_path, monkeypatch, how):
    # Replacing by two renames, putting the old output back failed ("Directory not empty": exit 1) and left it
    # aside; a first output kept its _owner.json; each said "no output was changed" of a new output in place.
    from typer.testing import CliRunner

    from segmint.cli.app import app
    from segmint.engine.io import sink

    out = tmp_path / "out"
    if how != "first":
        run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=4)))
    rename, exchange = Path.rename, sink._exchange
    def rename_then_a_signal(self, target):
        done = rename(self, target)
        if ".staging-" in self.name:
            raise KeyboardInterrupt
        return done
    def exchange_then_a_signal(a, b):
        assert exchange(a, b)   # this machine's file system exchanges folders in one step
        raise KeyboardInterrupt
    monkeypatch.setattr(Path, "rename", rename_then_a_signal)
    if how == "exchange":
        monkeypatch.setattr(sink, "_exchange", exchange_then_a_signal)
    elif how == "two renames":
        monkeypatch.setattr(sink, "_exchange", lambda a, b: False)
    r = CliRunner().invoke(app, ["--threads", "2", "run", str(small_data / "transactions"), "--out", str(out),
                                 "--k", "3", "--overwrite"])
    monkeypatch.undo()
    assert r.exit_code == 130 and "interrupted after the output was committed" in r.stderr, r.stderr
    assert Model.load(out).centroids.shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not (out / "_owner.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("where", ["owner file", "scratch removal", "lease release"])
def test_a_real_signal_at_the_commit_is_taken_once_the_commit_and_its_clean_up_are_done(small_data, tmp_path,
                                                                                       monkeypatch, sig, where):
    # A signal as the old output got its owner file left that file in it and said "no output was changed"; one as
    # the scratch or the lease was removed left the work folder or the lock beside the output (helper sweep).
    from typer.testing import CliRunner

    from segmint.cli.app import app
    from segmint.engine.io import lease, sink

    out, work = tmp_path / "out", tmp_path / "work"
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=4)))
    sent = []
    def send(when: bool) -> None:
        if when and not sent:
            sent.append(sig)
            os.kill(os.getpid(), sig)
    write_json, rmtree, release = sink.write_json, shutil.rmtree, lease.Lease.release
    def write_then(path, *args, **kwargs):
        write_json(path, *args, **kwargs)
        send(where == "owner file" and Path(str(path)) == out / "_owner.json")
    def rmtree_then(path, *args, **kwargs):
        send(where == "scratch removal" and ".work-" in Path(path).name)
        return rmtree(path, *args, **kwargs)
    def release_then(self):
        send(where == "lease release")
        return release(self)
    monkeypatch.setattr(sink, "write_json", write_then)
    monkeypatch.setattr(shutil, "rmtree", rmtree_then)
    monkeypatch.setattr(lease.Lease, "release", release_then)
    work.mkdir()
    r = CliRunner().invoke(app, ["--threads", "2", "run", str(small_data / "transactions"), "--out", str(out),
                                 "--k", "3", "--overwrite", "--work-dir", str(work)])
    monkeypatch.undo()
    how, code = ("interrupted", 130) if sig == signal.SIGINT else ("terminated", 143)
    assert sent and r.exit_code == code and f"{how} after the output was committed" in r.stderr, r.stderr
    assert Model.load(out).centroids.shape[0] == 3 and not (out / "_owner.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"] and not any(work.iterdir())


def test_a_signal_after_the_commit_while_the_lease_is_released_says_the_output_is_committed(small_data, tmp_path,
                                                                                           monkeypatch):
    # The commit's own steps marked it; a signal later, as the lease was released or the --resume record
    # forgotten, said "no output was changed" and "rerun the same command with --resume".
    from typer.testing import CliRunner

    from segmint.cli.app import app
    from segmint.engine.io.lease import Lease

    release = Lease.release
    def then_a_signal(self):
        release(self)
        raise KeyboardInterrupt
    monkeypatch.setattr(Lease, "release", then_a_signal)
    r = CliRunner().invoke(app, ["--threads", "2", "run", str(small_data / "transactions"), "--out",
                                 str(tmp_path / "out"), "--k", "3", "--resume"])
    monkeypatch.undo()
    assert r.exit_code == 130 and "interrupted after the output was committed" in r.stderr, r.stderr
    assert "--resume" not in r.stderr and Model.load(tmp_path / "out").centroids.shape[0] == 3


def test_a_replace_the_system_will_not_exchange_or_stopped_before_it_leaves_the_output_as_it_was(
        small_data, tmp_path, monkeypatch):
    # An exchange refused with EPERM (a sandbox's filter) failed the commit (exit 1) rather than renaming twice,
    # and it, or a signal before the exchange, left the owner file written for the old output inside it.
    import ctypes
    import errno

    from segmint.engine.io import sink

    out = tmp_path / "out"
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=4)))
    def refused(*args):
        ctypes.set_errno(errno.EPERM)
        return -1
    monkeypatch.setattr(sink, "_renameat2", lambda: refused)
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3), overwrite=True))
    assert Model.load(out).centroids.shape[0] == 3 and not (out / "_owner.json").exists()
    def a_signal(a, b):
        raise KeyboardInterrupt
    monkeypatch.setattr(sink, "_exchange", a_signal)
    with pytest.raises(KeyboardInterrupt) as caught:
        run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=5), overwrite=True))
    assert not getattr(caught.value, "output_committed", False)
    assert Model.load(out).centroids.shape[0] == 3 and not (out / "_owner.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_is_replaced_in_one_step_or_by_two_renames_where_the_system_cannot(small_data, tmp_path,
                                                                                    monkeypatch):
    # Two renames left no output between them: a reader failed there, and a kill there left none until the next
    # write put the old one back.
    from segmint.engine.io import sink

    out = tmp_path / "out"
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=4)))
    seen = []
    exchange = sink._exchange
    def watched(a, b):
        done = exchange(a, b)
        seen.append(((b / "_SUCCESS").is_file(), json.loads((b / "_manifest.json").read_text())["run_id"]))
        return done
    monkeypatch.setattr(sink, "_exchange", watched)
    replaced = run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3), overwrite=True))
    assert seen == [(True, replaced.manifest["run_id"])]   # the new output, whole, in the same step
    monkeypatch.setattr(sink, "_exchange", lambda a, b: False)
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=5), overwrite=True))
    assert Model.load(out).centroids.shape[0] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not (out / "_owner.json").exists()


def test_a_resumed_run_killed_after_its_success_file_commits_the_manifest_of_an_uninterrupted_run(small_data,
                                                                                                 tmp_path):
    # The next --resume attempt reused the staging folder and listed the first attempt's _SUCCESS and
    # _manifest.json in its manifest (with the old manifest's size).

    args = ["run", str(small_data / "transactions"), "--out", str(tmp_path / "out"), "--k", "3", "--resume"]
    killed = subprocess.run([sys.executable, "-c", _KILL_AT, "replace", *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = subprocess.run([sys.executable, "-m", "segmint.cli.app", *args], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    listed = json.loads((tmp_path / "out" / "_manifest.json").read_text())["files"]
    assert not {"_SUCCESS", "_manifest.json", "_owner.json"} & {f["path"] for f in listed}
    on_disk = {str(p.relative_to(tmp_path / "out")): p.stat().st_size for p in (tmp_path / "out").rglob("*")
               if p.is_file() and p.name not in ("_SUCCESS", "_manifest.json")}
    assert {f["path"]: f["bytes"] for f in listed} == on_disk


@pytest.mark.parametrize(("out", "given", "overlaps"), [
    ("data/in1/out", "data/in[12]/*.parquet", True),    # cut at '[', the pattern was 'data/in': in1 not seen
    ("data/out", "data/in[12]/*.parquet", False),
    ("data/tx/new.parquet", "data/tx/*.parquet", True),
    ("data/tx/out", "data/tx/*.parquet", False),          # the pattern reads no folder below data/tx
    ("data", "data/tx/*.parquet", True),
    ("abs/q/r", "abs/**/x.parquet", True),
    ("s3://b/in[1]/out", "s3://b/in[1]", True),           # a prefix that may be read as itself
    ("s3://b/in2/out", "s3://b/in[1]", False),
    ("s3://b/data/run1", "s3://b/data/*.parquet", True),  # '*' matches across '/' on a store: run1's outputs
    ("s3://b/data/in1/out", "s3://b/data/in*.parquet", True),
    ("s3://b/other/out", "s3://b/data/*.parquet", False),
    ("/tmp/x/out", "/tm*/**/*.parquet", True),           # the folder above '/tm*' is '/', not the working folder
])
def test_an_output_is_inside_what_a_pattern_reads(out, given, overlaps, tmp_path, monkeypatch):
    from segmint.engine.io.sink import check_not_inside

    monkeypatch.chdir(tmp_path)
    if overlaps:
        with pytest.raises(ConfigError, match="overlaps the input"):
            check_not_inside(out, {"inputs": [given]})
    else:
        check_not_inside(out, {"inputs": [given]})
    (tmp_path / "in[1]").mkdir()   # a local folder that exists is itself, not the pattern 'in1'
    with pytest.raises(ConfigError, match="overlaps the input"):
        check_not_inside("in[1]/out", {"inputs": ["in[1]"]})
    check_not_inside("in1/out", {"inputs": ["in[1]"]})


def _gone_pid() -> int:
    """A pid of this host no process holds now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_or_folder_of_another_pid_namespace_on_this_host_is_not_judged_by_its_pid(small_data, tmp_path):
    """Containers on one host (docker --network host) share its name, not its pids: a run took a live run's
    lease over, its pid being no process here, removed its scratch and committed, and the other failed (exit 1).
    In another PID namespace a lease is judged by its age alone, and a folder is left to its own run."""
    import socket

    from segmint.engine.io.lease import Holder, lock_path
    from segmint.engine.io.sink import OWNER, remove_stale
    from segmint.engine.runtime import pid_namespace

    if not pid_namespace():
        pytest.skip("no PID namespaces here")
    out, pid = tmp_path / "out", _gone_pid()
    live = Holder("20261205T000000Z-0aa0aa0a", "run", socket.gethostname(), pid, "2026-12-05T00:00:00+00:00",
                  lease_seconds=600, pid_namespace="pid:[1]")
    Path(lock_path(out)).write_text(json.dumps(dataclasses.asdict(live)))
    with pytest.raises(OutputExistsError, match=r"being written by run 20261205T000000Z-0aa0aa0a"):
        run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3)))
    # In this namespace (or a lock written before namespaces were kept), a gone pid is a dead run.
    for holder in (dataclasses.replace(live, pid_namespace=pid_namespace()),
                   dataclasses.replace(live, pid_namespace=None)):
        Path(lock_path(out)).write_text(json.dumps(dataclasses.asdict(holder)))
        run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3), overwrite=True))
        assert not Path(lock_path(out)).exists()
    # A work folder of a run in another namespace stays; one of a gone run here goes.
    theirs, ours = tmp_path / ".out.work-20261205T000000Z-0bb0bb0b", tmp_path / ".out.work-20261205T000000Z-0cc0cc0c"
    for folder, space in ((theirs, "pid:[1]"), (ours, pid_namespace())):
        folder.mkdir()
        (folder / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "pid_namespace": space,
                                                "resume": False}))
    assert remove_stale(out) == [ours] and theirs.exists()


def test_a_lock_whose_write_landed_though_its_reply_was_lost_is_this_runs(tmp_path, monkeypatch):
    # The store applied the conditional PUT and the reply was lost; the retry found the lock there: the run
    # stopped (exit 4, "being written by" itself) and left its lock for the lease's length.
    from segmint.engine.io import lease, store

    put_new = store.put_new
    def landed_but_unanswered(path, data, options=None):
        put_new(path, data, options)
        return None
    monkeypatch.setattr(store, "put_new", landed_but_unanswered)
    holder = lease.Holder.this_process("20261205T000000Z-0dd0dd0d", "run", 60)
    with lease.claim(tmp_path / "out", holder, {}) as held:
        assert held.holder == holder and Path(lease.lock_path(tmp_path / "out")).exists()
    assert not Path(lease.lock_path(tmp_path / "out")).exists()


def test_a_killed_runs_folders_beside_the_output_go_when_a_run_holds_its_lease_whatever_their_namespace(
        small_data, tmp_path):
    """A container restarted under its name (a new PID namespace) could not judge its killed run's pid: that
    run's staging folder, a copy of the customers' outputs, stayed beside the output for good. A run that holds
    the output's lease knows no other run writes there: it removes the others' folders, not one kept for
    --resume."""
    import socket

    from segmint.engine.io.lease import Holder, lock_path
    from segmint.engine.io.sink import OWNER

    out, pid = tmp_path / "out", _gone_pid()
    before = dict(host=socket.gethostname(), pid=pid, pid_namespace="pid:[1]")
    dead = Holder("20261205T000000Z-0aa0aa0a", "run", before["host"], pid, "2026-12-05T00:00:00+00:00",
                  lease_seconds=1, pid_namespace="pid:[1]")
    Path(lock_path(out)).write_text(json.dumps(dataclasses.asdict(dead)))
    staging, kept = tmp_path / f".out.staging-{dead.run_id}", tmp_path / ".out.staging-20261205T000000Z-0bb0bb0b"
    # Work folders beside a name other runs use as their base (the temp folder's "segmint", a --work-dir's) are
    # those runs', of other outputs: a live one's scratch went, and that run failed.
    other = tmp_path / ".out.work-20261205T000000Z-0cc0cc0c"
    for folder, resume in ((staging, False), (kept, True), (other, False)):
        folder.mkdir()
        (folder / "assignments.parquet").write_bytes(b"customers")
        (folder / OWNER).write_text(json.dumps({**before, "resume": resume}))
    time.sleep(1.5)   # its lease unrenewed for its length: dead
    run([small_data / "transactions"], out, RunConfig(cluster=ClusterConfig(k=3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", kept.name, other.name])


def test_a_lease_renewal_that_landed_though_its_reply_was_lost_keeps_the_lease(tmp_path, monkeypatch):
    # The renewal's conditional write landed and its reply was lost: the run "lost its claim" (exit 4) to itself.
    from segmint.engine.io import lease, store

    holder = lease.Holder.this_process("20261205T000000Z-0ee0ee0e", "run", 0.4)
    with lease.claim(tmp_path / "out", holder, {}) as held:
        put_if = store.put_if
        def landed_but_unanswered(path, data, seen, options=None):
            put_if(path, data, seen, options)
            return None
        monkeypatch.setattr(store, "put_if", landed_but_unanswered)
        time.sleep(0.35)   # three renewals, every reply lost
        monkeypatch.undo()
        held.check()
