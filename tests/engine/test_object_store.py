"""Inputs and outputs on an object store: a local S3 server (moto), bound to 127.0.0.1 only."""

import dataclasses
import json

import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.errors import ConfigError, InputContractError, OutputExistsError
from segmint.engine.io import store
from segmint.engine.pipeline import assign_customers, run

pytest.importorskip("moto")


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, a bucket, and the storage options to reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test-key", aws_secret_access_key="test-secret",
                 region_name="us-east-1").create_bucket(Bucket="segmint-test")
    options = (("aws_endpoint_url", endpoint), ("aws_allow_http", "true"), ("aws_access_key_id", "test-key"),
               ("aws_secret_access_key", "test-secret"), ("aws_region", "us-east-1"))
    yield options
    server.stop()


@pytest.fixture(scope="module")
def s3_data(s3, small_data):
    tx = pl.read_parquet(small_data / "transactions")
    for i, part in enumerate(tx.with_columns(p=pl.int_range(pl.len()) % 2).partition_by("p", maintain_order=True)):
        store.write_parquet(part.drop("p"), f"s3://segmint-test/data/tx/part-{i}.parquet", dict(s3))
    store.write_bytes("s3://segmint-test/data/tx/_SUCCESS", b"", dict(s3))
    return "s3://segmint-test/data/tx"


def test_a_run_reads_and_writes_s3_like_a_local_run(s3, s3_data, small_data, tmp_path):
    cfg = RunConfig(cluster=ClusterConfig(k=4), storage_options=s3, buckets=3)
    out = "s3://segmint-test/runs/a"
    result = run([s3_data], out, cfg)
    (tmp_path / "tx").mkdir()
    for i in range(2):  # the same files, local
        (tmp_path / "tx" / f"part-{i}.parquet").write_bytes(
            store.read_bytes(f"{s3_data}/part-{i}.parquet", dict(s3)))
    local = run([tmp_path / "tx"], tmp_path / "local", RunConfig(cluster=ClusterConfig(k=4), buckets=3))
    remote = store.read_parquet(store.join(out, "assignments"), dict(s3))
    assert remote.sort("customer_id").drop("segment").equals(
        pl.read_parquet(tmp_path / "local" / "assignments").sort("customer_id").drop("segment"))
    files = store.list_files(out, dict(s3))
    run_id = result.manifest["run_id"]
    assert store.read_bytes(f"{out}/_SUCCESS", dict(s3)).decode() == run_id
    manifest = json.loads(store.read_bytes(f"{out}/_manifest.json", dict(s3)))
    assert manifest["run_id"] == run_id
    assert {f"{out}/{f['path']}" for f in manifest["files"]} == set(files) - {f"{out}/_SUCCESS", f"{out}/_manifest.json"}
    assert all(run_id in p for p in files if "/part-" in p)  # parts carry the run id
    assert not [p for p in files if "_staging-" in p or "_work-" in p]
    # Credentials are never written.
    for path in files:
        assert b"test-secret" not in store.read_bytes(path, dict(s3))
    assert local.manifest["rows"] == result.manifest["rows"]


def test_overwrite_replaces_a_committed_run_and_removes_its_files_after(s3, s3_data):
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3)
    out = "s3://segmint-test/runs/b"
    first = run([s3_data], out, cfg)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run([s3_data], out, cfg)
    second = run([s3_data], out, RunConfig(cluster=ClusterConfig(k=5), storage_options=s3, overwrite=True))
    files = store.list_files(out, dict(s3))
    assert not [p for p in files if first.manifest["run_id"] in p]
    assert store.read_bytes(f"{out}/_SUCCESS", dict(s3)).decode() == second.manifest["run_id"]
    assert store.read_parquet(f"{out}/assignments", dict(s3))["segment"].n_unique() == 5
    # A model on S3 scores new customers.
    assign_customers(out, [s3_data], "s3://segmint-test/runs/b-scored", RunConfig(storage_options=s3))
    assert store.read_parquet("s3://segmint-test/runs/b-scored/assignments", dict(s3)).height == 3000


def test_a_failed_run_leaves_the_committed_run_and_none_of_its_own_files(s3, s3_data, monkeypatch):
    out = "s3://segmint-test/runs/c"
    first = run([s3_data], out, RunConfig(cluster=ClusterConfig(k=3), storage_options=s3))
    before = store.list_files(out, dict(s3))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("segmint.engine.pipeline.commands.build_profiles", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run([s3_data], out, RunConfig(cluster=ClusterConfig(k=4), storage_options=s3, overwrite=True))
    assert store.list_files(out, dict(s3)) == before
    assert store.read_bytes(f"{out}/_SUCCESS", dict(s3)).decode() == first.manifest["run_id"]


def test_unknown_schemes_and_unreachable_stores_are_one_line_errors(s3, s3_data, small_data, tmp_path,
                                                                       monkeypatch):
    with pytest.raises(ConfigError, match="unknown storage scheme ftp://"):
        run(["ftp://host/tx"], tmp_path / "o", RunConfig())
    with pytest.raises(ConfigError, match="unknown storage scheme ftp://"):
        run([small_data / "transactions"], "ftp://host/out", RunConfig())
    assert not (tmp_path / "ftp:").exists() and not list(tmp_path.iterdir())
    closed = tuple((k, "http://127.0.0.1:9") if k == "aws_endpoint_url" else (k, v) for k, v in s3)
    with pytest.raises(InputContractError, match="cannot reach|cannot read"):
        run([s3_data], tmp_path / "o", RunConfig(storage_options=closed))
    assert not (tmp_path / "o").exists()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(InputContractError, match="not found|cannot reach"):
        run(["s3://segmint-test/no/such/prefix"], tmp_path / "o", RunConfig(storage_options=s3))


def test_a_resumed_run_on_s3_writes_what_an_uninterrupted_run_writes(s3, s3_data, monkeypatch):
    from segmint.engine.pipeline import commands

    cfg = RunConfig(cluster=ClusterConfig(k=4), storage_options=s3, buckets=3, resume=True)
    score = commands.score_bucket
    scored = []

    def lost_on_bucket_1(job):
        if job.bucket == 1:
            raise ConnectionResetError("worker lost")
        scored.append(job.bucket)
        return score(job)

    out = "s3://segmint-test/runs/resumed"
    with monkeypatch.context() as m:
        m.setattr(commands, "score_bucket", lost_on_bucket_1)
        with pytest.raises(ConnectionResetError):
            run([s3_data], out, cfg)
    assert scored == [0]
    assert store.exists(f"{out}/_resume.json", dict(s3)) and not store.exists(f"{out}/_SUCCESS", dict(s3))
    monkeypatch.setattr(commands, "score_bucket", lambda job: (scored.append(job.bucket), score(job))[1])
    result = run([s3_data], out, cfg)
    assert scored == [0, 1, 2]
    files = store.list_files(out, dict(s3))
    assert not [p for p in files if "_staging-" in p or "_resume" in p]
    assert all(result.manifest["run_id"] in p for p in files if "/part-" in p)
    # A resumed run replaces a committed output only with --overwrite, like any run.
    with monkeypatch.context() as m:
        m.setattr(commands, "score_bucket", lost_on_bucket_1)
        with pytest.raises(ConnectionResetError):
            run([s3_data], out, dataclasses.replace(cfg, overwrite=True))
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run([s3_data], out, cfg)
    # A run without --resume removes what the failed one kept, and writes where it wrote.
    again = run([s3_data], out, dataclasses.replace(cfg, resume=False, overwrite=True))
    files = store.list_files(out, dict(s3))
    assert not [p for p in files if "_staging-" in p or "_resume" in p]
    assert all(again.manifest["run_id"] in p for p in files if "/part-" in p)
    fresh = run([s3_data], "s3://segmint-test/runs/fresh", dataclasses.replace(cfg, resume=False))
    read = (lambda o: store.read_parquet(f"{o}/assignments", dict(s3)).sort("customer_id"))
    assert read(out).equals(read("s3://segmint-test/runs/fresh"))
    assert fresh.manifest["run_id"] != result.manifest["run_id"]
