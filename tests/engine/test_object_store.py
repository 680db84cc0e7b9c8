"""Inputs and outputs on an object store: a local S3 server (moto), bound to 127.0.0.1 only."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segmint.engine import api
from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.errors import ConfigError, InputContractError, OutputExistsError
from segmint.engine.io import store
from segmint.engine.io.committed import open_output
from segmint.engine.model import Model
from segmint.engine.pipeline import assign_customers, run
from segmint.engine.pipeline.abtests import abtest_split
from segmint.engine.pipeline.compare import compare_runs

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


def _committed(out, s3):
    """The committed run's assignments, read as every segmint reader reads them."""
    return open_output(out, dict(s3)).scan("assignments").collect().sort("customer_id")


def test_a_run_reads_and_writes_s3_like_a_local_run(s3, s3_data, small_data, tmp_path):
    cfg = RunConfig(cluster=ClusterConfig(k=4), storage_options=s3, buckets=3)
    out = "s3://segmint-test/runs/a"
    result = run([s3_data], out, cfg)
    (tmp_path / "tx").mkdir()
    for i in range(2):  # the same files, local
        (tmp_path / "tx" / f"part-{i}.parquet").write_bytes(
            store.read_bytes(f"{s3_data}/part-{i}.parquet", dict(s3)))
    local = run([tmp_path / "tx"], tmp_path / "local", RunConfig(cluster=ClusterConfig(k=4), buckets=3))
    # The same table, segments included, as the local run's.
    local_rows = pl.read_parquet(tmp_path / "local" / "assignments").sort("customer_id")
    assert _committed(out, s3).select(local_rows.columns).equals(local_rows)
    files = store.list_files(out, dict(s3))
    run_id = result.manifest["run_id"]
    root = f"{out}/run-{run_id}"
    assert json.loads(store.read_bytes(f"{out}/_SUCCESS", dict(s3))) == {"run_id": run_id, "root": f"run-{run_id}"}
    manifest = json.loads(store.read_bytes(f"{root}/_manifest.json", dict(s3)))
    assert manifest["run_id"] == run_id
    assert {f"{root}/{f['path']}" for f in manifest["files"]} == set(files) - {f"{out}/_SUCCESS", f"{root}/_manifest.json"}
    assert all(f == f"{out}/_SUCCESS" or f.startswith(root + "/") for f in files)  # no lock, staging or work left
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
    assert open_output(out, dict(s3)).run_id == second.manifest["run_id"]
    assert _committed(out, s3)["segment"].n_unique() == 5
    # A model on S3 scores new customers.
    assign_customers(out, [s3_data], "s3://segmint-test/runs/b-scored", RunConfig(storage_options=s3))
    assert _committed("s3://segmint-test/runs/b-scored", s3).height == 3000


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
    assert open_output(out, dict(s3)).run_id == first.manifest["run_id"]


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
    assert not [p for p in files if "_resume" in p or "_lock" in p]
    assert all(f"/run-{result.manifest['run_id']}/" in p for p in files if "/part-" in p)
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
    assert not [p for p in files if "_resume" in p or "_lock" in p]
    assert all(f"/run-{again.manifest['run_id']}/" in p for p in files if "/part-" in p)
    fresh = run([s3_data], "s3://segmint-test/runs/fresh", dataclasses.replace(cfg, resume=False))
    assert _committed(out, s3).equals(_committed("s3://segmint-test/runs/fresh", s3))
    assert fresh.manifest["run_id"] != result.manifest["run_id"]


# Kill -9 at any point: readers see the previous run or the new one, whole (issue #20).

REPO = Path(__file__).resolve().parents[2]


def _cli(s3, *args: str, kill_at: int = 0, ops_file: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process, killed by SIGKILL before its ``kill_at``-th store operation (tests/kill_at.py)."""
    options = [x for key, value in s3 for x in ("--storage-option", f"{key}={value}")]
    env = os.environ | {"SEGMINT_TEST_KILL_AT": str(kill_at), "SEGMINT_TEST_OPS_FILE": str(ops_file or "")}
    return subprocess.run([sys.executable, "-m", "tests.kill_at", "--threads", "2", *args, *options], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def _copy_output(source: str, target: str, s3) -> None:
    """Put a committed output at ``target`` as it is at ``source`` (the pointer's folder name is relative)."""
    store.remove_prefix(target, dict(s3))
    for path in store.list_files(source, dict(s3)):
        store.copy(path, target + path[len(source):], dict(s3))


def _state(out: str, s3) -> tuple[pl.DataFrame, np.ndarray]:
    """What every segmint reader builds on: the committed assignments and the model."""
    return _committed(out, s3), Model.load(out, dict(s3)).centroids


def test_a_run_killed_at_any_point_leaves_the_previous_or_the_new_output_whole(s3, s3_data, tmp_path):
    base = "s3://segmint-test/kill"
    run_a = ("run", s3_data, "--k", "3", "--seed", "1", "--buckets", "3")
    run_b = ("run", s3_data, "--k", "5", "--seed", "2", "--buckets", "3")
    for args, out in ((run_a, f"{base}/clean-a"), (run_b, f"{base}/clean-b")):
        assert _cli(s3, *args, "--out", out).returncode == 0
    clean = {name: _state(f"{base}/clean-{name}", s3) for name in "ab"}
    out = f"{base}/out"
    _copy_output(f"{base}/clean-a", out, s3)
    ops = tmp_path / "ops"
    assert _cli(s3, *run_b, "--out", out, "--overwrite", ops_file=ops).returncode == 0
    total = int(ops.read_text())
    assert total > 20
    # Every 6th operation of the run, and each of the last ten (the commit and what follows it).
    points = sorted({*range(1, total - 10, 6), *range(total - 9, total + 1)})
    seen = set()
    for i, at in enumerate(points):
        _copy_output(f"{base}/clean-a", out, s3)
        killed = _cli(s3, *run_b, "--out", out, "--overwrite", kill_at=at)
        assert killed.returncode == -signal.SIGKILL, (at, killed.stderr)
        assignments, centroids = _state(out, s3)
        which = next((name for name, (rows, cents) in clean.items()
                      if rows.equals(assignments) and np.array_equal(cents, centroids)), None)
        assert which is not None, f"killed before operation {at} of {total}: neither run A nor run B"
        seen.add(which)
        if i % 4 == 0 or at == points[-1]:
            # The next run claims the output (the dead run's lease is taken over), removes what the
            # dead run left and commits; only the committed run's files remain.
            again = _cli(s3, *run_b, "--out", out, "--overwrite")
            assert again.returncode == 0, again.stderr
            assert _state(out, s3)[0].equals(clean["b"][0])
            pointer = json.loads(store.read_bytes(f"{out}/_SUCCESS", dict(s3)))
            assert {f[len(out) + 1:].split("/")[0] for f in store.list_files(out, dict(s3))} == {
                "_SUCCESS", pointer["root"]}
    assert seen == {"a", "b"}   # the kills fell on both sides of the commit


def test_every_reader_reads_the_committed_run_beside_a_dead_runs_files(s3, s3_data, tmp_path):
    """A run killed after writing its parts: assign, compare, abtest, --previous, Model.load and the
    Python API read the committed run only, with the numbers of a clean run."""
    base = "s3://segmint-test/readers"
    run_a = ("run", s3_data, "--k", "3", "--seed", "1", "--buckets", "3")
    assert _cli(s3, *run_a, "--out", f"{base}/clean").returncode == 0
    _copy_output(f"{base}/clean", f"{base}/out", s3)
    ops = tmp_path / "ops"
    assert _cli(s3, "run", s3_data, "--k", "5", "--buckets", "3", "--out", f"{base}/probe", ops_file=ops).returncode == 0
    # Killed just before its commit: every part of the new run is written, nothing committed.
    killed = _cli(s3, "run", s3_data, "--k", "5", "--buckets", "3", "--out", f"{base}/out", "--overwrite",
                  kill_at=int(ops.read_text()) - 3)
    assert killed.returncode == -signal.SIGKILL
    assert len([f for f in store.list_files(f"{base}/out", dict(s3)) if "/assignments/" in f]) > 3 + 3
    cfg = RunConfig(storage_options=s3)
    n = 3000
    for out in (f"{base}/out", f"{base}/clean"):
        result = api.Result(out=out, manifest={}, _options=s3)
        assert result.assignments().select(pl.len()).collect().item() == n
        assert result.profiles()["customers"].sum() == n
        assert Model.load(out, dict(s3)).k == 3
        assigned = assign_customers(out, [s3_data], f"{out}-assigned", cfg)
        assert assigned.manifest["customers"] == n
        doc = compare_runs(out, f"{out}-assigned", f"{out}-compared", cfg)
        assert sum(m["customers"] for m in doc["migration"]) == n
        assert all(m["old_segment"] == m["new_segment"] for m in doc["migration"])
        groups = abtest_split(out, tmp_path / f"groups-{store.name(out)}.parquet", ratio=0.2, salt="s", options=s3)
        assert groups.height == n
        previous = run([s3_data], f"{out}-next", dataclasses.replace(cfg, previous=out,
                                                                     cluster=ClusterConfig(k=3)))
        assert previous.manifest["customers"] == n
    read = (lambda o: _committed(o, s3).drop("segment"))
    assert read(f"{base}/out-assigned").equals(read(f"{base}/clean-assigned"))
