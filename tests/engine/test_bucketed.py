"""Bucket-by-bucket execution gives the same features and assignments as in-memory execution."""

import dataclasses
import hashlib
import json

import numpy as np
import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig, parse_size
from segmint.engine.errors import ConfigError
from segmint.engine.pipeline import plan_buckets, run


def _dirty_copy(small_data, tmp_path, string_ids: bool):
    tx = pl.read_parquet(small_data / "transactions")
    bad = tx.head(40).with_columns(
        customer_id=pl.when(pl.int_range(40) < 10).then(None).otherwise(pl.col("customer_id")),
        amount=pl.when(pl.int_range(40).is_between(10, 19)).then(float("nan")).otherwise(pl.col("amount")))
    tx = pl.concat([tx, bad, tx.sample(50, seed=1)])  # rejects and exact repeats
    if string_ids:
        tx = tx.with_columns(pl.format("c-{}", pl.col("customer_id")).alias("customer_id"))
    path = tmp_path / ("s" if string_ids else "i")
    path.mkdir()
    parts = tx.with_columns(part=pl.int_range(pl.len()) % 3).partition_by("part", maintain_order=True)
    for i, part in enumerate(parts):
        part.drop("part").write_parquet(path / f"part-{i}.parquet")
    return path


def _digests(folder):
    a = pl.read_parquet(folder / "assignments").sort("customer_id")
    return a, hashlib.sha256(a.write_ipc(None).getvalue()).hexdigest()


@pytest.mark.parametrize("string_ids", [False, True])
def test_bucketed_equals_in_memory(small_data, tmp_path, string_ids):
    data = _dirty_copy(small_data, tmp_path, string_ids)
    cfg = RunConfig(cluster=ClusterConfig(k=5, seed=2), dedupe_on=("customer_id", "ts", "order_id", "amount"))
    run([data], tmp_path / "mem", cfg)
    run([data], tmp_path / "bk", dataclasses.replace(cfg, buckets=7))
    mem, mem_digest = _digests(tmp_path / "mem")
    bk, bk_digest = _digests(tmp_path / "bk")
    assert mem.height == bk.height > 2000
    assert mem_digest == bk_digest  # every feature, segment, distance and margin
    m_rows = json.loads((tmp_path / "mem" / "run.json").read_text())["rows"]
    b_run = json.loads((tmp_path / "bk" / "run.json").read_text())
    assert b_run["rows"] == m_rows and b_run["buckets"] == 7
    assert m_rows["rejected_by_reason"]["null_customer_id"] == 10 and m_rows["rejected_by_reason"]["duplicate"] > 0
    rejects = pl.read_parquet(tmp_path / "bk" / "rejects")
    assert rejects.height == m_rows["rejected"]
    prof_m = pl.read_parquet(tmp_path / "mem" / "profiles.parquet")
    prof_b = pl.read_parquet(tmp_path / "bk" / "profiles.parquet")
    assert prof_b["customers"].to_list() == prof_m["customers"].to_list()
    np.testing.assert_allclose(prof_b["revenue"], prof_m["revenue"], rtol=1e-9)
    np.testing.assert_allclose(prof_b["frequency_mean"], prof_m["frequency_mean"], rtol=1e-9)
    assert (tmp_path / "bk" / "model" / "model.json").exists()
    assert not list(tmp_path.glob(".*work*"))  # the work folder is removed


def test_memory_limit_decides_the_bucket_count(small_data):
    tx = [small_data / "transactions"]
    assert plan_buckets(tx, RunConfig(memory_limit=parse_size("1GB"))) == 1
    rows = pl.scan_parquet(small_data / "transactions").select(pl.len()).collect().item()
    assert plan_buckets(tx, RunConfig(memory_limit=parse_size("2MB"))) == -(-rows * 250 // 2_000_000)


def test_bucketed_refuses_what_it_cannot_do_yet(small_data, tmp_path):
    from segmint.engine.config import EventSource

    with pytest.raises(ConfigError, match="not supported yet"):
        run([small_data / "transactions"], tmp_path / "o",
            RunConfig(buckets=2, events=EventSource(paths=(str(small_data / "events"),))))
    with pytest.raises(ConfigError, match="must include the customer column"):
        run([small_data / "transactions"], tmp_path / "o", RunConfig(buckets=2, dedupe_on=("ts",)))


def test_parse_size():
    assert parse_size("2GB") == 2_000_000_000 and parse_size("512MiB") == 512 * 2**20
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots")


def test_bucket_size_is_capped_once_bucketed(small_data, monkeypatch):
    import segmint.engine.pipeline as pipeline

    tx = [small_data / "transactions"]
    rows = pl.scan_parquet(small_data / "transactions").select(pl.len()).collect().item()
    monkeypatch.setattr(pipeline, "MAX_BUCKET_ROWS", rows // 10)
    assert plan_buckets(tx, RunConfig(memory_limit=parse_size("1GB"))) == 1  # fits: stays in memory
    assert plan_buckets(tx, RunConfig(memory_limit=parse_size("4MB"))) == -(-rows // (rows // 10))


@pytest.mark.slow
def test_bucketed_equals_in_memory_on_scenario_s(tmp_path):
    """Scale check, run by hand (pytest -m slow): 45 k customers, 1 M lines, 16 buckets."""
    from segmint.bench.scenarios import SCENARIOS, ensure_data

    data = ensure_data(SCENARIOS["S"], 0, tmp_path / "cache") / "transactions"
    cfg = RunConfig(cluster=ClusterConfig(k=8, seed=1))
    run([data], tmp_path / "mem", cfg)
    run([data], tmp_path / "bk", dataclasses.replace(cfg, buckets=16))
    assert _digests(tmp_path / "mem")[1] == _digests(tmp_path / "bk")[1]


def test_a_bucket_of_rejects_only_keeps_its_rejects(tmp_path):
    # Many buckets for few customers: some buckets hold only null-id rows.
    n = 200
    df = pl.DataFrame({"customer_id": [i % 20 if i % 4 else None for i in range(n)],
                       "ts": [f"2024-01-{1 + i % 28:02d}" for i in range(n)], "amount": [1.0 + i for i in range(n)]})
    df.write_parquet(tmp_path / "t.parquet")
    cfg = RunConfig(columns=dataclasses.replace(RunConfig().columns, time_format="%Y-%m-%d"),
                    cluster=ClusterConfig(k=2), buckets=40)
    run([tmp_path / "t.parquet"], tmp_path / "o", cfg)
    run([tmp_path / "t.parquet"], tmp_path / "mem", dataclasses.replace(cfg, buckets=1))
    rejects = pl.read_parquet(tmp_path / "o" / "rejects")
    assert rejects.height == 50 and set(rejects["reason"]) == {"null_customer_id"}
    # ids i % 20 with i % 4 != 0: 15 customers
    assert _digests(tmp_path / "o")[1] == _digests(tmp_path / "mem")[1]
    assert _digests(tmp_path / "o")[0].height == 15


def test_bucketed_assign_equals_in_memory(small_data, small_run, tmp_path):
    from segmint.engine.pipeline import assign_customers

    data = _dirty_copy(small_data, tmp_path, string_ids=False)
    cfg = RunConfig(dedupe_on=("customer_id", "ts", "order_id", "amount"))
    mem = assign_customers(small_run, [data], tmp_path / "mem", cfg)
    bk = assign_customers(small_run, [data], tmp_path / "bk", dataclasses.replace(cfg, buckets=5))
    (mem_table, mem_digest), (bk_table, bk_digest) = _digests(tmp_path / "mem"), _digests(tmp_path / "bk")
    assert mem_table.height == bk_table.height > 2000
    assert mem_digest == bk_digest  # features, CLV, segments, distances and margins
    assert bk.manifest["buckets"] == 5 and bk.manifest["rows"] == mem.manifest["rows"]
    assert bk.manifest["clustering"]["inertia"] == pytest.approx(mem.manifest["clustering"]["inertia"], rel=1e-12)
    prof_m = pl.read_parquet(tmp_path / "mem" / "profiles.parquet")
    prof_b = pl.read_parquet(tmp_path / "bk" / "profiles.parquet")
    assert prof_b["name"].to_list() == prof_m["name"].to_list()
    assert prof_b["customers"].to_list() == prof_m["customers"].to_list()
    np.testing.assert_allclose(prof_b["clv_total"], prof_m["clv_total"], rtol=1e-9)
    assert pl.read_parquet(tmp_path / "bk" / "rejects").height == mem.manifest["rows"]["rejected"]
    assert not (tmp_path / "bk" / "model").exists()
    assert not list(tmp_path.glob(".*work*"))
