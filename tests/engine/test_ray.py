"""The Ray executor (issue #11): same bytes as the local executor, retries, errors named.

One local Ray (2 CPUs, loopback only) serves every test here; the executor joins it
as it would a cluster. Test functions that run as tasks live in this module, which
is pickled by value (workers cannot import a test module).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

ray = pytest.importorskip("ray")

from segmint.engine.config import ClusterConfig, RunConfig  # noqa: E402
from segmint.engine.errors import ConfigError, InputContractError  # noqa: E402
from segmint.engine.pipeline import commands, run  # noqa: E402
from segmint.engine.pipeline.bucket import MapJob, map_bucket  # noqa: E402
from segmint.engine.pipeline.score import ScoreJob, score_bucket  # noqa: E402
from segmint.engine.pipeline.executor import resolve_executor  # noqa: E402
from segmint.engine.pipeline.ray_executor import (  # noqa: E402
    MAX_RETRIES, RayExecutor, _driver_error, _task_env, start_local_ray)

CFG = RunConfig(buckets=3, cluster=ClusterConfig(k=6, seed=3))
# Differ by run: run_id, times, the executor's name (and the sizes of those files).
_RUN_SPECIFIC = {"run.json", "model/model.json", "_manifest.json"}


# Jobs for executor.map: small frozen dataclasses, like the pipeline's.

@dataclass(frozen=True)
class _Job:
    bucket: int
    folder: str


@dataclass(frozen=True)
class _Plan:
    buckets: int


@dataclass(frozen=True)
class _PlanJob:
    bucket: int
    plan: _Plan


@dataclass(frozen=True)
class _Chunk:
    role: str
    index: int


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray for the whole session, as segmint starts one: 127.0.0.1 only, no dashboard,
    no usage stats, no auth token written."""
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
            mp.setenv(var, value)   # restored after the session
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        start_local_ray(num_cpus=2, object_store_memory=256 * 2**20)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def executor(ray_address):
    ex = RayExecutor(address=ray_address)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def local_out(small_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    run([small_data / "transactions"], out, CFG, executor="local")
    return out


def test_same_bytes_as_local(small_data, local_out, executor, tmp_path):
    out = tmp_path / "run"
    result = run([small_data / "transactions"], out, CFG, executor=executor)
    assert result.manifest["executor"] == "ray"
    _assert_same_output(local_out, out)
    assert ray.is_initialized()     # a joined cluster outlives the run
    assert not executor.needs_shared_storage    # one node: this machine


def test_files_that_are_the_buckets_give_the_same_bytes_as_local(small_data, executor, tmp_path, monkeypatch):
    # The map's jobs on Ray's workers, the as-of and channels settled on the driver (a channel one bucket alone
    # has: the others' shares added as the score's tasks read their tables).
    from segmint.engine.pipeline import plan as plans
    from tests.fixtures import customer_blocks, write_blocks

    tx = customer_blocks(pl.read_parquet(small_data / "transactions"), 3)
    write_blocks(tx.with_columns(channel=pl.when((pl.col("block") == 2) & (pl.int_range(pl.len()) % 40 == 0))
                                 .then(pl.lit("kiosk")).otherwise("channel")), tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    cfg = dataclasses.replace(CFG, buckets=None)
    local = run([tmp_path / "tx"], tmp_path / "local", cfg, executor="local")
    remote = run([tmp_path / "tx"], tmp_path / "ray", cfg, executor=executor)
    for result in (local, remote):
        assert result.manifest["stages"]["partition"]["statistics"] == "buckets"
        assert "kiosk" in result.manifest["channels"]
    _assert_same_output(tmp_path / "local", tmp_path / "ray")


def test_crashed_worker_is_retried(small_data, local_out, executor, tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "map_bucket", _crash_first_attempt)
    out = tmp_path / "run"
    run([small_data / "transactions"], out, CFG, executor=executor)
    assert (tmp_path / "crashed-bucket-1").exists()
    _assert_same_output(local_out, out)


def test_a_task_killed_after_writing_parts_leaves_no_second_copy(small_data, local_out, executor, tmp_path,
                                                                  monkeypatch):
    # Bucket 1's first attempt writes its parts, and one more (a customer in a segment the retry will
    # not write), then its worker dies; the retry's reported parts are what the run commits.
    monkeypatch.setattr(commands, "score_bucket", _die_after_writing)
    out = tmp_path / "run"
    run([small_data / "transactions"], out, CFG, executor=executor)
    assert (tmp_path / "died-bucket-1").exists()
    assert not (out / "assignments" / "segment=99").exists()
    _assert_same_output(local_out, out)


def test_resumable_jobs_run_as_tasks(small_data, local_out, executor, tmp_path):
    # --resume wraps every job with its done marker; the wrapped jobs still travel without their plan.
    out = tmp_path / "run"
    result = run([small_data / "transactions"], out, dataclasses.replace(CFG, resume=True), executor=executor)
    assert result.manifest["stages"]["map"]["resumed_jobs"] == 0
    _assert_same_output(local_out, out)


def test_segmint_error_fails_fast_with_bucket_named(executor, tmp_path):
    jobs = [_Job(b, str(tmp_path)) for b in range(3)]
    with pytest.raises(InputContractError, match=r"^bucket 1: bad rows in bucket 1$"):
        executor.map(_reject_bucket_1, jobs, tick=lambda done, total: None)
    assert (tmp_path / "attempts-1").read_text() == "x"    # not retried


def test_transient_oserror_is_retried(executor, tmp_path):
    ticks = []
    jobs = [_Job(b, str(tmp_path)) for b in range(3)]
    assert executor.map(_flaky_io, jobs, tick=lambda done, total: ticks.append((done, total))) == [0, 10, 20]
    assert (tmp_path / "attempts-1").read_text() == "xx"
    assert ticks == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(("job", "error", "message"), [
    (_PlanJob(3, _Plan(buckets=4)), ray.exceptions.OutOfMemoryError("killed"),
     "bucket 3 ran out of memory on its worker; rerun with more buckets (--buckets 8)"),
    (_PlanJob(3, _Plan(buckets=4)), ray.exceptions.WorkerCrashedError(),
     f"bucket 3: its worker died {MAX_RETRIES + 1} times, most likely out of memory; "
     f"rerun with more buckets (--buckets 8)"),
    (_Chunk("tx", 5), ray.exceptions.OutOfMemoryError("killed"), "chunk 5 of the tx input ran out of memory on "
     "its worker; rerun with a lower --memory-limit (smaller chunks) or give the workers more memory"),
])
def test_memory_failures_name_the_fix(job, error, message):
    # What Ray raises when its memory monitor kills a task, and when a worker dies on every attempt
    # (checked by hand: a task that always calls os._exit(1) ends in WorkerCrashedError, in about 10 s).
    translated = _driver_error(ray, error, job)
    assert type(translated) is ConfigError
    assert str(translated) == message


def test_tasks_get_the_drivers_openmp_and_blas_settings(monkeypatch):
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "0")
    monkeypatch.setenv("MIMALLOC_ARENA_EAGER_COMMIT", "0")
    env = _task_env(3)
    assert (env["GOMP_SPINCOUNT"], env["OMP_WAIT_POLICY"], env["NUMBA_NUM_THREADS"]) == ("10000", "PASSIVE", "3")
    pages = (env["NUMPY_MADVISE_HUGEPAGE"], env["MIMALLOC_ARENA_EAGER_COMMIT"])
    assert (env["OPENBLAS_NUM_THREADS"], *pages) == ("1", "0", "0")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert "GOMP_SPINCOUNT" not in _task_env(3)


def test_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with pytest.raises(ConfigError, match=r"^--executor ray needs Ray: pip install -e '\.\[ray\]'$"):
        resolve_executor("ray")


def _assert_same_output(expected: Path, got: Path) -> None:
    files = sorted(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    read = (lambda out: pl.read_parquet(out / "assignments" / "**" / "*.parquet", hive_partitioning=True)
            .sort("customer_id"))
    assert read(got).equals(read(expected))
    assert pl.read_parquet(got / "rejects").equals(pl.read_parquet(expected / "rejects"))
    assert [f for f in files if f not in _RUN_SPECIFIC and (got / f).read_bytes() != (expected / f).read_bytes()] == []


# Run as tasks (this module is pickled by value).


def _attempt(job: _Job) -> int:
    """Count this job's attempts in a file; returns the count so far."""
    path = Path(job.folder) / f"attempts-{job.bucket}"
    with path.open("a") as f:
        f.write("x")
    return len(path.read_text())


def _crash_first_attempt(job: MapJob):
    marker = Path(job.plan.work).parent / f"crashed-bucket-{job.bucket}"    # the test's tmp_path
    if job.bucket == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return map_bucket(job)


def _die_after_writing(job: ScoreJob):
    marker = Path(job.plan.work).parent / f"died-bucket-{job.bucket}"    # the test's tmp_path
    result = score_bucket(job)
    if job.bucket == 1 and not marker.exists():
        marker.touch()
        stray = pl.read_parquet(job.layout.meta(result.files[0])).head(1)
        job.layout.write_part(stray, "assignments/segment=99", job.bucket)
        os._exit(1)
    return result


def _reject_bucket_1(job: _Job) -> int:
    _attempt(job)
    if job.bucket == 1:
        msg = f"bad rows in bucket {job.bucket}"
        raise InputContractError(msg)
    return job.bucket


def _flaky_io(job: _Job) -> int:
    if _attempt(job) == 1 and job.bucket == 1:
        msg = "object store: connection reset"
        raise ConnectionResetError(msg)
    return job.bucket * 10



