"""Every command as one staged pipeline: plan -> partition -> map -> global fits -> score -> commit.

The in-memory case is the one-bucket case of the same code: no partition pass, and
the map reads the input itself. Per-chunk and per-bucket stages run through an
executor (engine.pipeline.executor); the fits run here, on gathered samples.

=========  ==================================================================
command    stages
=========  ==================================================================
run        plan, partition, map, fit (RFM, CLV), cluster, score, profile, commit
assign     plan, partition, map, score, profile, commit (the model is the fit)
features   plan, partition, map, fit (RFM cut points), score, commit
clv        plan, partition, map, fit (CLV), score, commit
cohorts    plan, partition, map (cohort partials), commit
validate   plan, partition, map (cleaning only); writes nothing
=========  ==================================================================
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import polars as pl

from segmint.engine import exact
from segmint.engine.analytics.attributes import segment_mix
from segmint.engine.analytics.clv import CLV_COLUMNS, ClvFitError, ClvParams
from segmint.engine.analytics.cohorts import CohortPartials, cohort_table, retention_pivot
from segmint.engine.cluster.device import resolve_device
from segmint.engine.config import EventSource, RunConfig, config_hash, to_dict
from segmint.engine.errors import InputContractError
from segmint.engine.features.build import channel_columns, records_reused, top_channels
from segmint.engine.io.clean import RowStats, above_share
from segmint.engine.errors import ConfigError
from segmint.engine.io import store
from segmint.engine.io.lease import Holder, claim, held_by
from segmint.engine.io.pseudonym import key_fingerprint
from segmint.engine.io.sink import (OWNER, Layout, Staging, check_not_inside, check_writable, committed_run,
                                    is_committed, mark_committed, missing_folders, owner_doc, remove_empty,
                                    remove_stale, sibling_path, staged_output, version_root, work_dir, write_json)
from segmint.engine.model import Model, versions
from segmint.engine.pipeline import fit, resume
from segmint.engine.pipeline.bucket import HASH, BucketResult, Counts, MapJob, Shares, map_bucket
from segmint.engine.pipeline.executor import Executor, LocalExecutor, resolve_executor
from segmint.engine.pipeline.partition import (Releases, check_scratch_space, job_rows, partition_chunk,
                                               partition_jobs)
from segmint.engine.pipeline.plan import SCHEMA_VERSION, Plan, make_plan, new_run_id
from segmint.engine.pipeline.settings_diff import check_previous_clv_model, check_previous_meaning
from segmint.engine.pipeline.score import (ScoreJob, Scoring, assign_segments, finish_bucket, score_bucket,
                                           score_table, scored_bucket, write_scored)
from segmint.engine.profile import SUMMARY_FEATURES, KpiPartials, build_profiles, keep_names, micro_profiles
from segmint.engine.profile_files import write_profiles
from segmint.engine.progress import Progress, StageClock, peak_rss_mb
from segmint.engine.runtime import (in_order, parallel_kernels_side_by_side, pids_here, process_gone, signals_held,
                                   stop_if_signalled, thread_budget, when_asked)

__all__ = ["RunResult", "ValidationReport", "run", "assign_customers", "compute_feature_table", "compute_clv",
           "compute_cohorts", "validate"]

# Channels without a share column listed by name in run.json; the rest are counted.
_LISTED_CHANNELS = 20
# What a bucket's scored table holds, a customer, while it is written (_score_ahead holds two): scoring the next
# bucket beside the write raised the score stage's peak on scenario L at 2 GB by 18 and 81 MB over 345 k customers
# a bucket (52-235 bytes a customer), rounded up.
SCORE_BYTES_PER_CUSTOMER = 400
# The commands that read the events and customers tables of a configuration. validate, cohorts and clv use
# neither: planned with them, their several buckets partitioned and judged events the one bucket never read
# (a wrong events unit stopped `validate` with 4 buckets, not with 1).
_SIDE_TABLES = ("run", "features", "assign")
# What to check where no row is usable, by the most frequent reason (else the column mapping).
_NO_ROWS_FIX = {"after_as_of": "check --as-of: every usable row is after it",
                "future_timestamp": "check the time column and --time-format, or give --as-of",
                "unparseable_timestamp": "check the time column and --time-format",
                "ancient_timestamp": "check the time column: its dates are placeholders before 1901",
                "unparseable_amount": "check the amount column: plain numbers, '.' before the decimals, no currency "
                                      "sign or unit"}


@dataclass(frozen=True)
class RunResult:
    out: str | None
    summary: pl.DataFrame | None     # one row per segment (run, assign)
    manifest: dict[str, Any]         # the content of run.json
    clv: ClvParams | None = None     # the fitted parameters (clv)
    cohorts: pl.DataFrame | None = None  # the long cohort table (cohorts)


@dataclass(frozen=True)
class ValidationReport:
    rows_in: int
    rows_used: int
    rejected: dict[str, int]
    rejected_amount: dict[str, float | None]   # None: beyond the float range, or no finite amount (Counts)
    repeats_on_mapped_columns: int
    customers: int
    first_ts: dt.datetime | None
    last_ts: dt.datetime | None
    as_of: dt.datetime


def run(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig, progress: Progress | None = None, *,
        executor: Executor | str | None = None) -> RunResult:
    """Segment the customers in ``inputs`` and write the run directory ``out`` (atomically)."""
    previous = Model.load(cfg.previous, dict(cfg.storage_options)) if cfg.previous else None
    with _session("run", inputs, out, cfg, progress, executor,
                  model_dir=cfg.previous) as s:
        if previous is not None:   # the mapping as resolved against the input
            check_previous_meaning(previous, s.plan.cfg)
        device = resolve_device(cfg.cluster.device)
        mapped, counts = _map(s, "features")
        plan, cfg = s.plan, s.plan.cfg
        filled = [r for r in mapped if r.has_customers]
        channels = mapped[0].channels or ()
        with s.clock.stage("fit") as info:
            profile_columns = 40 + len(channels)
            cuts, clv, clv_report, fitted_on = fit.fit_cuts_and_clv(plan, filled, counts.customers, cfg.clv,
                                                                   profile_columns)
            info.update(fitted_on=fitted_on, clv=clv.purchase_model if clv else "skipped")
        if previous is not None:
            check_previous_clv_model(previous, cfg, clv)
        clv_named = [f for f in cfg.features.cluster_features or () if f in CLV_COLUMNS]
        if clv_named and clv is None:   # it was "not available", where run.json says why
            msg = f"cluster feature(s) {clv_named} need CLV, which was not fitted: {clv_report['skipped']}"
            raise InputContractError(msg)
        with s.clock.stage("cluster") as info:
            profile_sample = fit.gather(plan, filled, counts.customers, cfg.sampling.profile_customers)
            sampled = profile_sample.height
            prepared, seg, second = fit.segment_profile_sample(
                plan, profile_sample, Scoring(cfg.features, cuts, clv, cfg.clv if clv else None), channels,
                counts.customers, device, previous, profile_columns)
            del profile_sample
            outliers, micro_model, micro_report = second.limits, second.micro, second.report
            scoring = Scoring(cfg.features, cuts, clv, cfg.clv if clv else None, seg.scaler, seg.centroids, device,
                              seg.ids, outliers, micro_model)
            info.update(k=seg.k, trained_on=seg.fit.n_train, device=device)
            # The profile sample as the score stage places every customer, from the cluster stage's matrix.
            scored_sample = assign_segments(prepared, scoring, (seg.matrix, second.assignment)).drop(HASH)
            del prepared   # the scored sample holds its columns: one copy of the sample from here on
        # One bucket whose every customer is in the profile sample: that sample, scored, is the bucket's scores.
        only_zero = len(filled) == 1 and filled[0].bucket == 0
        whole = scored_sample if only_zero and scored_sample.height == counts.customers else None
        kpis, mix, micro = _score(s, scoring, filled, "assignments", whole)
        del whole, filled
        mapped = _without_tables(mapped)   # a kept feature table's last use was the score
        with s.clock.stage("profile"):
            profiles = _kept_names(build_profiles(scored_sample, kpis), seg.names, seg.matching)
            files = {"segment_mix.parquet": segment_mix(mix)} if cfg.customers else {}
            if scoring.micro is not None:
                files["micro_profiles.parquet"] = micro_profiles(scored_sample, micro)
            del scored_sample
        model = Model(columns=cfg.columns, features=cfg.features, channels=tuple(channels), rfm_cuts=cuts,
                      scaler=seg.scaler, centroids=seg.centroids, names=tuple(profiles["name"]), clv=clv,
                      clv_config=cfg.clv if clv else None,
                      provenance={"as_of": mapped[0].as_of.isoformat(), "config_hash": config_hash(cfg),
                                  "versions": versions(), "pseudonymized_ids": cfg.pseudonymize_ids,
                                  **({"pseudonym_key": key_fingerprint()} if cfg.pseudonymize_ids else {}),
                                  "run_id": plan.run_id},
                      segment_ids=seg.ids, next_segment_id=seg.next_id, outlier_distance=outliers,
                      micro=micro_model, dedupe_on=cfg.dedupe_on, events=_event_mapping(cfg.events))
        inertia = exact.total([kpis.inertia])
        manifest = _manifest(s, mapped[0].as_of, counts, channels) | {
            "k": seg.k, "k_scan": list(seg.scan.rows) if seg.scan else None, "clv": clv_report,
            "clustering": fit.clustering_report(seg, cfg.cluster, device, inertia, counts.customers),
            "profiles_note": _profiles_note(sampled, counts.customers),
            **({"micro": micro_report} if micro_report else {}),
        }
        return _finish_run(s, profiles, model, manifest, files, clv)


def assign_customers(model_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                     progress: Progress | None = None, *, executor: Executor | str | None = None) -> RunResult:
    """Score the customers in ``inputs`` with a saved model; same layout as ``run``, without a model.

    The model fixes the column mapping (but for ``cfg.columns.time_format``, how the batch writes its times,
    where given), feature settings, channel vocabulary, RFM cut points, CLV parameters, scaler and centroids;
    ``cfg`` supplies the as-of, pseudonymisation, overwrite, device, executor and the memory budget, and
    --dedupe-on where given (else the model's run's: the batch is cleaned as the training data was). Its
    events are read only for a model that clusters on event features (the CLI refuses them for others).
    """
    model = Model.load(model_dir, dict(cfg.storage_options))
    if model.provenance.get("pseudonymized_ids") and not cfg.pseudonymize_ids:
        # Its run wrote pseudonyms; this batch's assignments held the raw ids, without a word.
        msg = ("this model's run pseudonymised customer ids: score with --pseudonymize-ids and that run's "
               "SEGMINT_ID_KEY, so that no raw id is written")
        raise ConfigError(msg)
    if cfg.pseudonymize_ids:   # another key gave this batch's customers other pseudonyms than the run's, exit 0
        model.check_key()
    # Events only where the model clusters on event features; a customers table for any model, as run takes it.
    attributes = tuple(a for a, _ in model.scaler.attributes)
    engagement = model.event_features()
    if engagement and cfg.events is None:
        # It was refused as "not available" by a model its own run had just made, with exit 0.
        msg = (f"this model clusters on the event feature(s) {list(engagement)}: pass --events (read as its run "
               f"read its own; --event-*-col options name columns the batch calls otherwise)")
        raise ConfigError(msg)
    if attributes and (cfg.customers is None or not set(attributes) <= set(cfg.customers.attributes)):
        msg = (f"this model clusters on the customer attribute(s) {list(attributes)}: pass --customers with "
               f"--customer-attrs {','.join(attributes)}")
        raise ConfigError(msg)
    # How this batch writes its times is the batch's, where given; the rest of the mapping is the model's.
    columns = model.columns if cfg.columns.time_format is None else \
        dataclasses.replace(model.columns, time_format=cfg.columns.time_format)
    # The model's CLV settings, which its scoring uses: run.json said the CLI's defaults (compare then read
    # a model of a 26-week horizon as scored at 52).
    cfg = dataclasses.replace(cfg, columns=columns, features=model.features,
                              events=_model_events(model, cfg.events) if engagement else None,
                              dedupe_on=cfg.dedupe_on if cfg.dedupe_on is not None else model.dedupe_on,
                              clv=model.clv_config if model.clv_config is not None else cfg.clv,
                              customers=cfg.customers,
                              # The model's k: run.json's config said the default k (8) of a model of 4.
                              cluster=dataclasses.replace(cfg.cluster, attributes=attributes, k=model.k))
    with _session("assign", inputs, out, cfg, progress, executor, model_dir=model_dir) as s:
        device = resolve_device(cfg.cluster.device)
        mapped, counts = _map(s, "features", channels=model.channels)
        filled = [r for r in mapped if r.has_customers]
        scoring = model.scoring(device)
        kpis, mix, micro = _score(s, scoring, filled, "assignments", read_again=True)
        with s.clock.stage("profile"):
            sample = fit.gather(s.plan, filled, counts.customers, cfg.sampling.profile_customers)
            sampled = sample.height
            del filled
            mapped = _without_tables(mapped)   # a kept feature table's last use was this sample
            scored_sample = score_table(sample, scoring).drop(HASH)
            del sample
            profiles = build_profiles(scored_sample, kpis)
            # Scored customers keep the training names of their segments.
            profiles = profiles.with_columns(name=pl.Series(model.names, dtype=pl.String))  # same id order
            files = {"segment_mix.parquet": segment_mix(mix)} if cfg.customers else {}
            if model.micro is not None:
                files["micro_profiles.parquet"] = micro_profiles(scored_sample, micro)
        manifest = _manifest(s, mapped[0].as_of, counts, model.channels) | {
            "k": model.k, "model": str(model_dir), "model_provenance": model.provenance,
            **({"clv": {"purchase_model": model.clv.purchase_model, "note": model.clv.note, "fitted_on": model.clv.n,
                        "time_unit": model.clv.time_unit}} if model.clv else {}),
            "clustering": {"device": device, "inertia": exact.total([kpis.inertia]),
                           "features": list(model.scaler.columns)},
            "profiles_note": _profiles_note(sampled, counts.customers),
        }
        return _finish_run(s, profiles, None, manifest, files, model.clv)


def compute_feature_table(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                          progress: Progress | None = None, *, executor: Executor | str | None = None) -> RunResult:
    """Write the per-customer feature table to ``out/features/`` (a Parquet dataset), with rejects and run.json."""
    with _session("features", inputs, out, cfg, progress, executor) as s:
        mapped, counts = _map(s, "features")
        filled = [r for r in mapped if r.has_customers]
        with s.clock.stage("fit") as info:
            cuts, _, _, info["fitted_on"] = fit.fit_cuts_and_clv(s.plan, filled, counts.customers, None, 0)
        _score(s, Scoring(s.plan.cfg.features, cuts), filled, "features")
        manifest = _manifest(s, mapped[0].as_of, counts, mapped[0].channels or ()) | {"rfm_cuts": cuts.to_dict()}
        return _commit(s, manifest)


def compute_clv(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                progress: Progress | None = None, *, executor: Executor | str | None = None) -> RunResult:
    """Fit BG/NBD + Gamma-Gamma; write ``out/clv_params.json`` and ``out/clv/`` (per customer)."""
    with _session("clv", inputs, out, cfg, progress, executor) as s:
        mapped, counts = _map(s, "features")
        filled = [r for r in mapped if r.has_customers]
        clv_cfg = dataclasses.replace(cfg.clv, enabled=True)
        with s.clock.stage("fit") as info:
            cuts, params, report, _ = fit.fit_cuts_and_clv(s.plan, filled, counts.customers, clv_cfg, 0)
            if params is None:
                raise ClvFitError(report["skipped"])
            info.update(model=params.purchase_model, r=params.r, alpha=params.alpha,
                        **({"a": params.a, "b": params.b} if params.purchase_model == "bgnbd" else {}))
        _score(s, Scoring(s.plan.cfg.features, cuts, params, clv_cfg), filled, "clv")
        as_of = mapped[0].as_of
        write_json(s.layout.meta("clv_params.json"), params.to_dict() | {
            "as_of": as_of.isoformat(), "horizon": clv_cfg.horizon_units, "discount_rate": clv_cfg.discount_rate,
            "fitted_on": report["fitted_on"]}, s.plan.options)
        return dataclasses.replace(_commit(s, _manifest(s, as_of, counts) | {"clv": report}), clv=params)


def compute_cohorts(inputs: Sequence[str | Path], out: str | Path, cfg: RunConfig,
                    progress: Progress | None = None, *, executor: Executor | str | None = None) -> RunResult:
    """Write ``out/cohorts.parquet`` (long) and ``out/retention_pivot.parquet``; returns the long table."""
    with _session("cohorts", inputs, out, cfg, progress, executor) as s:
        mapped, counts = _map(s, "cohorts")
        with s.clock.stage("cohorts") as info:
            partials = CohortPartials()
            for r in mapped:
                partials.add(r.cohorts)
            table = cohort_table(partials, mapped[0].as_of)
            store.write_parquet(table, s.layout.meta("cohorts.parquet"), s.plan.options)
            store.write_parquet(retention_pivot(table), s.layout.meta("retention_pivot.parquet"), s.plan.options)
            info["cohorts"] = len(partials.sizes)
        result = _commit(s, _manifest(s, mapped[0].as_of, counts) | {"cohorts": len(partials.sizes)})
        return dataclasses.replace(result, cohorts=table)


def validate(inputs: Sequence[str | Path], cfg: RunConfig, progress: Progress | None = None, *,
             executor: Executor | str | None = None) -> ValidationReport:
    """Check the contract and count data-quality issues; writes nothing."""
    with _session("validate", inputs, None, cfg, progress, executor) as s:
        mapped, c = _map(s, "clean")
        return ValidationReport(
            rows_in=c.rows_in, rows_used=c.rows_used, rejected=c.rejected,
            rejected_amount=c.reported_amounts(),
            repeats_on_mapped_columns=c.repeats, customers=c.customers, first_ts=c.first_ts, last_ts=c.last_ts,
            as_of=mapped[0].as_of)


@dataclass
class _Session:
    command: str
    plan: Plan
    clock: StageClock
    executor: Executor
    staging: Staging | None  # where the output is written before commit, and the parts jobs reported
    started: dt.datetime     # to the second, as run.json and the run id give it
    out: str | None
    resumed: bool = False   # continuing a failed --resume run
    began: float = 0.0      # time.monotonic() as the session began: run.json's seconds count from here

    @property
    def layout(self) -> Layout | None:
        return self.staging.layout if self.staging is not None else None

    def run_jobs(self, stage: str, fn: Any, jobs: list[Any], info: dict[str, Any]) -> list[Any]:
        """The stage's jobs through the executor; with --resume, jobs finished before are loaded, not run.
        The part files they report are what the commit lists."""
        done = store.join(self.plan.work, "done", stage) if self.plan.cfg.resume and self.out is not None else None
        results, skipped = resume.map_jobs(self.executor, fn, jobs, tick=self.clock.tick, done=done,
                                           options=self.plan.options)
        if done is not None:   # a stage may run jobs twice (the map's buckets mapped again: _settled)
            info["resumed_jobs"] = info.get("resumed_jobs", 0) + skipped
        self.report_files(results)
        return results

    def report_files(self, results: list[Any]) -> None:
        """The part files jobs wrote, for the commit to list."""
        if self.staging is not None:
            for r in results:
                self.staging.reported.update(getattr(r, "files", ()))


@contextlib.contextmanager
def _session(command: str, inputs: Sequence[str | Path], out: str | Path | None, cfg: RunConfig,
             progress: Progress | None, executor: Executor | str | None, *,
             model_dir: str | Path | None = None) -> Iterator[_Session]:
    """Output and input checks, the output's lease, staging and work locations (removed on any exit,
    but kept for --resume when the run fails), the plan, the executor."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    inputs = [store.canonical(p) for p in inputs]
    out = store.canonical(out) if out is not None else None
    cfg = canonical_paths(cfg)
    began = time.monotonic()
    clock = StageClock(progress)
    opts = cfg.storage_options
    keep = cfg.resume and out is not None
    recorded = resumed = False
    run_id = None   # once it writes an output, its run's id
    try:
        with contextlib.ExitStack() as stack:
            # First in, so last out: once the lease, the staging and the scratch are gone, the folders made for
            # them go where empty.
            for folder in _local_folders(out, cfg):
                stack.callback(remove_empty, missing_folders(folder),
                               store.local(out) if out is not None and not store.is_remote(out) else None)
            with clock.stage("plan") as info:
                if out is not None:
                    check_not_inside(out, _input_paths(inputs, cfg, model_dir))
                    check_writable(out, overwrite=cfg.overwrite, options=opts)  # early; again under the lease
                chosen = cfg.executor if executor is None else executor
                runner = resolve_executor(chosen, **({"address": cfg.ray_address} if chosen == "ray" else {}))
                if isinstance(chosen, str):  # an executor passed in is the caller's to close
                    stack.callback(runner.close)
                if out is not None:
                    _check_shared(runner, out, cfg)
                started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
                plan = make_plan(command, inputs, cfg, work="", run_id=new_run_id(started), started=started,
                                 side_tables=command in _SIDE_TABLES)
                staging = None
                if out is not None:
                    lease = stack.enter_context(claim(out, Holder.this_process(plan.run_id, command, cfg.lease_seconds),
                                                      dict(opts)))
                    check_writable(out, overwrite=cfg.overwrite, options=opts)
                    plan, resumed = _recorded_run(plan, out, cfg)
                    # A dead run's scratch goes, unless it is the run this one resumes: killed outright (an OOM
                    # kill, kill -9, a lost node), a --resume run leaves its lease behind, and its finished jobs
                    # were removed before they could be resumed.
                    dead = lease.taken_over
                    if dead is not None and not (resumed and dead.run_id == plan.run_id):
                        _discard_work(dead.work, dead.run_id, cfg, out)
                    recorded = keep
                    if resumed:
                        info["resumes"] = plan.run_id
                plan = dataclasses.replace(plan, work=stack.enter_context(_work(cfg, out, plan.run_id, runner, keep)))
                if out is not None:
                    # Entered after the scratch, so left before it: the output is committed, then its scratch
                    # removed. Removed first, a kill meanwhile left a --resume record naming half of it, and
                    # every --resume run after failed (exit 1) advising --resume.
                    staging = stack.enter_context(staged_output(out, lease, overwrite=cfg.overwrite,
                                                                run_id=plan.run_id, options=opts, keep=keep))
                    run_id = plan.run_id
                    lease.update(run_id=plan.run_id, work=plan.work)
                info.update(rows=plan.tx.rows, buckets=plan.buckets, memory_limit_mb=round(plan.memory_limit / 2**20))
            yield _Session(command, plan, clock, runner, staging, started, out, resumed, began)
            stop_if_signalled()    # one a library caught and went on from: nothing is committed
            with signals_held():   # the commit, then the scratch's and the lease's removal, whole
                stack.close()
        if keep:
            resume.forget(out, dict(opts))
    except BaseException as exc:
        # A signal past the commit (the lease released, the runner closed, the record forgotten): the output is
        # this run's, and the CLI said "no output was changed" and advised --resume.
        if run_id is not None and not getattr(exc, "output_committed", False) and is_committed(out, run_id, dict(opts)):
            mark_committed(exc)
        if recorded and not getattr(exc, "output_committed", False):
            exc.add_note("the finished buckets are kept: rerun the same command with --resume to go on from them")
        raise


def canonical_paths(cfg: RunConfig) -> RunConfig:
    """Every location in ``cfg`` in its one spelling (engine.io.store.canonical)."""
    changes: dict[str, Any] = {}
    if cfg.previous is not None:
        changes["previous"] = store.canonical(cfg.previous)
    if cfg.work_dir is not None:
        changes["work_dir"] = store.canonical(cfg.work_dir)
    for name in ("events", "customers"):
        source = getattr(cfg, name)
        if source is not None:
            changes[name] = dataclasses.replace(source, paths=tuple(store.canonical(p) for p in source.paths))
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _check_shared(runner: Executor, out: str, cfg: RunConfig) -> None:
    """On a cluster every node writes the output: a relative or node-local path would scatter it."""
    if getattr(runner, "needs_shared_storage", False) and not store.is_remote(out):
        runner.check_shared(out)


def _recorded_run(plan: Plan, out: str, cfg: RunConfig) -> tuple[Plan, bool]:
    """Settle a failed --resume run recorded for ``out`` (under the output's lease). With --resume and
    the same fingerprint, return its plan (same id, start time and sizes) to go on from; otherwise
    discard what it left, and with --resume record this run."""
    opts = dict(cfg.storage_options)
    old = resume.load(out, opts)
    if old is not None and old.run_id == committed_run(out, opts):
        # Its run committed and was stopped before forgetting it: there is nothing of it to go on from, nor to
        # remove but what is left of its scratch (its version folder is the output: resumed, it was rewritten in
        # place then removed as the replaced version; discarded, it was deleted: the output lost, exit 0 or 4).
        _discard_work(old.work, old.run_id, cfg, out)
        resume.forget(out, opts)
        old = None
    if cfg.resume:
        fingerprint = resume.fingerprint(plan, out)
        if old is not None:
            # Compared as planned with the first attempt's sizes: which files make which bucket depends on them
            # (engine.pipeline.clusters), and an attempt whose buckets would be other files' starts afresh.
            resized = plan
            if (old.buckets, old.chunk_rows) != (plan.buckets, plan.chunk_rows):
                resized = make_plan(plan.command, plan.inputs, cfg, work="", run_id=old.run_id, started=old.started,
                                    side_tables=plan.command in _SIDE_TABLES, sizes=(old.buckets, old.chunk_rows))
            if resume.fingerprint(resized, out) == old.fingerprint:
                return dataclasses.replace(resized, run_id=old.run_id, started_at=old.started), True
    if old is not None:
        _discard(old, out, cfg)
    if cfg.resume:
        resume.save(out, resume.State(fingerprint, plan.run_id, plan.started_at.isoformat(), plan.buckets,
                                      plan.chunk_rows, _work_location(cfg, out, plan.run_id)), opts)
    return plan, False


def _discard(old: resume.State, out: str, cfg: RunConfig) -> None:
    """Remove what a kept run left: its staging, its scratch space and its record."""
    opts = dict(cfg.storage_options)
    if store.is_remote(out):
        store.remove_prefix(version_root(out, old.run_id), opts)
    else:
        shutil.rmtree(sibling_path(store.local(out), "staging", old.run_id), ignore_errors=True)
    _discard_work(old.work, old.run_id, cfg, out)
    resume.forget(out, opts)


def _discard_work(work: str | None, run_id: str, cfg: RunConfig, out: str) -> None:
    """Remove a dead or discarded run's scratch space, only if it is named as ``_work_location`` names that
    run's (a path read from a lock or state file is trusted no further). Wherever it lies: a run given another
    --work-dir, or none, than the killed one left that run's scratch on the store for good."""
    if not work:
        return
    leaf = store.canonical(work).rstrip("/").rsplit("/", 1)[-1]
    names = {f"segmint-work-{run_id}", sibling_path("segmint", "work", run_id).name}
    if not store.is_remote(out):
        names.add(sibling_path(store.local(out), "work", run_id).name)
    if leaf in names:
        store.remove_prefix(work, dict(cfg.storage_options))


@contextlib.contextmanager
def _work(cfg: RunConfig, out: str | Path | None, run_id: str, runner: Executor, keep: bool) -> Iterator[str]:
    """Scratch space for bucket files (``_work_location``). Removed on any exit but a failure with ``keep``."""
    if getattr(runner, "needs_shared_storage", False):
        if not cfg.work_dir:
            msg = ("--executor ray on a cluster needs --work-dir (and --out) on storage every node reaches: "
                   "s3://..., gs://..., az://..., or a folder mounted at the same path on every node")
            raise ConfigError(msg)
        if not store.is_remote(cfg.work_dir):
            runner.check_shared(cfg.work_dir)
    work = _work_location(cfg, out, run_id)
    if store.is_remote(work):
        opts = dict(cfg.storage_options)
        _remove_abandoned_work(cfg.work_dir, opts)
        write_json(store.join(work, OWNER), {**owner_doc(keep), "run_id": run_id,
                                             "out": store.canonical(out) if out else None}, opts)
        try:
            yield work
        except BaseException:
            if not keep:
                store.remove_prefix(work, dict(cfg.storage_options))
            raise
        store.remove_prefix(work, dict(cfg.storage_options))
        return
    # A run killed outright (SIGKILL, a lost node) leaves its scratch. Beside a local output the staging
    # removes it (staged_dir); in the temp folder (no local --out) or under --work-dir nothing did, and every
    # killed run's scratch stayed there for good.
    remove_stale(_work_base(cfg, out))
    with work_dir(Path(work), keep=keep) as folder:
        yield str(folder)


def _remove_abandoned_work(work_dir: str, opts: store.Options) -> None:
    """The scratch killed runs left under an object-store --work-dir (their features: customer data), which
    stayed for good unless a run went on at the same output. Housekeeping: what cannot be judged or read is
    left, and no error of it stops this run."""
    for folder in store.list_folders(work_dir, opts):
        if not store.name(folder).startswith("segmint-work-"):
            continue
        with contextlib.suppress(Exception):
            owner = json.loads(store.read_bytes(store.join(folder, OWNER), opts))
            if _abandoned_work(owner, opts):
                store.remove_prefix(folder, opts)


def _abandoned_work(owner: dict[str, Any], opts: store.Options) -> bool:
    """A run's scratch folder its run no longer uses: not kept for --resume, and its output on an object store
    held by no live lease of that run (runs commit, remove their scratch, then release their lease), or else its
    process gone from this host and PID namespace. A local output's lease is on its own host: another host's
    live run lost its scratch to a run that looked for that lock here."""
    if owner.get("resume"):
        return False
    if owner.get("out") and store.is_remote(owner["out"]):
        return not held_by(owner["out"], owner["run_id"], opts)
    return pids_here(owner.get("host"), owner.get("pid_namespace")) and process_gone(int(owner["pid"]))


def _local_folders(out: str | Path | None, cfg: RunConfig) -> list[Path]:
    """The local folders a run may make: the one above its output (its lease and staging go there) and its
    --work-dir."""
    folders = []
    if out is not None and not store.is_remote(out):
        folders.append(store.local(out).parent)
    if cfg.work_dir and not store.is_remote(cfg.work_dir):
        folders.append(Path(cfg.work_dir))
    return folders


def _work_location(cfg: RunConfig, out: str | Path | None, run_id: str) -> str:
    """``--work-dir``, else beside a local output, else the temp folder."""
    if cfg.work_dir and store.is_remote(cfg.work_dir):
        return store.join(cfg.work_dir, f"segmint-work-{run_id}")
    base = _work_base(cfg, out)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):   # a file in a folder's place read "unexpected FileExistsError"
        msg = f"--work-dir {cfg.work_dir}: {base.parent} or a folder above it is a file: give the path of a folder"
        raise ConfigError(msg) from None
    return str(sibling_path(base, "work", run_id))


def _work_base(cfg: RunConfig, out: str | Path | None) -> Path:
    """What a local work dir is named beside (``sibling_path``)."""
    if cfg.work_dir:
        return Path(cfg.work_dir) / "segmint"
    return store.local(out) if out is not None and not store.is_remote(out) else Path(tempfile.gettempdir()) / "segmint"


def _event_mapping(events: EventSource | None) -> dict[str, str | None] | None:
    """The columns of a run's events (not its paths), kept in its model."""
    if events is None:
        return None
    return {k: v for k, v in dataclasses.asdict(events).items() if k != "paths"}


def _model_events(model: Model, given: EventSource) -> EventSource:
    """A batch's events read as the model's run read its own: a column named otherwise than by default names
    the batch's (a batch may call its ids 'uid'), any other is the run's, and the run's choice of sessions holds
    (a session column left out in the run but read by default here changed 26% of customers' sessions and 2.7%
    of segments, exit 0)."""
    if model.events is None:   # a model of a version that kept no mapping, loaded without its run
        return given
    default = EventSource(paths=given.paths)
    mapping = {k: getattr(given, k) if getattr(given, k) != getattr(default, k) else v
               for k, v in model.events.items()}
    if model.events["session"] is None or mapping["session"] is None:
        mapping["session"] = model.events["session"]
    return EventSource(paths=given.paths, **mapping)


def _map(s: _Session, mode: str, *, channels: Sequence[str] | None = None) -> tuple[list[BucketResult], Counts]:
    """Partition (several buckets), then map every bucket; checks the reject share."""
    plan = s.plan
    as_of, vocabulary = plan.fixed_as_of, tuple(channels) if channels is not None else None
    assumed = _footer_as_of(plan) if as_of is None else None
    # Where the input's files are the buckets, the run's as-of and channels are settled once they are mapped:
    # no pass reads every row before (scenario L: 8.9-11.6 s).
    settle = bool(plan.clusters) and (as_of is not None or assumed is not None)
    with s.clock.stage("partition") as info:
        info["buckets"] = plan.buckets
        if plan.buckets > 1:
            info["clustered"] = bool(plan.clusters)   # no scratch: the input's files are the buckets
            if settle:
                as_of = as_of or assumed
                info["statistics"] = "buckets"   # their maps gather them, and settle them (_settled)
            else:
                if not s.resumed:   # a resumed run's finished jobs hold their space already
                    check_scratch_space(plan)
                merged = _row_stats(s, info)
                info["statistics"] = "rows"
                as_of = as_of or merged.latest or plan.now
                if vocabulary is None:
                    vocabulary = top_channels(merged.channels, plan.cfg.features.max_channels)
    with s.clock.stage("map") as info:
        # The only bucket's feature table stays in this process for the fit and score that follow here,
        # unless a resumed attempt must find it on disk (or the map ran elsewhere). It is already part
        # of the map's peak, so the later stages holding it stay under that peak.
        keep = plan.buckets == 1 and mode == "features" and _run_once(s)
        # Several buckets mapped one after another in this process (not by Ray's workers, of one CPU each):
        # - they reuse one bucket's line records, but not with side tables, whose rows a bucket maps after
        #   its lines, while the records would still be held;
        # - each removes its scratch files once done (partition.Releases), where no job runs twice.
        local_buckets = plan.buckets > 1 and isinstance(s.executor, LocalExecutor)
        releases = Releases() if _run_once(s) else None
        jobs = [MapJob(plan, b, as_of, vocabulary, mode, s.layout, keep, releases) for b in range(plan.buckets)]
        reuse = local_buckets and plan.events is None and plan.customers is None
        try:
            with records_reused() if reuse else contextlib.nullcontext():
                mapped = s.run_jobs("map", map_bucket, jobs, info)
                if settle:
                    mapped = _settled(s, mapped, jobs, assumed, info)
        finally:
            if releases is not None:
                releases.wait()
        counts = Counts()
        for r in mapped:
            counts.add(r.counts)
        held = {"tx": counts.rows_in} | ({"events": counts.events_in, "customers": counts.customer_rows_in}
                                         if mode == "features" else {})   # side tables: where they are read
        for role in [r for r in held if plan.source(r) is not None and held[r] != plan.source(r).rows]:
            # Every input row goes to one bucket: fewer read back means scratch files went missing (removed
            # too early, lost from a resumed attempt's work dir), and customers or their events would be
            # missing with exit 0.
            lost = "the input changed while the run read it; rerun" if plan.clusters or plan.buckets == 1 else \
                f"scratch files under {plan.work} went missing; rerun (without --resume)"   # the map read no input
            msg = f"the buckets hold {held[role]:,} {_ROWS[role]} but the input has {plan.source(role).rows:,}: {lost}"
            raise InputContractError(msg)
        info.update(used=counts.rows_used, rejected=counts.rows_in - counts.rows_used, customers=counts.customers,
                    largest_bucket_rows=max((r.counts.rows_in for r in mapped), default=0),
                    **{f"{part}_seconds": round(sum(r.seconds.get(part, 0.0) for r in mapped), 3)
                       for part in ("read", "lines", "write")})
    _check_rejects(counts, plan.cfg.max_reject_share)
    if plan.events is not None:
        _check_event_rejects(counts, plan.cfg.max_reject_share)
    return mapped, counts


_ROWS = {"tx": "rows", "events": "event rows", "customers": "customers-table rows"}


def _footer_as_of(plan: Plan) -> dt.datetime | None:
    """The as-of a run whose files are the buckets assumes: the latest time their footers record, where that is
    not in the future (rows after the run's start are rejected, and which is then the latest usable row only
    the rows say)."""
    if not plan.clusters or plan.footer_latest_us is None:
        return None
    latest = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=plan.footer_latest_us)
    return latest if latest <= plan.now else None


def _row_stats(s: _Session, info: dict[str, Any]) -> RowStats:
    """The latest usable time and the lines per channel of every transaction row: partition jobs, which write
    every row to its bucket's scratch on the way unless the files are the buckets."""
    jobs = [job for role in s.plan.roles() for job in partition_jobs(s.plan, role)]
    stats = [st for st in s.run_jobs("partition", partition_chunk, jobs, info) if st is not None]
    info.setdefault("chunks", len(jobs))
    info.setdefault("largest_job_rows", max(job_rows(job) for job in jobs))
    return RowStats.merge(stats)


def _settled(s: _Session, mapped: list[BucketResult], jobs: list[MapJob], assumed: dt.datetime | None,
             info: dict[str, Any]) -> list[BucketResult]:
    """Buckets of whole files mapped before the run's as-of and channels were known (``assumed``: the as-of
    taken from the footers; channels each bucket's own), settled from what their rows held: the as-of and
    channels a pass over every row gives, and so the same bits.

    - The as-of is checked: the latest usable time the buckets found must be the one assumed, and no row may be
      after it. Otherwise (the latest row rejected for another reason, footers that say less than the rows) every
      bucket is mapped again with the one the rows give.
    - A bucket whose own most common channels leave out one of the run's that it has lines of is mapped again with
      the run's. Any other bucket's table takes the run's share columns as it is read (``Shares``)."""
    plan = s.plan
    stats = RowStats.merge([RowStats(r.latest, r.counts.channel_lines) for r in mapped])
    as_of = jobs[0].as_of
    wrong = False
    if assumed is not None:
        if any(r.counts.rejected["after_as_of"] for r in mapped):
            stats = _row_stats(s, {})   # rows after the footers' latest time: their statistics said less
            info["statistics"] = "rows"
        as_of = stats.latest or plan.now
        wrong = as_of != assumed
    vocabulary = jobs[0].channels if jobs[0].channels is not None else \
        top_channels(stats.channels, plan.cfg.features.max_channels)
    again = [i for i, r in enumerate(mapped) if wrong or not _covers(r, vocabulary)]
    if again:
        redone = s.run_jobs("map", map_bucket, [dataclasses.replace(jobs[i], as_of=as_of, channels=vocabulary)
                                                for i in again], info)
        for i, r in zip(again, redone, strict=True):
            mapped[i] = r
        info["mapped_again"] = len(again)
    return [r if r.channels is None or r.channels == vocabulary else
            dataclasses.replace(r, channels=vocabulary, shares=Shares(r.channels, vocabulary)) for r in mapped]


def _covers(mapped: BucketResult, vocabulary: tuple[str, ...]) -> bool:
    """Whether a bucket's feature table has a share column for each of the run's channels its rows hold."""
    return mapped.channels is None or all(ch in mapped.channels or not mapped.counts.channel_lines.get(ch)
                                          for ch in vocabulary)


def _score(s: _Session, scoring: Scoring, filled: list[BucketResult], output: str,
           scored: pl.DataFrame | None = None, *,
           read_again: bool = False) -> tuple[KpiPartials, dict, dict[str, tuple[int, list[float]]]]:
    """Score every bucket with customers through the executor; ``scored``: the only bucket's rows already
    scored (run's profile sample, when it holds every customer of one bucket), written here instead of
    scored again. A feature table its map job kept is scored here too, from memory. ``read_again``: the
    command reads the feature tables after this (else each is removed once scored, where jobs run once)."""
    with s.clock.stage("score") as info:
        release = _run_once(s) and not read_again
        jobs = [ScoreJob(s.plan, r.bucket, scoring, output, s.layout, release, r.shares) for r in filled]
        stage = f"score-{resume.digest(scoring)}"
        if s.resumed and not store.exists(store.join(s.plan.work, "done", stage), s.plan.options):
            _clear_score_markers(s)  # scored by a model that came out differently
        kept = [r.table for r in filled if r.table is not None]   # only ever the one bucket's
        if scored is None and kept:
            scored = score_table(kept[0].drop(HASH), scoring)
        if scored is not None:
            results = [write_scored(jobs[0], scored)]
            s.report_files(results)
            s.clock.tick(1, 1)
        elif _score_ahead(s, filled, scoring):
            results = _scores_ahead(s, jobs)
        else:
            results = s.run_jobs(stage, score_bucket, jobs, info)
        kpis = KpiPartials(ids=scoring.ids, customers=[0] * scoring.k, orders=[0] * scoring.k,
                           repurchasers=[0] * scoring.k, outliers=[0] * scoring.k,
                           status={st: [0] * scoring.k for st in ("new", "active", "at_risk", "lapsed")},
                           revenue=[[] for _ in range(scoring.k)],
                           clv=[[] for _ in range(scoring.k)] if scoring.clv is not None else None)
        mix: dict = {}
        micro: dict[str, tuple[int, list[float]]] = {}
        for r in results:
            if r.kpis is not None:
                kpis.add(r.kpis)
            for key, n in r.mix.items():
                mix[key] = mix.get(key, 0) + n
            for key, (n, revenue) in r.micro.items():
                have = micro.get(key, (0, []))
                micro[key] = (have[0] + n, have[1] + revenue)
        info["buckets"] = len(jobs)
    return kpis, mix, micro


def _score_ahead(s: _Session, filled: list[BucketResult], scoring: Scoring) -> bool:
    """Whether the next bucket may be scored beside the write of the one before it (``_scores_ahead``): this
    process's jobs run once (no markers to keep), on the CPU, two threads may launch parallel kernels at once, and
    the budget holds two buckets' scored tables."""
    largest = max((r.counts.customers for r in filled), default=0)
    return (len(filled) > 1 and _run_once(s) and scoring.device == "cpu" and thread_budget() > 1
            and 2 * largest * SCORE_BYTES_PER_CUSTOMER <= s.plan.data_budget and parallel_kernels_side_by_side())


def _scores_ahead(s: _Session, jobs: list[ScoreJob]) -> list[Any]:
    """``score_bucket`` of each job, the next bucket's scores made on a helper thread while this one's are written
    (``in_order``, one ahead): the scoring runs on about one core and Polars' compression leaves some of the two
    (scenario L's score stage at 2 GB 8.56 and 8.64 -> 7.21 and 7.10 s, in turn). The same files and KPIs as one
    job after the other."""
    results = []
    # Closed on any exit: a write that fails (a full disk, Ctrl-C) stops the helper before the work folder it reads
    # from is removed, not once the error's traceback is dropped.
    with contextlib.closing(in_order((when_asked(scored_bucket, job) for job in jobs), ahead=1)) as ahead:
        for i, job in enumerate(jobs, start=1):
            scored = next(ahead)
            results.append(finish_bucket(job, scored))
            del scored   # written: let go before the next is waited for (a zip's tuple would hold it)
            s.clock.tick(i, len(jobs))
    s.report_files(results)
    return results


def _run_once(s: _Session) -> bool:
    """Whether each job runs at most once, so its input may be removed once it is done: this process's jobs
    (Ray may run a task again) in a run that cannot be resumed (a later attempt goes on from the work dir)."""
    return isinstance(s.executor, LocalExecutor) and not (s.plan.cfg.resume and s.out is not None)


def _without_tables(mapped: list[BucketResult]) -> list[BucketResult]:
    """The map's results without the feature table a job kept: what holds it after its last use."""
    return [dataclasses.replace(r, table=None) for r in mapped]


def _clear_score_markers(s: _Session) -> None:
    """Forget every score job a resumed run finished with another fit: their files are rewritten by
    this fit's jobs (and those no job reports are removed at commit), and a later attempt whose fit
    came out like an older one must not load markers of files rewritten since."""
    done = store.join(s.plan.work, "done")
    opts = s.plan.options
    store.remove([f for f in store.list_files(done, opts) if f[len(done) + 1:].startswith("score-")], opts)


def _kept_names(profiles: pl.DataFrame, kept: tuple[str | None, ...], matching: dict[str, Any] | None) -> pl.DataFrame:
    """Segments matched to a previous run keep its names where they still hold (profile.keep_names: "frequent"
    kept at the 37th percentile was false; with no margin a stable segment flipped between two names month after
    month). The matching report's pairs say which names were kept."""
    if not any(kept):
        return profiles
    names, held = keep_names(profiles.to_dicts(), profiles["name"].to_list(), list(kept))
    if matching is not None:
        by_id = dict(zip(profiles["segment"].to_list(), held, strict=True))
        for pair in matching["pairs"]:
            pair["name_kept"] = by_id.get(pair["segment"], False)
    return profiles.with_columns(name=pl.Series(names, dtype=pl.String))


def _check_event_rejects(c: Counts, limit: float) -> None:
    """The events' share, as the transactions': events given in the wrong unit (every time past year 9999) left
    every customer without sessions, page views or conversions, exit 0. Events of no customer (logged-out
    visitors: most of some sites' events) and events after the as-of, given or derived (an events file runs on
    past the last purchase), are left out of it; so are those after the moment the run started (future_timestamp,
    a reason only where the as-of is derived, which they are after too): given that as-of, they were left out."""
    aside = ("null_customer_id", "after_as_of", "future_timestamp")
    # Every event of a customer after the as-of (anonymous ones beside them): a back-test's.
    of_customers = c.events_in - c.events_rejected.get("null_customer_id", 0)
    back_test = 0 < of_customers <= c.events_rejected.get("after_as_of", 0)
    if c.events_in and not c.events_used and not c.events_set_aside and not back_test and limit < 1:
        # Every event left out, each for a reason left out of the share (all dated a decade on: future_timestamp):
        # every customer's sessions, page views and conversions were 0, exit 0. Events all after the as-of are a
        # back-test's (an events export that starts later): none up to it is what the as-of sees.
        reasons = ", ".join(f"{r}: {n:,}" for r, n in c.events_rejected.items() if n)
        msg = (f"none of the {c.events_in:,} event rows is an event of a customer up to the as-of"
               f"{f' ({reasons})' if reasons else ''}: every customer's sessions, page views and conversions "
               f"would be 0; check the events' time column, its time zone and --event-time-format, their customer "
               f"ids, and --as-of, or leave --events out")
        raise InputContractError(msg)
    judged = c.events_in - sum(c.events_rejected.get(r, 0) for r in aside) - c.events_set_aside
    if judged <= 0:
        return
    share = 1 - c.events_used / judged
    if above_share(judged - c.events_used, judged, limit):
        counted = {r: n for r, n in c.events_rejected.items() if n and r not in aside}
        reasons = ", ".join(f"{r}: {n:,}" for r, n in counted.items())
        # The fix for the most common reason: empty event types were told to check the time column.
        top = max(counted, key=counted.get, default="")
        fix = ("the events' event type column (--event-type-col)" if top == "null_event_type"
               else "the events' time column and --event-time-format")
        msg = (f"{judged - c.events_used:,} of {judged:,} event rows of a customer up to the as-of ({share:.1%}) "
               f"were rejected ({reasons}), above --max-reject-share {limit:g}; check {fix}, or raise the share")
        raise InputContractError(msg)


def _check_rejects(c: Counts, limit: float) -> None:
    """Rows after a given --as-of were left out by choice (a back-test's later months), not for their quality:
    they are not part of the share, whatever their reason."""
    reasons = ", ".join(f"{r}: {n:,}" for r, n in c.rejected.items() if n)
    if c.rows_used == 0:
        top = max(c.rejected, key=c.rejected.get)
        fix = _NO_ROWS_FIX.get(top, "check the column mapping")
        msg = f"no usable rows: all {c.rows_in:,} rows were rejected ({reasons}); {fix}"
        raise InputContractError(msg)
    judged = c.rows_in - c.rows_after_as_of
    share = 1 - c.rows_used / judged
    if above_share(judged - c.rows_used, judged, limit):
        after = f" (the {c.rows_after_as_of:,} after --as-of not counted)" if c.rows_after_as_of else ""
        msg = (f"{judged - c.rows_used:,} of {judged:,} rows{after} ({share:.1%}) were rejected ({reasons}), above "
               f"--max-reject-share {limit:g}; check the mapping, --as-of and --time-format, or raise the share")
        raise InputContractError(msg)


def _manifest(s: _Session, as_of: dt.datetime, c: Counts, channels: Sequence[str] | None = None) -> dict[str, Any]:
    """The part of run.json every command writes; the commit adds the stages and end time. ``channels``: the
    vocabulary of the channel shares, where the command makes them."""
    plan, cfg = s.plan, s.plan.cfg
    # Usable lines on a channel no share column holds (one the model never saw, in assign; one beyond
    # features.max_channels): counted in no share, which said nothing of them.
    outside = sorted(((n, ch) for ch, n in c.channel_lines.items() if channels is not None and ch not in channels),
                     key=lambda nc: (-nc[0], nc[1]))
    # The most used (a column of store ids holds thousands), then the others' count and lines.
    listed, rest = outside[:_LISTED_CHANNELS], outside[_LISTED_CHANNELS:]
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": plan.run_id,
        "command": s.command,
        "status": "succeeded",
        "started_at": s.started.isoformat(),
        "inputs": list(plan.inputs),
        "columns": dataclasses.asdict(cfg.columns),
        "as_of": as_of.isoformat(),
        "rows": {"in": c.rows_in, "used": c.rows_used, "rejected": c.rows_in - c.rows_used,
                 "after_as_of": c.rows_after_as_of,
                 "rejected_by_reason": c.rejected,
                 "rejected_amount_by_reason": c.reported_amounts(),
                 "repeats_on_mapped_columns": c.repeats,
                 **({"channels_without_a_share": {ch: n for n, ch in listed}} if listed else {}),
                 **({"channels_without_a_share_others": {"channels": len(rest), "lines": sum(n for n, _ in rest)}}
                    if rest else {})},
        "customers": c.customers,
        "time_range": [c.first_ts.isoformat() if c.first_ts else None, c.last_ts.isoformat() if c.last_ts else None],
        "buckets": plan.buckets,
        "memory": {"limit_bytes": plan.memory_limit, "peak_rss_mb": None, "planned_bytes_per_line": plan.bytes_per_row},
        "executor": s.executor.name,
        "seed": cfg.cluster.seed,
        "threads": numba.get_num_threads(),
        "versions": versions(),
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
    }
    if cfg.pseudonymize_ids:
        doc["pseudonym_key"] = key_fingerprint()
    if channels is not None:
        # Each share column's channel: channels of other scripts than Latin all read "blank" in their names, and
        # only model.json said which was which.
        doc["channels"] = list(channels)
        doc["channel_columns"] = dict(zip(channel_columns(channels), channels, strict=True))
    if plan.events is not None:
        doc["events"] = {"rows": {"in": c.events_in, "used": c.events_used,
                                  "rejected": c.events_in - c.events_used - c.events_set_aside,
                                  "rejected_by_reason": c.events_rejected,
                                  "of_customers_set_aside": c.events_set_aside},
                         "customers_with_events": c.customers_with_events,
                         "funnel": dict(sorted(c.funnel.items()))}
    if plan.customers is not None:
        doc["customers_table"] = {"attributes": list(cfg.customers.attributes),
                                  "without_a_row": c.without_customer_row,
                                  "rows_left_out": {"no_customer_id": c.customer_rows_without_id,
                                                    "no_usable_transaction": c.customer_rows_unmatched}}
    return doc


def _finish_run(s: _Session, profiles: pl.DataFrame, model: Model | None, manifest: dict[str, Any],
                files: dict[str, pl.DataFrame], clv: ClvParams | None) -> RunResult:
    opts = s.plan.options
    write_profiles(s.layout.root, profiles, opts, clv)
    if model is not None:
        model.save(s.layout.meta("model"), opts)
    for name, frame in files.items():
        store.write_parquet(frame, s.layout.meta(name), opts)
    summary = profiles.select("segment", "name", "customers", "share", "revenue_share", "aov_kpi",
                              *[f"{f}_mean" for f in SUMMARY_FEATURES], "recency_days_median",
                              *(["clv_total"] if "clv_total" in profiles.columns else []))
    return dataclasses.replace(_commit(s, manifest), summary=summary)


def _commit(s: _Session, manifest: dict[str, Any]) -> RunResult:
    """run.json (with every stage so far); the session's exit writes the manifest and _SUCCESS and
    renames the staging folder into place."""
    manifest["stages"] = s.clock.stages
    manifest["memory"]["peak_rss_mb"] = peak_rss_mb()
    manifest["memory"]["measured_bytes_per_line"] = _measured_bytes_per_line(s)
    manifest["ended_at"] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    # From the session's start, not from started_at: that is cut to the second, and the run read up to a
    # second longer than it took (5.59 s in run.json for a run of 4.7 s).
    manifest["seconds"] = round(time.monotonic() - s.began, 3)
    write_json(s.layout.meta("run.json"), manifest, s.plan.options)
    return RunResult(s.out, None, manifest)


def _measured_bytes_per_line(s: _Session) -> dict[str, float]:
    """What the partition and map stages added to this process per line they held at once (a job's rows,
    the largest bucket's), as the plan budgets them. Measured by RSS, so only where it shows: in this
    process (not Ray's workers), and for the map only when no partition stage ran before it (the
    memory a partition frees is reused by the map without the RSS growing)."""
    if s.plan.cfg.executor != "local":
        return {}
    held = {"partition": "largest_job_rows", "map": "largest_bucket_rows"}
    stages = {name: s.clock.stages.get(name, {}) for name in held}
    if "largest_job_rows" in stages["partition"]:   # partition jobs ran (not where the files are the buckets)
        stages.pop("map")
    return {name: round(st["added_mb"] * 2**20 / st[held[name]], 1) for name, st in stages.items()
            if st.get(held[name]) and "added_mb" in st}


def _input_paths(inputs: Sequence[str | Path], cfg: RunConfig, model_dir: str | Path | None) -> dict[str, list[str]]:
    paths = {"inputs": [str(p) for p in inputs]}
    if cfg.events is not None:
        paths["--events"] = list(cfg.events.paths)
    if cfg.customers is not None:
        paths["--customers"] = list(cfg.customers.paths)
    if model_dir is not None:
        paths["the model"] = [str(model_dir)]
    return paths


def _profiles_note(sampled: int, customers: int) -> str:
    """``sampled``: the profile sample's customers, as gathered (a hash threshold keeps about the number asked
    for: the note said 1,000 of a sample of 975)."""
    if sampled == customers:
        return "every statistic over every customer"
    return (f"per-feature statistics (mean, median, std, p10, p90, z-lift) from the {sampled:,} customers of lowest "
            f"hash; sizes, revenue, orders and CLV totals exact")
