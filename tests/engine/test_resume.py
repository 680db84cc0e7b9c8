"""--resume (issue #11): a failed run keeps its finished jobs; the rerun runs only the rest and
writes what an uninterrupted run writes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import polars as pl
import pytest

from segmint.engine.config import ClusterConfig, RunConfig
from segmint.engine.pipeline import commands, run
from tests.fixtures import customer_blocks, write_blocks

CFG = RunConfig(buckets=4, cluster=ClusterConfig(k=5, seed=2))
RESUME = dataclasses.replace(CFG, resume=True)
# Differ by run: run_id, times and stage records (and the sizes of those files).
_RUN_SPECIFIC = {"run.json", "model/model.json", "_manifest.json"}


class _Calls:
    """Wraps the stage functions in ``commands``: records which jobs ran, fails where told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_score_bucket: int | None = None) -> None:
        self.ran: dict[str, list[int]] = {"partition": [], "map": [], "score": []}
        # A run that cannot be resumed scores the next bucket beside the write (commands._scores_ahead): its jobs
        # go through scored_bucket, those of a resumable one through score_bucket.
        for stage, name in (("partition", "partition_chunk"), ("map", "map_bucket"), ("score", "score_bucket"),
                            ("score", "scored_bucket")):
            monkeypatch.setattr(commands, name, self._wrap(stage, getattr(commands, name), fail_score_bucket))

    def _wrap(self, stage, fn, fail):
        def wrapped(job):
            index = job.index if stage == "partition" else job.bucket
            if stage == "score" and index == fail:
                raise RuntimeError(f"worker lost on bucket {index}")
            self.ran[stage].append(index)
            return fn(job)
        return wrapped


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    run([small_data / "transactions"], out, CFG)
    return out


def test_a_resumed_run_runs_only_unfinished_jobs_and_writes_the_same_output(small_data, uninterrupted, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        first = _Calls(m, fail_score_bucket=2)
        with pytest.raises(RuntimeError, match="worker lost on bucket 2") as failed:
            run([small_data / "transactions"], out, RESUME)
    assert any("--resume" in note for note in failed.value.__notes__)
    assert not out.exists()
    kept = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert kept == [".run.resume.json", ".run.staging", ".run.work"]
    assert first.ran["score"] == [0, 1]

    second = _Calls(monkeypatch)
    result = run([small_data / "transactions"], out, RESUME)
    assert second.ran == {"partition": [], "map": [], "score": [2, 3]}
    stages = result.manifest["stages"]
    assert (stages["plan"]["resumes"], stages["partition"]["resumed_jobs"], stages["map"]["resumed_jobs"],
            stages["score"]["resumed_jobs"]) == (result.manifest["run_id"], len(first.ran["partition"]), 4, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]     # state and scratch gone
    _assert_same_output(uninterrupted, out)


_KILLED_AT_SCORE = """
import os, signal, sys
from segmint.engine.pipeline import commands, run
from tests.engine.test_resume import RESUME
score = commands.score_bucket
def killed(job):
    if job.bucket == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return score(job)
commands.score_bucket = killed
run([sys.argv[1]], sys.argv[2], RESUME)
"""


def test_a_run_killed_outright_is_resumed_too(small_data, uninterrupted, tmp_path, monkeypatch):
    # kill -9 (an OOM kill, a lost node) leaves the output's lease behind: the next run took the dead run's
    # lease over and removed its scratch before it looked for a run to resume, so it ran every job again.
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[2]
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_SCORE, str(small_data / "transactions"), str(out)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert any(p.name.startswith(".run.lock") for p in tmp_path.iterdir())    # the dead run's lease
    calls = _Calls(monkeypatch)
    result = run([small_data / "transactions"], out, RESUME)
    assert calls.ran["partition"] == [] and calls.ran["map"] == [] and 2 in calls.ran["score"]
    assert result.manifest["stages"]["map"]["resumed_jobs"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    _assert_same_output(uninterrupted, out)


def test_a_changed_input_is_not_resumed(small_data, tmp_path, monkeypatch):
    data = tmp_path / "tx"
    data.mkdir()
    tx = pl.read_parquet(small_data / "transactions")
    tx.write_parquet(data / "part-0.parquet")
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _Calls(m, fail_score_bucket=1)
        with pytest.raises(RuntimeError):
            run([data], out, RESUME)
    old_run_id = json.loads((tmp_path / ".run.resume.json").read_text())["run_id"]
    tx.head(tx.height - 10).write_parquet(data / "part-0.parquet")     # the input changed meanwhile
    calls = _Calls(monkeypatch)
    result = run([data], out, RESUME)
    assert calls.ran["map"] == [0, 1, 2, 3]
    assert "resumes" not in result.manifest["stages"]["plan"]
    assert result.manifest["rows"]["in"] == tx.height - 10
    assert not [p for p in tmp_path.iterdir() if old_run_id in p.name]     # the old run's leftovers removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tx"]


@pytest.mark.parametrize("attempts", [(True, None), (None, True)])
def test_a_changed_scratch_format_is_not_resumed(small_data, uninterrupted, tmp_path, monkeypatch, attempts):
    # compress_scratch decides the feature scratch's files (LZ4 Parquet or Arrow IPC on a local disk), as the
    # code's version did (Parquet before a7c9bf6): an attempt that would look for files of the other kind
    # starts afresh, where it failed on the missing files at every retry.
    first, second = (dataclasses.replace(RESUME, compress_scratch=c) for c in attempts)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _Calls(m, fail_score_bucket=1)
        with pytest.raises(RuntimeError):
            run([small_data / "transactions"], out, first)
    calls = _Calls(monkeypatch)
    result = run([small_data / "transactions"], out, second)
    assert calls.ran["map"] == [0, 1, 2, 3] and "resumes" not in result.manifest["stages"]["plan"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    _assert_same_output(uninterrupted, out)


def test_without_resume_a_failure_keeps_nothing(small_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _Calls(monkeypatch, fail_score_bucket=0)
    with pytest.raises(RuntimeError) as failed:
        run([small_data / "transactions"], out, CFG)
    assert not getattr(failed.value, "__notes__", None)
    assert os.listdir(tmp_path) == []


def _assert_same_output(expected: Path, got: Path) -> None:
    files = sorted(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    assert [f for f in files if f not in _RUN_SPECIFIC and (got / f).read_bytes() != (expected / f).read_bytes()] == []


def test_a_run_without_resume_removes_what_a_failed_resumable_run_kept(small_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _Calls(m, fail_score_bucket=1)
        with pytest.raises(RuntimeError):
            run([small_data / "transactions"], out, RESUME)
    assert len(list(tmp_path.iterdir())) == 3     # state, staging, work
    calls = _Calls(monkeypatch)
    run([small_data / "transactions"], out, CFG)
    assert calls.ran["map"] == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_error_before_anything_is_kept_says_nothing_about_resume(small_data, tmp_path):
    out = tmp_path / "run"
    run([small_data / "transactions"], out, CFG)
    from segmint.engine.errors import OutputExistsError

    with pytest.raises(OutputExistsError) as refused:
        run([small_data / "transactions"], out, RESUME)
    assert not getattr(refused.value, "__notes__", None)


def test_code_changed_between_attempts_is_not_resumed(small_data, uninterrupted, tmp_path, monkeypatch):
    # The fingerprint held segmint's version alone: an attempt resumed after the code changed under the same version
    # (an editable install after a pull) took the first attempt's mapped buckets, made by the other code, as its own.
    from segmint.engine.pipeline import resume

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _Calls(m, fail_score_bucket=1)
        with pytest.raises(RuntimeError):
            run([small_data / "transactions"], out, RESUME)
    monkeypatch.setattr(resume, "_code_stamp", lambda: "other code")
    calls = _Calls(monkeypatch)
    result = run([small_data / "transactions"], out, RESUME)
    assert calls.ran["map"] == [0, 1, 2, 3] and "resumes" not in result.manifest["stages"]["plan"]
    _assert_same_output(uninterrupted, out)


def test_an_attempt_whose_buckets_would_be_other_files_starts_afresh(small_data, tmp_path, monkeypatch):
    # Which files make which bucket (engine.pipeline.clusters) depends on the bucket count: a rerun that would take
    # its first attempt's sizes and find other buckets than that attempt mapped starts afresh. Four files of their
    # own customers: in 3 buckets one would hold half the rows (partitioned by hash), in 4 they are the buckets.
    # The first attempt was partitioned by hash in 4; the rerun plans 3, by hash, the fingerprint its first's.
    from segmint.engine.pipeline import plan as plans

    write_blocks(customer_blocks(pl.read_parquet(small_data / "transactions"), 4), tmp_path / "tx")
    auto = dataclasses.replace(RESUME, buckets=None)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(plans, "_buckets", lambda rows, budget, per_row: 4)
        m.setattr(plans, "file_clusters", lambda *args: ())
        _Calls(m, fail_score_bucket=1)
        with pytest.raises(RuntimeError):
            run([tmp_path / "tx"], out, auto)
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    calls = _Calls(monkeypatch)
    result = run([tmp_path / "tx"], out, auto)
    assert "resumes" not in result.manifest["stages"]["plan"] and calls.ran["map"] == [0, 1, 2]
    assert result.manifest["stages"]["partition"]["clustered"] is False
    run([tmp_path / "tx"], tmp_path / "reference", dataclasses.replace(CFG, buckets=1))
    for name in ("assignments", "rejects"):
        assert pl.read_parquet(out / name).sort(pl.all()).equals(
            pl.read_parquet(tmp_path / "reference" / name).sort(pl.all())), name


def test_a_run_of_files_that_are_the_buckets_stopped_while_mapping_again_is_resumed(small_data, tmp_path,
                                                                                     monkeypatch):
    # Files that are the buckets are mapped before the run's as-of is known for sure: here the footers' latest time
    # is a row with no amount, so every bucket is mapped again with the as-of the rows give. An attempt stopped on
    # bucket 1's second map goes on from both passes' finished jobs, and writes the one bucket's outputs.
    import datetime as dt

    from segmint.engine.pipeline import plan as plans

    tx = customer_blocks(pl.read_parquet(small_data / "transactions"), 3)
    tx = pl.concat([tx, tx.head(1).with_columns(ts=pl.lit(tx["ts"].max() + dt.timedelta(hours=1)),
                                                amount=float("nan"))])
    write_blocks(tx, tmp_path / "tx")
    monkeypatch.setattr(plans, "_buckets", lambda rows, budget, per_row: 3)
    auto = dataclasses.replace(RESUME, buckets=None)
    out = tmp_path / "run"
    real = commands.map_bucket
    ran: list[tuple[int, bool]] = []

    def mapping(job, fail=None):
        again = job.channels is not None   # the first pass maps with each bucket's own channels
        if (job.bucket, again) == fail:
            raise RuntimeError(f"worker lost on bucket {job.bucket}")
        ran.append((job.bucket, again))
        return real(job)

    with monkeypatch.context() as m:
        m.setattr(commands, "map_bucket", lambda job: mapping(job, fail=(1, True)))
        with pytest.raises(RuntimeError, match="worker lost on bucket 1"):
            run([tmp_path / "tx"], out, auto)
    assert ran == [(0, False), (1, False), (2, False), (0, True)]
    ran.clear()
    monkeypatch.setattr(commands, "map_bucket", mapping)
    result = run([tmp_path / "tx"], out, auto)
    stages = result.manifest["stages"]
    assert stages["partition"]["clustered"] and (stages["map"]["mapped_again"], stages["map"]["resumed_jobs"]) == (3, 4)
    assert ran == [(1, True), (2, True)]   # the second pass's: bucket 0's loaded, as were the first pass's three
    run([tmp_path / "tx"], tmp_path / "reference", dataclasses.replace(CFG, buckets=1))
    for name in ("assignments", "rejects", "profiles.parquet"):
        assert pl.read_parquet(out / name).sort(pl.all()).equals(
            pl.read_parquet(tmp_path / "reference" / name).sort(pl.all())), name
