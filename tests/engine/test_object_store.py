"""Inputs and outputs on an object store: a local S3 server (moto), bound to 127.0.0.1 only."""

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import socket
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segmint.engine import api
from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.errors import ConfigError, InputContractError, OutputExistsError
from segmint.engine.io import store
from segmint.engine.io.committed import open_output
from segmint.engine.io.lease import Holder
from segmint.engine.runtime import pid_namespace
from segmint.engine.model import Model
from segmint.engine.pipeline import assign_customers, commands, run, validate
from segmint.engine.pipeline.abtests import abtest_evaluate, abtest_split
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


def test_a_run_reads_and_writes_s3_like_a_local_run(s3, s3_data, small_data, tmp_path, monkeypatch):
    # Its scratch on S3 too: the partition's LZ4 Arrow IPC and the feature tables' LZ4 Parquet.
    from segmint.engine.pipeline import bucket

    features: list[str] = []
    write = bucket._write_features
    monkeypatch.setattr(bucket, "_write_features", lambda table, path, plan: (features.append(path),
                                                                             write(table, path, plan)))
    cfg = RunConfig(cluster=ClusterConfig(k=4), storage_options=s3, buckets=3, work_dir="s3://segmint-test/work")
    out = "s3://segmint-test/runs/a"
    result = run([s3_data], out, cfg)
    assert len(features) == 3 and all(p.startswith("s3://segmint-test/work/") and p.endswith(".parquet")
                                      for p in features), features
    (tmp_path / "tx").mkdir()
    for i in range(2):  # the same files, local
        (tmp_path / "tx" / f"part-{i}.parquet").write_bytes(
            store.read_bytes(f"{s3_data}/part-{i}.parquet", dict(s3)))
    local = run([tmp_path / "tx"], tmp_path / "local", RunConfig(cluster=ClusterConfig(k=4), buckets=3))
    # The same table, segments included, as the local run's.
    local_rows = pl.read_parquet(tmp_path / "local" / "assignments").sort("customer_id")
    assert _committed(out, s3).select(local_rows.columns).equals(local_rows)
    assert store.list_files("s3://segmint-test/work", dict(s3)) == []   # its scratch removed
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


def test_overwrite_keeps_a_committed_run_beside_which_files_were_saved(s3, s3_data):
    # The commit's clean-up took a file saved beside the run for a dead run's leftover and deleted it.
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3)
    out = "s3://segmint-test/runs/notes"
    first = run([s3_data], out, cfg)
    store.write_bytes(f"{out}/notes.txt", b"keep me", dict(s3))
    with pytest.raises(OutputExistsError, match="1 file.s. segmint did not write .*notes.txt"):
        run([s3_data], out, RunConfig(cluster=ClusterConfig(k=5), storage_options=s3, overwrite=True))
    assert store.read_bytes(f"{out}/notes.txt", dict(s3)) == b"keep me"
    assert open_output(out, dict(s3)).run_id == first.manifest["run_id"]


def test_overwrite_keeps_a_file_saved_inside_the_committed_runs_folder(s3, s3_data):
    # Everything under the run's version folder counted as the run's, and --overwrite deleted the file with it.
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3)
    out = "s3://segmint-test/runs/inside"
    first = run([s3_data], out, cfg)
    root = open_output(out, dict(s3)).root
    store.write_bytes(f"{root}/notes.txt", b"keep me", dict(s3))
    with pytest.raises(OutputExistsError, match="1 file.s. segmint did not write .*notes.txt"):
        run([s3_data], out, RunConfig(cluster=ClusterConfig(k=5), storage_options=s3, overwrite=True))
    assert store.read_bytes(f"{root}/notes.txt", dict(s3)) == b"keep me"
    assert open_output(out, dict(s3)).run_id == first.manifest["run_id"]
    # Without the run's manifest, what segmint wrote there is not known: refused, as a local output is.
    store.remove([f"{root}/_manifest.json"], dict(s3))
    with pytest.raises(OutputExistsError, match="no readable _manifest.json"):
        run([s3_data], out, RunConfig(cluster=ClusterConfig(k=5), storage_options=s3, overwrite=True))
    assert store.read_bytes(f"{root}/notes.txt", dict(s3)) == b"keep me"


def test_folder_markers_are_not_read_as_files(s3, s3_data, small_data):
    # A console's "Create folder" object ("in/" beside "in/part-0.parquet"), listed without its slash, was read
    # as a Hive file: Polars read the folder again, and every row counted twice with exit 0.
    opts = dict(s3)
    tx = pl.read_parquet(small_data / "transactions")
    for prefix in ("markers/in", "markers/up"):
        store.write_parquet(tx, f"s3://segmint-test/{prefix}/part-0.parquet", opts)
    import boto3

    # As a console makes them (obstore would write "in/" as "in", a file): keys ending in a slash.
    client = boto3.client("s3", endpoint_url=opts["aws_endpoint_url"], aws_access_key_id="test-key",
                          aws_secret_access_key="test-secret", region_name="us-east-1")
    for marker in ("markers/in/", "markers/", "markers/empty/"):
        client.put_object(Bucket="segmint-test", Key=marker, Body=b"")
    store.write_bytes("s3://segmint-test/markers/up_$folder$", b"", opts)   # Hadoop's
    for given in ("s3://segmint-test/markers/in", "s3://segmint-test/markers"):
        rows = validate([given], RunConfig(storage_options=s3)).rows_in
        assert rows == tx.height * (1 if given.endswith("/in") else 2), given
    # An empty folder made in a console is a marker too; an empty file is a file (stopping a run, as locally).
    run([s3_data], "s3://segmint-test/markers/empty", RunConfig(cluster=ClusterConfig(k=3), storage_options=s3))
    assert _committed("s3://segmint-test/markers/empty", s3).height == 3000
    store.write_bytes("s3://segmint-test/markers/up/blank.csv", b"", opts)
    assert "s3://segmint-test/markers/up/blank.csv" in store.list_files("s3://segmint-test/markers/up", opts)


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


def _kill_sweep(s3, s3_data, tmp_path, name: str, choose) -> set[str]:
    """Commit run A at an output, then run B over it killed before each operation ``choose(total)``
    picks; after each kill the output must be A or B whole, and (at some points) the next run must
    clean up and commit. Returns which of A and B the kills left."""
    base = f"s3://segmint-test/{name}"
    run_a = ("run", s3_data, "--k", "3", "--seed", "1", "--buckets", "3")
    run_b = ("run", s3_data, "--k", "5", "--seed", "2", "--buckets", "3")
    for args, out in ((run_a, f"{base}/clean-a"), (run_b, f"{base}/clean-b")):
        assert _cli(s3, *args, "--out", out).returncode == 0
    clean = {which: _state(f"{base}/clean-{which}", s3) for which in "ab"}
    out = f"{base}/out"
    _copy_output(f"{base}/clean-a", out, s3)
    ops = tmp_path / "ops"
    assert _cli(s3, *run_b, "--out", out, "--overwrite", ops_file=ops).returncode == 0
    log = ops.read_text().splitlines()
    total = len(log)
    commit = next(i + 1 for i, line in enumerate(log) if line.startswith("put_") and line.endswith("/_SUCCESS"))
    assert total > 20 and commit < total
    points = choose(total, commit)
    seen = set()
    for i, at in enumerate(points):
        _copy_output(f"{base}/clean-a", out, s3)
        killed = _cli(s3, *run_b, "--out", out, "--overwrite", kill_at=at)
        assert killed.returncode == -signal.SIGKILL, (at, killed.stderr)
        assignments, centroids = _state(out, s3)
        which = next((w for w, (rows, cents) in clean.items()
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
    return seen


def test_a_run_killed_around_its_commit_leaves_the_previous_or_the_new_output_whole(s3, s3_data, tmp_path):
    # The operations around the pointer: the last meta file, the manifest, the pointer, the previous
    # run's removal, the lock's (every operation: the scale test below).
    seen = _kill_sweep(s3, s3_data, tmp_path, "kill-commit",
                       lambda total, commit: [commit - 2, commit - 1, commit, commit + 1, total])
    assert seen == {"a", "b"}   # the kills fell on both sides of the pointer


@pytest.mark.parametrize("next_run", [("--resume",), ()])
def test_a_resumed_run_killed_after_its_commit_leaves_an_output_the_next_run_replaces(s3, s3_data, tmp_path,
                                                                                      next_run):
    # Killed past the pointer but before its record was forgotten, a --resume run left _resume.json naming the
    # committed run: the next --resume run took that id, wrote into the committed folder and then removed it as the
    # replaced version (exit 0, no readable output); a plain run discarded it (exit 4, and no run could replace it).
    base = f"s3://segmint-test/resume-commit-{len(next_run)}"
    run_b = ("run", s3_data, "--k", "4", "--seed", "2", "--buckets", "2", "--overwrite", "--resume")
    assert _cli(s3, "run", s3_data, "--k", "3", "--out", f"{base}/a").returncode == 0
    assert _cli(s3, *run_b, "--out", f"{base}/b").returncode == 0
    out = f"{base}/out"
    _copy_output(f"{base}/a", out, s3)
    ops = tmp_path / "ops"
    assert _cli(s3, *run_b, "--out", out, ops_file=ops).returncode == 0
    log = ops.read_text().splitlines()
    commit = next(i + 1 for i, line in enumerate(log) if line.startswith("put_") and line.endswith("/_SUCCESS"))
    _copy_output(f"{base}/a", out, s3)
    killed = _cli(s3, *run_b, "--out", out, kill_at=commit + 1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert store.exists(f"{out}/_resume.json", dict(s3)) and _state(out, s3)[0].equals(_state(f"{base}/b", s3)[0])
    again = _cli(s3, *run_b[:-1 if not next_run else None], "--out", out)
    assert again.returncode == 0, again.stderr
    assert _state(out, s3)[0].equals(_state(f"{base}/b", s3)[0])
    pointer = json.loads(store.read_bytes(f"{out}/_SUCCESS", dict(s3)))
    assert {f[len(out) + 1:].split("/")[0] for f in store.list_files(out, dict(s3))} == {"_SUCCESS", pointer["root"]}


@pytest.mark.parametrize("signal_after", ["put_if", "remove"])
def test_a_signal_at_the_commit_keeps_the_new_output_and_says_it_was_committed(s3, s3_data, monkeypatch,
                                                                              signal_after):
    # A SIGTERM or Ctrl-C during the pointer's write is raised once the store has taken it: the run removed its
    # version folder, which the pointer named (every reader failed, every later run exit 4), and said "no output
    # was changed". After the pointer, while the previous version is removed, it said the same of a new output.
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3, overwrite=True)
    out = f"s3://segmint-test/signal-commit-{signal_after}"
    run([s3_data], out, dataclasses.replace(cfg, cluster=ClusterConfig(k=4)))
    original = getattr(store, signal_after)
    def then_a_signal(*args, **kwargs):
        done = original(*args, **kwargs)
        if str(args[0]).endswith("/_SUCCESS") or (signal_after == "remove" and "/run-" in str(args[0])):
            raise KeyboardInterrupt
        return done
    with monkeypatch.context() as m:
        m.setattr(store, signal_after, then_a_signal)
        with pytest.raises(KeyboardInterrupt) as caught:
            run([s3_data], out, cfg)
    assert caught.value.output_committed
    assert Model.load(out, dict(s3)).centroids.shape[0] == 3 and _committed(out, s3).height > 0
    run([s3_data], out, cfg)   # the next run removes the previous version the signal left
    pointer = json.loads(store.read_bytes(f"{out}/_SUCCESS", dict(s3)))
    assert {f[len(out) + 1:].split("/")[0] for f in store.list_files(out, dict(s3))} == {"_SUCCESS", pointer["root"]}


@pytest.mark.scale
def test_a_run_killed_at_any_point_leaves_the_previous_or_the_new_output_whole(s3, s3_data, tmp_path):
    # Every 4th operation of the run (claim, rejects, scratch, parts, meta files), and each one from the
    # manifest to the end.
    seen = _kill_sweep(s3, s3_data, tmp_path, "kill-all",
                       lambda total, commit: sorted({*range(1, commit - 2, 4), *range(commit - 2, total + 1)}))
    assert seen == {"a", "b"}


def test_every_reader_reads_the_committed_run_beside_a_dead_runs_files(s3, s3_data, tmp_path):
    """A run killed after writing its parts: assign, compare, abtest, --previous, Model.load and the
    Python API read the committed run only, with the numbers of a clean run."""
    base = "s3://segmint-test/readers"
    run_a = ("run", s3_data, "--k", "3", "--seed", "1", "--buckets", "3")
    assert _cli(s3, *run_a, "--out", f"{base}/clean").returncode == 0
    _copy_output(f"{base}/clean", f"{base}/out", s3)
    ops = tmp_path / "ops"
    assert _cli(s3, "run", s3_data, "--k", "5", "--buckets", "3", "--out", f"{base}/probe", ops_file=ops).returncode == 0
    # Killed just before its pointer: every part of the new run is written, nothing committed.
    log = ops.read_text().splitlines()
    killed = _cli(s3, "run", s3_data, "--k", "5", "--buckets", "3", "--out", f"{base}/out", "--overwrite",
                  kill_at=next(i + 1 for i, line in enumerate(log) if line.endswith("/_SUCCESS")))
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


# One writer per output.

def test_two_runs_started_together_on_one_output_one_commits_the_other_stops(s3, s3_data):
    out = "s3://segmint-test/together"
    args = ("run", s3_data, "--k", "3", "--buckets", "2", "--out", out)
    options = [x for key, value in s3 for x in ("--storage-option", f"{key}={value}")]
    procs = [subprocess.Popen([sys.executable, "-m", "segmint.cli.app", *args, *options], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=300)]]
    assert sorted(code for code, _ in results) == [0, 4], results
    stopped = next(err for code, err in results if code == 4)
    assert "being written by run" in stopped or "already exists" in stopped
    assert _committed(out, s3).height == 3000
    assert not store.exists(f"{out}/_lock.json", dict(s3))


def test_a_live_lease_stops_a_second_run_naming_the_holder_and_a_dead_one_is_taken_over(s3, s3_data):
    out = "s3://segmint-test/leased"
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3)
    # A run on another machine holds the output; its lease is live.
    elsewhere = Holder("20261203T000000Z-0badcafe", "run", "other-host", 4242, "2026-12-03T00:00:00+00:00",
                       lease_seconds=5)
    store.write_bytes(f"{out}/_lock.json", json.dumps(dataclasses.asdict(elsewhere)).encode(), dict(s3))
    with pytest.raises(OutputExistsError, match=r"being written by run 20261203T000000Z-0badcafe \(segmint run, "
                                                r"host other-host, pid 4242"):
        run([s3_data], out, cfg)
    assert store.list_files(out, dict(s3)) == [f"{out}/_lock.json"]    # nothing written or removed
    # Unrenewed for longer than its lease, it is dead: the next run takes the output over. (The lease is
    # long enough that the first run's start, on a machine busy with other tests, stays within it.)
    time.sleep(5.5)
    run([s3_data], out, cfg)
    assert _committed(out, s3).height == 3000 and not store.exists(f"{out}/_lock.json", dict(s3))


def test_a_dead_runs_scratch_goes_wherever_its_work_dir_was_and_nothing_else_named_in_its_lock(s3, s3_data):
    """The killed run had --work-dir s3://.../scratch, the next run none (or another): its scratch stayed for
    good, as the lock's path was trusted only where this run would put scratch. A path named as no run's
    scratch, read from a lock, is still never removed."""
    opts = dict(s3)
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3, overwrite=True)
    for out, work, removed in [("s3://segmint-test/deadwork", "s3://segmint-test/scratch/segmint-work-{}", True),
                               ("s3://segmint-test/deadwork2", "s3://segmint-test/precious", False)]:
        run_id = "20261203T000000Z-0deadbee"
        work = work.format(run_id)
        store.write_bytes(f"{work}/tx/bucket=00000/part-000000.arrow", b"scratch", opts)
        dead = Holder(run_id, "run", "other-host", 4242, "2026-12-03T00:00:00+00:00", work, lease_seconds=1)
        store.write_bytes(f"{out}/_lock.json", json.dumps(dataclasses.asdict(dead)).encode(), opts)
        time.sleep(1.5)
        run([s3_data], out, cfg)
        assert _committed(out, s3).height == 3000
        assert (store.list_files(work, opts) == []) is removed, work
    assert store.list_files("s3://segmint-test/precious", opts) == ["s3://segmint-test/precious/tx/bucket=00000/"
                                                                     "part-000000.arrow"]


def test_scratch_killed_runs_left_under_an_object_store_work_dir_goes_whatever_their_output(s3, s3_data):
    """A run killed with --work-dir s3://... left its scratch (features: customer data) for good unless a run
    went on at the same output. A run under that work dir removes the folders whose output no live lease of
    their run holds; not a live run's, a --resume run's, or a folder without an owner."""
    opts, work = dict(s3), "s3://segmint-test/shared-work"
    live = Holder("20261205T000000Z-0aaaaaaa", "run", "other-host", 4242, "2026-12-05T00:00:00+00:00",
                  lease_seconds=600)
    store.write_bytes("s3://segmint-test/live-out/_lock.json", json.dumps(dataclasses.asdict(live)).encode(), opts)
    elsewhere = {"host": "other-host", "pid": 4242, "pid_namespace": "pid:[1]"}
    here = {"host": socket.gethostname(), "pid": _gone_pid(), "pid_namespace": pid_namespace()}
    folders = {"20261205T000000Z-0bbbbbbb": ("s3://segmint-test/dead-out", False, elsewhere),   # killed: goes
               live.run_id: ("s3://segmint-test/live-out", False, elsewhere),               # running elsewhere
               "20261205T000000Z-0ccccccc": ("s3://segmint-test/dead-out2", True, elsewhere),  # kept for --resume
               "20261205T000000Z-0ddddddd": None,                                          # no owner: not known
               # A local output's lease is on its host: another host's live run (its scratch was removed, and
               # the run failed) and one whose output this run cannot reach (it stopped this run) are left.
               "20261205T000000Z-0eeeeeee": ("/srv/host-a/out", False, elsewhere),
               "20261205T000000Z-0fffffff": ("gs://another-teams-bucket/out", False, elsewhere),
               "20261205T000000Z-01111111": ("/srv/here/out", False, here)}                 # gone from here: goes
    for run_id, owner in folders.items():
        store.write_bytes(f"{work}/segmint-work-{run_id}/features/bucket-00000.arrow", b"customer data", opts)
        if owner is not None:
            doc = {**owner[2], "run_id": run_id, "out": owner[0], "resume": owner[1]}
            store.write_bytes(f"{work}/segmint-work-{run_id}/_owner.json", json.dumps(doc).encode(), opts)
    run([s3_data], "s3://segmint-test/sweeping", RunConfig(cluster=ClusterConfig(k=3), storage_options=s3,
                                                           work_dir=work))
    gone = {"20261205T000000Z-0bbbbbbb", "20261205T000000Z-01111111"}
    left = sorted(store.name(f) for f in store.list_folders(work, opts))
    assert left == sorted(f"segmint-work-{r}" for r in folders if r not in gone)


def _gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_that_lost_its_lease_commits_nothing(s3, s3_data, monkeypatch):
    out = "s3://segmint-test/stolen"
    first = run([s3_data], out, RunConfig(cluster=ClusterConfig(k=3), storage_options=s3))
    before = store.list_files(out, dict(s3))
    profiles = commands.build_profiles

    def taken_over_meanwhile(*args, **kwargs):
        # Another run decided this one was dead and took the output over.
        store.write_bytes(f"{out}/_lock.json", b'{"run_id": "someone-else"}', dict(s3))
        return profiles(*args, **kwargs)

    monkeypatch.setattr(commands, "build_profiles", taken_over_meanwhile)
    with pytest.raises(OutputExistsError, match="lost its claim on the output"):
        run([s3_data], out, RunConfig(cluster=ClusterConfig(k=4), storage_options=s3, overwrite=True))
    assert open_output(out, dict(s3)).run_id == first.manifest["run_id"]
    # Nothing of this run is left, and the other run's lock is left alone.
    assert sorted(store.list_files(out, dict(s3))) == sorted([*before, f"{out}/_lock.json"])


@pytest.mark.parametrize("replacing", [False, True])
def test_a_commit_the_store_applied_though_its_reply_was_lost_is_this_runs(s3, s3_data, monkeypatch, replacing):
    # The conditional PUT of _SUCCESS landed and its reply was lost; the retry was refused (412): exit 4, "was
    # committed by another run", of the run whose output it was, and the replaced run's files were left.
    out = f"s3://segmint-test/lost-reply-{replacing}"
    if replacing:
        run([s3_data], out, RunConfig(cluster=ClusterConfig(k=4), storage_options=s3))
    for name in ("put_new", "put_if"):
        write = getattr(store, name)
        def landed_but_unanswered(path, data, *args, write=write):
            done = write(path, data, *args)
            return None if str(path).endswith("/_SUCCESS") else done
        monkeypatch.setattr(store, name, landed_but_unanswered)
    result = run([s3_data], out, RunConfig(cluster=ClusterConfig(k=3), storage_options=s3, overwrite=True))
    monkeypatch.undo()
    assert open_output(out, dict(s3)).run_id == result.manifest["run_id"] and _committed(out, s3).height == 3000
    left = {f[len(out) + 1:].split("/")[0] for f in store.list_files(out, dict(s3))}
    assert left == {"_SUCCESS", f"run-{result.manifest['run_id']}"}   # the replaced run's files removed


def test_the_done_event_names_the_files_where_they_are_on_an_object_store(s3, s3_data):
    # `run_json` named OUT/run.json and `features` OUT/features: on a store they are in OUT/run-<id>/.
    for command, where in (("run", "run.json"), ("features", "features")):
        out = f"s3://segmint-test/done-{command}"
        r = _cli(s3, command, s3_data, "--out", out, *(("--k", "3") if command == "run" else ()), "--json")
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stderr.strip().splitlines()[-1])
        named = done["run_json"] if command == "run" else done["message"].rsplit(" to ", 1)[1]
        assert named == f"{out}/run-{done['run_id']}/{where}"
        assert store.list_files(named, dict(s3)) if where == "features" else store.exists(named, dict(s3))


# One spelling per location; --overwrite replaces only a segmint output.

@pytest.mark.parametrize(("given", "expected"), [
    ("s3://b/out/", "s3://b/out"), ("s3://b//out//x/", "s3://b/out/x"), ("s3a://b/out", "s3://b/out"),
    ("gcs://b/out", "gs://b/out"), ("abfs://c/out", "az://c/out"), ("abfss://c/out/", "az://c/out"),
    ("azure://c/out", "az://c/out"), ("S3://b/out", "s3://b/out"), ("s3://b", "s3://b"), ("s3://b/", "s3://b"),
    # An Azure URI that names its account keeps its scheme: the account is part of the address.
    ("abfss://c@acct.dfs.core.windows.net/out/", "abfss://c@acct.dfs.core.windows.net/out"),
    ("runs/x/", "runs/x"), ("/", "/"),
])
def test_every_location_has_one_spelling(given, expected):
    assert store.canonical(given) == expected


@pytest.mark.parametrize("spelling", ["s3://segmint-test/spelled/out/", "s3://segmint-test//spelled//out",
                                      "s3a://segmint-test/spelled/out"])
def test_an_output_spelled_any_way_is_one_output_with_exact_paths(s3, s3_data, spelling):
    result = run([s3_data], spelling, RunConfig(cluster=ClusterConfig(k=3), storage_options=s3, overwrite=True))
    out = "s3://segmint-test/spelled/out"
    assert result.out == out
    output = open_output(out, dict(s3))
    assert output.run_id == result.manifest["run_id"]
    assert all(f.split("/")[0] in ("assignments", "rejects", "model", "profiles.parquet", "profiles.json",
                                   "profiles.csv", "run.json") for f in output.files)
    assert _committed(spelling, s3).height == 3000
    parent = "s3://segmint-test/spelled"
    assert {f[len(parent) + 1:].split("/")[0] for f in store.list_files(parent, dict(s3))} == {"out"}


def test_an_output_spelled_otherwise_still_overlaps_its_input(s3, s3_data):
    with pytest.raises(ConfigError, match="overlaps the input"):
        run(["s3a://segmint-test//data/tx/"], "s3://segmint-test/data/tx/out", RunConfig(storage_options=s3))


def test_overwrite_never_replaces_what_segmint_did_not_write(s3, s3_data, small_data, tmp_path, monkeypatch):
    foreign = "s3://segmint-test/theirs"
    store.write_bytes(f"{foreign}/notes.txt", b"keep me", dict(s3))
    for out in (foreign, "s3://segmint-test"):     # a prefix of theirs, the whole bucket
        with pytest.raises(OutputExistsError, match="not a segmint output"):
            run([small_data / "transactions"], out, RunConfig(storage_options=s3, overwrite=True))
    assert store.read_bytes(f"{foreign}/notes.txt", dict(s3)) == b"keep me"
    # Locally: a home folder given as --out is refused, whatever --overwrite says.
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "photos" / "a.jpg").write_bytes(b"jpg")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputExistsError, match="not a segmint output"):
        run([small_data / "transactions"], os.path.expanduser("~"), RunConfig(overwrite=True))
    with pytest.raises(OutputExistsError, match="not a segmint output"):
        abtest_evaluate(tmp_path / "x.parquet", tmp_path / "y.parquet", home, cost_per_contact=1.0, overwrite=True)
    assert (home / "photos" / "a.jpg").read_bytes() == b"jpg" and sorted(p.name for p in home.iterdir()) == ["photos"]
    # An empty folder may be written into.
    (tmp_path / "empty").mkdir()
    run([small_data / "transactions"], tmp_path / "empty", RunConfig(cluster=ClusterConfig(k=3), overwrite=True))
    assert (tmp_path / "empty" / "_SUCCESS").exists()


# --resume cannot mix data.

def test_a_resumed_run_whose_input_was_rewritten_with_as_many_rows_starts_afresh(s3, s3_data, monkeypatch):
    from segmint.engine.pipeline import commands as cmd

    source = "s3://segmint-test/rewritten/tx"
    _copy_output(s3_data, source, s3)
    cfg = RunConfig(cluster=ClusterConfig(k=3), storage_options=s3, buckets=2, resume=True)
    out = "s3://segmint-test/rewritten/out"
    score = cmd.score_bucket
    with monkeypatch.context() as m:
        m.setattr(cmd, "score_bucket", lambda job: (_ for _ in ()).throw(ConnectionResetError("lost")))
        with pytest.raises(ConnectionResetError):
            run([source], out, cfg)
    # The same rows, other amounts: one object rewritten, same row count.
    part = f"{source}/part-0.parquet"
    frame = store.read_parquet(part, dict(s3))
    store.write_parquet(frame.with_columns(pl.col("amount") * 2), part, dict(s3))
    assert cmd.score_bucket is score
    resumed = run([source], out, cfg)
    assert "resumes" not in resumed.manifest["stages"]["plan"]
    assert resumed.manifest["stages"]["map"]["resumed_jobs"] == 0
    fresh = run([source], "s3://segmint-test/rewritten/fresh", dataclasses.replace(cfg, resume=False))
    assert _committed(out, s3).equals(_committed("s3://segmint-test/rewritten/fresh", s3))
    assert fresh.manifest["rows"] == resumed.manifest["rows"]


def test_done_markers_are_json_that_round_trips_every_job_result(small_data, tmp_path):
    from segmint.engine.analytics.cohorts import CohortPartials
    from segmint.engine.io.clean import RowStats
    from segmint.engine.pipeline import records
    from segmint.engine.pipeline.bucket import BucketResult, Counts
    from segmint.engine.pipeline.score import ScoreResult
    from segmint.engine.profile import KpiPartials

    when = dt.datetime(2026, 5, 1, 12, 30, 1, 5)
    values = [
        RowStats(when, {"web": 3, "store": 1}), RowStats(None, {}),
        BucketResult(2, Counts(rows_in=5, rejected_amount={"duplicate": [1.5, -2.25e-300]}, first_ts=when),
                     when, ("store", "web"), RowStats(when, {}),
                     CohortPartials({202605: 3}, {(202605, 0): 3}, {(202605, 1): [0.1, 1e300]}),
                     True, {"read": 0.5}, ("rejects/part-00002.parquet",)),
        ScoreResult(1, KpiPartials((0, 4), [1, 2], [3, 4], [1, 0], {"new": [1, 1]}, [[1.0], [2.0, 3.0]], None,
                                   [float("inf")], [0, 1]),
                    {(0, "region", None): 2, (4, "region", "north"): 1}, {"0.1": (3, [9.5])}, ("a", "b")),
    ]
    for value in values:
        data = records.dumps(value)
        json.loads(data, parse_constant=lambda c: pytest.fail(c))   # strict JSON
        assert records.loads(data) == value
    with pytest.raises(TypeError, match="cannot record"):
        records.dumps(object())
    with pytest.raises(ValueError, match="not a job result"):
        records.loads(b'{"$c": "Popen", "f": {"args": "rm -rf /"}}')


@pytest.mark.parametrize("root", ["gs://segmint-bucket", "az://segmint-container"])
def test_the_commit_protocol_on_gcs_and_azure_urls(root, monkeypatch):
    """No GCS or Azure emulator ships as a Python package: the protocol (lease, version folder, pointer,
    manifest, readers) runs here on obstore's in-memory store behind gs:// and az:// URLs, the same
    calls it makes to the real stores (conditional puts included)."""
    from obstore.store import MemoryStore

    from segmint.engine.io.lease import claim
    from segmint.engine.io.sink import staged_output

    stores: dict[str, MemoryStore] = {}
    monkeypatch.setattr(store, "_cached_store", lambda url, options: stores.setdefault(url, MemoryStore()))
    out = f"{root}/runs/x"

    def write(run_id: str, rows: int, fail: bool = False) -> None:
        with claim(out, Holder.this_process(run_id, "run", 120), {}) as lease, \
                staged_output(out, lease, overwrite=True, run_id=run_id) as staging:
            for bucket in range(3):
                path = staging.layout.part("assignments/segment=0", bucket)
                store.write_bytes(path, str(rows).encode())
                staging.reported.add(staging.layout.relative(path))
            store.write_bytes(staging.layout.part("assignments/segment=1", 7), b"stray: never reported")
            store.write_bytes(staging.layout.meta("run.json"), b"{}")
            if fail:
                raise RuntimeError("killed")

    write("20261203T000000Z-00000001", 10)
    output = open_output(out)
    assert output.run_id == "20261203T000000Z-00000001"
    assert output.files == ("assignments/segment=0/part-00000.parquet", "assignments/segment=0/part-00001.parquet",
                            "assignments/segment=0/part-00002.parquet", "run.json")
    with pytest.raises(RuntimeError, match="killed"):
        write("20261203T000000Z-00000002", 20, fail=True)
    assert open_output(out).run_id == "20261203T000000Z-00000001"
    assert [f for f in store.list_files(out) if "00000002" in f] == []
    # A dead writer's folder (left without cleanup) goes when the next run claims the output.
    store.write_bytes(f"{out}/run-20261203T000000Z-00000003/assignments/segment=0/part-00000.parquet", b"dead")
    write("20261203T000000Z-00000004", 40)
    assert open_output(out).run_id == "20261203T000000Z-00000004"
    assert {f[len(out) + 1:].split("/")[0] for f in store.list_files(out)} == {"_SUCCESS",
                                                                              "run-20261203T000000Z-00000004"}
    # A second writer while the first holds the lease stops, naming it.
    with claim(out, Holder.this_process("20261203T000000Z-00000005", "run", 120), {}):
        with pytest.raises(OutputExistsError, match="being written by run 20261203T000000Z-00000005"):
            write("20261203T000000Z-00000006", 60)


def test_prefixes_and_patterns_with_glob_characters(s3, s3_data, small_data):
    # A prefix 'in[1]' is read as itself where no key matches it as a pattern; a pattern is listed once.
    opts = dict(s3)
    tx = pl.read_parquet(small_data / "transactions")
    store.write_parquet(tx, "s3://segmint-test/brackets/in[1]/part-0.parquet", opts)
    store.write_parquet(tx.head(10), "s3://segmint-test/brackets/in2/part-0.parquet", opts)
    assert validate(["s3://segmint-test/brackets/in[1]"], RunConfig(storage_options=s3)).rows_in == tx.height
    assert validate(["s3://segmint-test/brackets/in[2]/*.parquet"], RunConfig(storage_options=s3)).rows_in == 10
