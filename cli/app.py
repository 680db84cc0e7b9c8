"""The ``segmint`` command line. Parses, calls the engine, renders; no business logic here."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from segmint.cli import _render
from segmint.cli._options import (AppThreads, AsOf, Buckets, ConfigFile, DedupeOn, Device, Executor, Inputs, Json,
                                  K, MaxRejectShare, MemoryLimit, Out, Overwrite, Pseudonymize, RayAddress, Seed,
                                  Resume, StorageOption, Threads, TimeFormat, WorkDir,
                                  build_config, column_options, flag, parse_storage_options, side_table_options)
from segmint.engine.errors import SegmintError

__all__ = ["app", "main"]

app = typer.Typer(
    name="segmint",
    help="Segment very large customer bases: Parquet (or CSV) transactions in, actionable segments out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
abtest_app = typer.Typer(help="Holdout groups per segment, and campaign evaluation.\n\nExample: `segmint abtest split "
                              "runs/2026-06 --ratio 0.1 --salt spring-promo --out groups.parquet`, then, after the "
                              "campaign, `segmint abtest evaluate --assignments groups.parquet --outcomes outcomes.csv "
                              "--out ab`", no_args_is_help=True)
app.add_typer(abtest_app, name="abtest")
_state: dict = {"debug": False, "started": time.perf_counter()}


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that every ``finally`` cleans up (exit 143)."""


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        _render.print_lines([f"segmint {version('segmint')}"])
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: Annotated[bool, flag("--debug", help="Show tracebacks on errors.", panel=None)] = False,
    threads: AppThreads = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", metavar="",
                                          callback=_version, is_eager=True)] = False,
) -> None:
    _state["debug"] = debug or os.environ.get("SEGMINT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    _state["started"] = time.perf_counter()
    with _errors(False, handlers=False):
        _threads(threads)


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (local).", metavar="DIR")] = "segmint-demo",
    n_customers: Annotated[int, typer.Option("--n-customers", help="Customers to generate.", metavar="N")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed for data and clustering.", metavar="N")] = 0,
    k: K = None,
    memory_limit: MemoryLimit = None,
    overwrite: Overwrite = None,
    json_logs: Json = False,
    threads: Threads = None,
) -> None:
    """Generate a sample, segment it, print the summary and write the outputs.

    Example: `segmint demo --out demo --n-customers 5000`

    Writes OUT (default ./segmint-demo): data/ (transactions, planted personas, events,
    customers table), run/ (segments, profiles, model, funnel, segment mix), cohorts/ and
    report.html. A previous demo at OUT is replaced; another folder must be new, or empty
    (with --overwrite).
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.demo")
        from segmint.engine.demo import run_demo

        cfg = build_config(None, cluster={"k": k, "seed": seed}, overwrite=overwrite, memory_limit=memory_limit)
        result = run_demo(out, cfg, customers=n_customers, seed=seed, progress=_render.make_progress(json_logs))
        _finish(result, json_logs)
        if not json_logs:
            _render.print_lines([f"report in {Path(out) / 'report.html'}, cohorts in {Path(out) / 'cohorts'}"])


@app.command()
def generate(
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (local).", metavar="DIR")],
    n_customers: Annotated[int, typer.Option("--n-customers", help="Number of customers.", metavar="N")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.", metavar="N")] = 0,
    with_events: Annotated[bool, typer.Option("--with-events/--no-events", help="Also write web/app events.")] = True,
    overwrite: Annotated[bool, flag("--overwrite", help="Replace an existing output.")] = False,
    threads: Threads = None,
) -> None:
    """Write a synthetic transaction dataset with planted personas.

    Example: `segmint generate --out data --n-customers 3000 --seed 7`

    Layout: OUT/transactions/part-NNNNN.parquet (customer_id, ts, amount, order_id,
    channel, category), OUT/personas.parquet (customer_id, persona),
    OUT/events/part-NNNNN.parquet, OUT/customers.parquet, _manifest.json and _SUCCESS.
    """
    with _errors(False):
        _threads(threads, "segmint.engine.synth")
        from segmint.engine.synth import generate as gen

        r = gen(out, customers=n_customers, seed=seed, events=with_events, overwrite=overwrite)
        _render.print_lines([f"wrote {r.lines:,} lines of {r.customers:,} customers in {r.files} file(s) "
                             f"to {r.out}/transactions, personas in {r.out}/personas.parquet"])


@app.command()
@column_options
@side_table_options
def run(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    side: dict | None = None,
    as_of: AsOf = None, k: K = None, seed: Seed = None, device: Device = None,
    previous: Annotated[str | None, typer.Option("--previous", help="An earlier run (or its model folder): k-means "
                                                 "starts from its centroids, and matched segments keep their ids "
                                                 "and names.", metavar="RUN_DIR", rich_help_panel="Run",
                                                 show_default=False)] = None,
    warm_start: Annotated[bool | None, flag("--warm-start/--no-warm-start", help="With --previous: start k-means "
                                            "from its centroids and keep their number [default], or cluster afresh "
                                            "with --k and only match the ids.")] = None,
    cluster_attrs: Annotated[str | None, typer.Option("--cluster-attrs", help="Comma-separated attributes of the "
                                                      "customers table to cluster on too, one-hot [default: none].",
                                                      metavar="COLS", rich_help_panel="Run",
                                                      show_default=False)] = None,
    micro_k: Annotated[str | None, typer.Option("--micro-k", help="Micro-segments inside each segment: a number "
                                                "or 'auto' (2..8) [default: none].", metavar="N|auto",
                                                rich_help_panel="Run", show_default=False)] = None,
    dedupe_on: DedupeOn = None, max_reject_share: MaxRejectShare = None, pseudonymize_ids: Pseudonymize = None,
    overwrite: Overwrite = None, memory_limit: MemoryLimit = None, buckets: Buckets = None,
    executor: Executor = None, ray_address: RayAddress = None, work_dir: WorkDir = None, resume: Resume = None,
    storage_option: StorageOption = None, json_logs: Json = False, threads: Threads = None,
) -> None:
    """Segment customers: plan, partition, map, fit, cluster, score, profile, commit.

    Example: `segmint run data/transactions --out runs/2026-06 --k auto`

    Writes OUT/assignments/segment=N/, profiles.parquet/.json/.csv, model/, rejects/,
    run.json, _manifest.json and _SUCCESS, atomically.
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import run as run_pipeline

        cfg = build_config(config, columns=columns, side=side,
                           cluster={"k": k, "seed": seed, "device": device, "micro_k": micro_k,
                                    "attributes": _names(cluster_attrs)},
                           previous=previous, warm_start=warm_start,
                           **_run_options(as_of, dedupe_on, max_reject_share, pseudonymize_ids, overwrite,
                                          memory_limit, buckets, executor, work_dir, ray_address, storage_option,
                                          resume))
        _finish(run_pipeline(inputs, out, cfg, _render.make_progress(json_logs)), json_logs)


@app.command()
@side_table_options
def assign(
    model: Annotated[str, typer.Argument(help="A run directory (or its model/ folder).", metavar="RUN_DIR")],
    inputs: Inputs,
    out: Out,
    side: dict | None = None,
    as_of: AsOf = None, device: Device = None, dedupe_on: DedupeOn = None, max_reject_share: MaxRejectShare = None,
    pseudonymize_ids: Pseudonymize = None, overwrite: Overwrite = None, memory_limit: MemoryLimit = None,
    buckets: Buckets = None, executor: Executor = None, ray_address: RayAddress = None, work_dir: WorkDir = None,
    resume: Resume = None, time_format: TimeFormat = None,
    storage_option: StorageOption = None, json_logs: Json = False, threads: Threads = None,
) -> None:
    """Score new customers with a saved model (same features, scaler, cut points, centroids).

    Example: `segmint assign runs/2026-06 data/transactions --out runs/2026-06-scored`

    The model fixes the column mapping but for --time-format, how this batch writes its times;
    output has the layout of `run` without model/ (score again with the run's model). Recency,
    status and CLV are measured at --as-of, else at the batch's latest valid time. A model that
    clusters on customer attributes (--cluster-attrs) needs the customers table here too, and one
    that clusters on event features (sessions, conversion_rate, ...) the events (--events).
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.errors import ConfigError
        from segmint.engine.model import Model
        from segmint.engine.pipeline import assign_customers

        cfg = build_config(None, columns={"time_format": time_format}, cluster={"device": device}, side=side,
                           **_run_options(as_of, dedupe_on, max_reject_share, pseudonymize_ids, overwrite,
                                          memory_limit, buckets, executor, work_dir, ray_address, storage_option,
                                          resume))
        if cfg.events is not None and not Model.load(model, dict(cfg.storage_options)).event_features():
            raise ConfigError("assign reads an events table only for a model that clusters on event features; this "
                              "one's features come from transactions: drop --events and the --event-* options")
        _finish(assign_customers(model, inputs, out, cfg, _render.make_progress(json_logs)), json_logs)


@app.command()
@column_options
def features(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None, dedupe_on: DedupeOn = None, max_reject_share: MaxRejectShare = None,
    pseudonymize_ids: Pseudonymize = None, overwrite: Overwrite = None, memory_limit: MemoryLimit = None,
    buckets: Buckets = None, executor: Executor = None, ray_address: RayAddress = None, work_dir: WorkDir = None,
    resume: Resume = None,
    storage_option: StorageOption = None, json_logs: Json = False, threads: Threads = None,
) -> None:
    """Write only the per-customer feature table (with RFM scores), as a Parquet dataset.

    Example: `segmint features data/transactions --out features`

    Writes OUT/features/part-NNNNN.parquet, rejects/, run.json, _manifest.json and _SUCCESS.
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import compute_feature_table

        cfg = build_config(config, columns=columns,
                           **_run_options(as_of, dedupe_on, max_reject_share, pseudonymize_ids, overwrite,
                                          memory_limit, buckets, executor, work_dir, ray_address, storage_option,
                                          resume))
        result = compute_feature_table(inputs, out, cfg, _render.make_progress(json_logs))
        _done(result.manifest, out, json_logs, f"wrote features of {result.manifest['customers']:,} customers "
                                               f"to {_join(_root(out, result.manifest['run_id']), 'features')}")


@app.command()
@column_options
def clv(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None,
    time_unit: Annotated[str | None, typer.Option("--time-unit", help="day | week [default: week].", metavar="UNIT",
                                                  show_default=False)] = None,
    horizon: Annotated[float | None, typer.Option("--horizon", help="Prediction horizon in time units "
                                                  "[default: 52 weeks in either unit].", metavar="N",
                                                  show_default=False)] = None,
    discount_rate: Annotated[float | None, typer.Option("--discount-rate", help="Annual discount rate "
                                                        "[default: 0.10].", metavar="RATE",
                                                        show_default=False)] = None,
    purchase_model: Annotated[str | None, typer.Option("--purchase-model", help="auto | bgnbd | nbd [default: "
                                                       "auto: the NBD limit when no dropout is detected].",
                                                       metavar="MODEL", show_default=False)] = None,
    dedupe_on: DedupeOn = None, max_reject_share: MaxRejectShare = None, pseudonymize_ids: Pseudonymize = None,
    overwrite: Overwrite = None, memory_limit: MemoryLimit = None, buckets: Buckets = None,
    executor: Executor = None, ray_address: RayAddress = None, work_dir: WorkDir = None, resume: Resume = None,
    storage_option: StorageOption = None, json_logs: Json = False, threads: Threads = None,
) -> None:
    """Fit BG/NBD (or its no-dropout NBD limit) + Gamma-Gamma by maximum likelihood and predict each
    customer's CLV.

    Example: `segmint clv data/transactions --as-of 2026-03-31 --time-unit week --horizon 52 --out clv`

    Writes OUT/clv_params.json (r, alpha, a, b, p, q, v, log-likelihoods, n),
    OUT/clv/part-NNNNN.parquet (p_alive, expected_purchases, expected_avg_value, clv),
    rejects/, run.json, _manifest.json and _SUCCESS.
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import compute_clv

        cfg = build_config(config, columns=columns,
                           clv={"time_unit": time_unit, "horizon": horizon, "discount_rate": discount_rate,
                                "purchase_model": purchase_model},
                           **_run_options(as_of, dedupe_on, max_reject_share, pseudonymize_ids, overwrite,
                                          memory_limit, buckets, executor, work_dir, ray_address, storage_option,
                                          resume))
        result = compute_clv(inputs, out, cfg, _render.make_progress(json_logs))
        p, manifest = result.clv, result.manifest
        purchases = (f"BG/NBD r={p.r:.4g} alpha={p.alpha:.4g} a={p.a:.4g} b={p.b:.4g}" if p.purchase_model == "bgnbd"
                     else f"NBD r={p.r:.4g} alpha={p.alpha:.4g} ({p.note})")
        _done(manifest, out, json_logs,
              f"{purchases} (LL {p.log_likelihood:.2f}, n={p.n:,}); Gamma-Gamma p={p.p:.4g} q={p.q:.4g} "
              f"v={p.v:.4g} (n={p.n_gg:,}); written to {out}")


@app.command()
@column_options
def cohorts(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None, dedupe_on: DedupeOn = None, max_reject_share: MaxRejectShare = None,
    pseudonymize_ids: Pseudonymize = None, overwrite: Overwrite = None, memory_limit: MemoryLimit = None,
    buckets: Buckets = None, executor: Executor = None, ray_address: RayAddress = None, work_dir: WorkDir = None,
    resume: Resume = None,
    storage_option: StorageOption = None, json_logs: Json = False, threads: Threads = None,
) -> None:
    """Acquisition-month cohorts x months since first purchase: retention and revenue.

    Example: `segmint cohorts data/transactions --out cohorts`

    Writes OUT/cohorts.parquet (long: cohort, months_since_first, cohort_size,
    active_customers, retention, revenue, revenue_per_customer, revenue_per_active,
    complete_month), OUT/retention_pivot.parquet (cohorts x m0, m1, ...), rejects/, run.json,
    _manifest.json and _SUCCESS.
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import compute_cohorts

        cfg = build_config(config, columns=columns,
                           **_run_options(as_of, dedupe_on, max_reject_share, pseudonymize_ids, overwrite,
                                          memory_limit, buckets, executor, work_dir, ray_address, storage_option,
                                          resume))
        result = compute_cohorts(inputs, out, cfg, _render.make_progress(json_logs))
        table, manifest = result.cohorts, result.manifest
        _done(manifest, out, json_logs, f"{table['cohort'].n_unique()} cohorts, {table.height} cohort-months "
                                        f"written to {out}")


@app.command()
@column_options
def validate(
    inputs: Inputs,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None, dedupe_on: DedupeOn = None, max_reject_share: MaxRejectShare = None,
    pseudonymize_ids: Pseudonymize = None, memory_limit: MemoryLimit = None, buckets: Buckets = None,
    executor: Executor = None, ray_address: RayAddress = None, work_dir: WorkDir = None,
    storage_option: StorageOption = None, json_logs: Json = False, threads: Threads = None,
) -> None:
    """Check the data contract and report data-quality counts; writes nothing.

    Example: `segmint validate data/transactions`

    Exit code 0 when the input is usable, 2 when a setting does not fit it (a time format segmint will not guess,
    one column in two roles), 3 when the contract is violated or more than --max-reject-share of the rows
    would be rejected (the counts are in the error).
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import validate as run_validate

        cfg = build_config(config, columns=columns,
                           **_run_options(as_of, dedupe_on, max_reject_share, pseudonymize_ids, None, memory_limit,
                                          buckets, executor, work_dir, ray_address, storage_option))
        rep = run_validate(inputs, cfg, _render.make_progress(json_logs))
        if json_logs:
            _render.emit_json({"event": "validation", **rep.__dict__})
            _render.emit_json({"event": "done", "status": "succeeded", "seconds": _elapsed()})
            return
        lines = [f"rows in        {rep.rows_in:,}", f"rows usable    {rep.rows_used:,}",
                 *[f"  rejected {reason:<22} {n:>12,}   amount {_amount(rep.rejected_amount[reason])}"
                   for reason, n in rep.rejected.items() if n],
                 f"repeats        {rep.repeats_on_mapped_columns:,} rows identical to an earlier row on every "
                 + ("mapped column (rejected as duplicate: --dedupe-on)" if cfg.dedupe_on else
                    "mapped column (kept: unmapped columns may tell them apart; --dedupe-on rejects them)"),
                 f"customers      {rep.customers:,}",
                 f"time range     {rep.first_ts} .. {rep.last_ts}", f"as of          {rep.as_of}"]
        times = {"command": "validate", "as_of": rep.as_of.isoformat(), "config": {"as_of": cfg.as_of},
                 "time_range": [t.isoformat() if t else None for t in (rep.first_ts, rep.last_ts)]}
        _render.print_lines([*lines, *filter(None, [_as_of_warning(times)])])


@app.command()
def compare(
    old_run: Annotated[str, typer.Argument(help="The earlier run directory.", metavar="OLD_RUN")],
    new_run: Annotated[str, typer.Argument(help="The later run directory.", metavar="NEW_RUN")],
    out: Out,
    overwrite: Overwrite = None, memory_limit: MemoryLimit = None, storage_option: StorageOption = None,
    json_logs: Json = False, threads: Threads = None,
) -> None:
    """What changed between two runs: segment migration, KPI changes per segment, feature drift (PSI).

    Example: `segmint compare runs/2026-06 runs/2026-07 --out changes`

    Writes OUT/migration.parquet, segments.parquet, drift.parquet, compare.json and run.json.
    """
    with _errors(json_logs):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline.compare import compare_runs

        cfg = build_config(None, overwrite=overwrite, memory_limit=memory_limit, storage_options=storage_option)
        doc = compare_runs(old_run, new_run, out, cfg, _render.make_progress(json_logs))
        if json_logs:   # the event every command's --json ends with
            _emit_done("succeeded", doc["run_id"], out)
            return
        moved = sum(r["customers"] for r in doc["migration"]
                    if r["old_segment"] is not None and r["new_segment"] is not None
                    and r["old_segment"] != r["new_segment"])
        shifted = [d["feature"] for d in doc["drift"] if d["band"] != "stable"]
        ids = doc["ids"]
        kept = (f"{ids['kept_id']:,} of the {ids['customers_in_both']:,} customers in both runs kept their segment "
                f"id ({ids['kept_share']:.1%}; an optimal relabelling of the segments would keep "
                f"{ids['optimal_share']:.1%})" if ids["customers_in_both"] else "no customer is in both runs")
        differ = [f"the runs' settings differ, so part of these changes is theirs, not the customers' ({d})"
                  for d in doc.get("settings_differ", [])]
        _render.print_lines([kept, f"{moved:,} customers changed segment; features drifting (PSI >= 0.1): "
                                   f"{', '.join(shifted) or 'none'}; written to {out}", *differ])


@app.command()
def report(
    # Text, not Path: Path("s3://b/x") is the local "s3:/b/x", where the page was written with exit 0.
    run_dir: Annotated[str, typer.Argument(help="A run directory (the --out of segmint run or assign).",
                                           metavar="RUN_DIR")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output HTML file (local).", metavar="FILE")],
    cohorts: Annotated[str | None, typer.Option("--cohorts", help="cohorts.parquet written by segmint cohorts "
                                                 "(or its --out folder): adds the retention heatmap.",
                                                 metavar="FILE")] = None,
    compare: Annotated[str | None, typer.Option("--compare", help="An earlier run: adds the migration from its "
                                                 "segments to this run's.", metavar="PREV_RUN")] = None,
    overwrite: Annotated[bool, flag("--overwrite", help="Replace an existing output.")] = False,
    threads: Threads = None,
) -> None:
    """Write one self-contained HTML report of a run: sizes and value, traits, RFM, lifecycle, funnel, CLV,
    cohorts and data quality.

    Example: `segmint report runs/2026-07 --compare runs/2026-06 --cohorts cohorts/cohorts.parquet --out report.html`

    The file opens offline (inline SVG charts, no scripts, nothing fetched); the same run gives the same bytes.
    """
    with _errors(False):
        _threads(threads, "segmint.engine.pipeline", "segmint.engine.report")
        from segmint.engine.io.sink import check_not_inside
        from segmint.engine.pipeline.compare import migration
        from segmint.engine.report import read_cohorts, write_report

        check_not_inside(out, {"--compare": [str(compare)] if compare else [],
                               "--cohorts": [str(cohorts)] if cohorts else []})
        table = read_cohorts(cohorts) if cohorts is not None else None
        moves, differ = migration(compare, run_dir) if compare is not None else (None, [])
        path = write_report(run_dir, out, cohorts=table, migration=moves, settings_differ=differ, overwrite=overwrite)
        _render.print_lines([f"report written to {path} ({path.stat().st_size / 1024:,.0f} KiB)"])


@abtest_app.command("split")
def abtest_split(
    run_dir: Annotated[str, typer.Argument(help="A run directory (its assignments are split), local or a URI.",
                                           metavar="RUN_DIR")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output Parquet file (local).", metavar="FILE")],
    ratio: Annotated[float, typer.Option(help="Share of each segment held out.", metavar="SHARE")] = 0.1,
    salt: Annotated[str, typer.Option(help="Campaign salt; same salt, same groups.", metavar="TEXT")] = "segmint",
    overwrite: Annotated[bool, flag("--overwrite", help="Replace an existing output.")] = False,
    storage_option: StorageOption = None, threads: Threads = None,
) -> None:
    """Deterministic holdout per customer, independent of the segment.

    Example: `segmint abtest split runs/2026-06 --ratio 0.1 --salt spring-promo --out groups.parquet`
    """
    with _errors(False):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import abtest_split as split

        groups = split(run_dir, out, ratio=ratio, salt=salt, overwrite=overwrite,
                       options=parse_storage_options(storage_option or []))
        held = int((groups["group"] == "holdout").sum())
        _render.print_lines([f"{held:,} of {groups.height:,} customers held out ({held / groups.height:.1%}); "
                             f"groups written to {out}"])


@abtest_app.command("evaluate")
def abtest_evaluate(
    assignments: Annotated[str, typer.Option("--assignments", help="The file written by abtest split.",
                                             metavar="FILE")],
    outcomes: Annotated[str, typer.Option("--outcomes", help="Parquet/CSV: customer_id, converted and, optionally, revenue (without it ROI is n/a).",
                                          metavar="FILE")],
    cost_per_contact: Annotated[float, typer.Option("--cost-per-contact", help="Cost of contacting one "
                                                    "treated customer.", metavar="AMOUNT")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (local).", metavar="DIR")],
    overwrite: Annotated[bool, flag("--overwrite", help="Replace an existing output.")] = False,
    pseudonymize_ids: Annotated[bool, flag("--pseudonymize-ids", help="The outcomes hold raw ids and the split "
                                           "pseudonyms (a run with --pseudonymize-ids): replace the outcomes' ids "
                                           "by their pseudonyms under SEGMINT_ID_KEY.")] = False,
    threads: Threads = None,
) -> None:
    """Lift, 95% CI, p-value, incremental revenue and ROI per segment and overall.

    Example: `segmint abtest evaluate --assignments groups.parquet --outcomes outcomes.csv --cost-per-contact 0.5 --out ab`
    """
    with _errors(False):
        _threads(threads, "segmint.engine.pipeline")
        from segmint.engine.pipeline import abtest_evaluate as run_evaluate

        result = run_evaluate(assignments, outcomes, out, cost_per_contact=cost_per_contact, overwrite=overwrite,
                              pseudonymize_ids=pseudonymize_ids)
        lines = ["segment  treated  holdout  conv_t  conv_h  abs lift  p-value   ROI %"]
        for r in result.iter_rows(named=True):
            seg = "all" if r["segment"] is None else str(r["segment"])
            lines.append(f"{seg:>7}  {r['n_t']:>7,}  {r['n_h']:>7,}  {_pct(r['conv_t'])}  {_pct(r['conv_h'])}  "
                         f"{_pct(r['abs_lift']):>8}  {_num(r['p_value'], '.4f'):>7}  {_num(r['roi_pct'], '.1f'):>6}")
        lines.append(f"written to {out}")
        _render.print_lines(lines)


def _amount(v: float | None) -> str:
    return "n/a (beyond the float range, or not a number)" if v is None else f"{v:,.2f}"


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.1%}"


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


@app.command()
def bench(
    scenario: Annotated[str, typer.Option(help="S (1M lines), M (20M), L (200M lines, 10M customers), GPU "
                                          "(k-means 10M x 16, k=256, and 100M assignments on the card), or "
                                          "PREDICT (Model.predict latency and throughput).",
                                          metavar="NAME")] = "S",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write every figure to this JSON file.",
                                             metavar="FILE")] = None,
    seed: Annotated[int, typer.Option(help="Data and clustering seed.", metavar="N")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Cache folder for generated data "
                                                  "[default: SEGMINT_BENCH_DIR or ~/.cache/segmint/bench].",
                                                  metavar="DIR")] = None,
    executor: Annotated[str, typer.Option(help="local, or ray: time the run through Ray against the local "
                                          "executor (overhead, and a scaling model from 1 and 2 workers).",
                                          metavar="NAME")] = "local",
    threads: Threads = None,
) -> None:
    """Time every stage against DuckDB, scikit-learn and Faiss on the same data; print the ratios.

    Example: `segmint bench --scenario S --out bench-S.json`

    Needs the bench extra: pip install -e '.[bench]'.
    """
    import segmint
    from segmint.bench.layout import check_installed_layout
    from segmint.engine.errors import ConfigError

    with _errors(False):
        check_installed_layout(segmint)
        _threads(threads)
        if scenario == "GPU":
            return _bench_gpu(seed, out)
        if scenario == "PREDICT":
            from segmint.bench.predict import run_predict_benchmark

            return _bench_report(run_predict_benchmark(seed=seed, data_root=data_dir,
                                                       progress=_render.print_progress), out)
        try:
            import duckdb, sklearn  # noqa: E401, F401 - peers must be installed
        except ImportError as exc:
            msg = f"segmint bench needs the peers installed: pip install -e '.[bench]' ({exc.name} is missing)"
            raise ConfigError(msg) from None
        from segmint.bench.run import run_benchmark
        from segmint.bench.scenarios import SCENARIOS

        if scenario not in SCENARIOS:
            msg = f"--scenario must be one of {', '.join(SCENARIOS)}, GPU or PREDICT, got {scenario!r}"
            raise ConfigError(msg)
        if executor == "ray":
            from segmint.bench.ray_scaling import run_ray_benchmark

            return _bench_report(run_ray_benchmark(scenario, seed=seed, data_root=data_dir,
                                                   progress=_render.print_progress), out)
        if executor != "local":
            msg = f"--executor must be local or ray, got {executor!r}"
            raise ConfigError(msg)
        res = run_benchmark(scenario, seed=seed, data_root=data_dir,
                            progress=lambda line: _render.print_progress(line))
        _bench_report(res, out)


def _bench_gpu(seed: int, out: Path | None) -> None:
    from segmint.bench.gpu import GPU_SCENARIO, run_gpu_benchmark
    from segmint.engine.cluster.backend import CudaBackend, gpu_missing
    from segmint.engine.errors import ConfigError

    missing = gpu_missing()
    if missing:
        msg = f"--scenario GPU needs a usable GPU: {missing}"
        raise ConfigError(msg)
    _bench_report(run_gpu_benchmark(GPU_SCENARIO, CudaBackend(), seed=seed, progress=_render.print_progress), out)


def _bench_report(res: dict, out: Path | None) -> None:
    from segmint.bench.run import ratio_table

    if out is not None:
        out.write_text(json.dumps(res, indent=1, allow_nan=False))
    _render.print_lines([ratio_table(res)] + ([f"figures written to {out}"] if out else []))


@app.command()
def warmup(threads: Threads = None) -> None:
    """Compile every Numba kernel into the cache ahead of a batch job.

    Example: `segmint warmup` (set NUMBA_CACHE_DIR to choose the cache folder)

    Run it on the machine model that runs the job: the cache is keyed to the CPU.
    """
    with _errors(False):
        _threads(threads, "segmint.engine.warmup")
        from segmint.engine.runtime import numba_cache_dir
        from segmint.engine.warmup import warmup as run_warmup

        seconds = run_warmup()
        _render.print_lines([f"{name:<28} {sec:6.2f} s" for name, sec in seconds.items()]
                            + [f"{len(seconds)} kernels ready; cache in {numba_cache_dir()}"])


def main() -> None:
    _state["own_process"] = True
    try:
        app()
    finally:
        # Python's exit walks every object the imports made (Numba's, SciPy's, Polars') for cycles: 0.22-0.27 s
        # after each command on bench scenario M. The outputs are committed by then; nothing left in a cycle
        # has anything to flush (std streams and atexit hooks are handled apart from the collector).
        gc.freeze()


def _run_options(as_of: str | None, dedupe_on: str | None, max_reject_share: float | None,
                 pseudonymize_ids: bool | None, overwrite: bool | None, memory_limit: str | None,
                 buckets: int | None, executor: str | None, work_dir: str | None, ray_address: str | None = None,
                 storage_option: list[str] | None = None, resume: bool | None = None) -> dict[str, Any]:
    return {"as_of": as_of, "dedupe_on": dedupe_on, "max_reject_share": max_reject_share,
            "pseudonymize_ids": pseudonymize_ids, "overwrite": overwrite, "memory_limit": memory_limit,
            "buckets": buckets, "executor": executor, "work_dir": work_dir, "ray_address": ray_address,
            "storage_options": storage_option, "resume": resume}


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def _threads(threads: int | None, *modules: str) -> None:
    """Apply the thread budget before Polars, Numba or Faiss start, then import the command's engine ``modules``
    (``_load``)."""
    from segmint.engine.runtime import configure

    if threads is not None or "_threads_applied" not in _state:
        _state["_threads_applied"] = True
        _, late = configure(threads)
        if threads is not None:
            for problem in late:
                _render.print_error(f"--threads not fully applied: {problem}")
    if modules:
        _load(modules)


def _load(modules: tuple[str, ...]) -> None:
    """Import ``modules``. In segmint's own process the cyclic collector pauses meanwhile, then every object the
    process holds (nearly all the imports': modules, Numba's, SciPy's and Polars' registries, which live as long as
    the process) is frozen out of its view: its passes over them took 0.17 s of a run on bench M, 0.05 s with them
    frozen. Not where a caller's process runs the command (typer's CliRunner): its objects are not ours to freeze."""
    paused = _state.get("own_process", False) and gc.isenabled()
    if paused:
        gc.disable()
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def _elapsed() -> float:
    return round(time.perf_counter() - _state["started"], 3)


def _finish(result, json_logs: bool) -> None:
    from segmint.engine.io.sink import mark_committed

    try:
        _summarise(result, json_logs)
    except BaseException as exc:   # a signal while the summary prints: it said "no output was changed"
        mark_committed(exc)
        raise


def _summarise(result, json_logs: bool) -> None:
    m = result.manifest
    if json_logs:
        _emit_done(m["status"], m["run_id"], result.out, customers=m["customers"], k=m["k"], rows=m["rows"])
        return
    _render.print_summary(result.summary, f"{m['customers']:,} customers in {m['k']} segments")
    rows = m["rows"]
    lines = [f"rows: {rows['in']:,} in, {rows['used']:,} used, {rows['rejected']:,} rejected"
             + (" (" + ", ".join(f"{r}: {n:,}" for r, n in rows["rejected_by_reason"].items() if n) + ")"
                if rows["rejected"] else "")
             + f"; {rows['repeats_on_mapped_columns']:,} rows repeat an earlier one on every mapped column "
             + ("(rejected as duplicate: --dedupe-on)" if (m.get("config") or {}).get("dedupe_on") else "(kept)"),
             *filter(None, [_repeats_warning(m), _as_of_warning(m)])]
    outside = rows.get("channels_without_a_share")
    if outside:
        named = ", ".join(f"{ch} ({n:,} lines)" for ch, n in list(outside.items())[:5])
        named += ", ..." if len(outside) > 5 else ""
        why = ("the model was trained without them" if m["command"] == "assign"
               else "beyond the features.max_channels most common")
        lines.append(f"channels without a share column: {named}; {why}, so no channel share counts them")
    note = m["clustering"].get("note", "every customer assigned to the model's nearest centroid")
    lines.append(f"clustering ({m['clustering']['device']}): {note}")
    trained = (m.get("model_provenance") or {}).get("as_of")
    if trained is not None and trained != m["as_of"]:
        # assign measures recency, status and CLV at its own as-of; a small batch's latest purchase read as
        # "New" customers the model's run had called lapsed
        given = bool((m.get("config") or {}).get("as_of"))
        lines.append(f"as-of {m['as_of']} ({'given' if given else 'the latest valid time in the batch'}); the model "
                     f"was trained as of {trained}: recency, status and CLV are measured at {m['as_of'][:10]}"
                     + ("" if given else "; pass --as-of to score at another date"))
    if m["clustering"].get("k_auto"):
        lines.append(f"--k auto: {m['clustering']['k_auto']}")
    clv = m.get("clv") or {}
    if "r" in clv:
        model = "BG/NBD" if clv["purchase_model"] == "bgnbd" else "NBD"
        lines.append(f"CLV: {model} + Gamma-Gamma fitted on {clv['fitted_on']:,} customers; expected value over the "
                     f"horizon {result.summary['clv_total'].sum():,.0f} in total"
                     + (f"; {clv['note']}" if clv.get("note") else ""))
    elif "skipped" in clv:
        lines.append(f"CLV skipped: {clv['skipped']}")
    if "events" in m:
        lines.append("funnel: " + ", ".join(f"{stage} {n:,}" for stage, n in m["events"]["funnel"].items()))
        if m["events"]["rows"]["used"] and not m["events"].get("customers_with_events", 1):
            # Another system's ids: its visitors counted as non-buyers, every buyer's event features 0, no word.
            lines.append("warning: none of the customers has an event: the events' customer ids match none of the "
                         "transactions' (their form, --event-customer-col?); every customer's sessions, page views "
                         "and conversions are 0")
    if "micro" in m:
        made = sum(seg["k"] - seg["merged"] for seg in m["micro"]["segments"])
        lines.append(f"micro-segments: {made:,} in all; {m['micro']['merged']:,} dissolved into the nearest remaining "
                     f"siblings for being smaller than the minimum share or size")
    matching = m["clustering"].get("matching")
    if matching:
        shared = matching.get("shared_customers") or {}
        # Counted on the profile sample (every customer up to sampling.profile_customers): compare counts all.
        how = (f" (of the {shared['customers']:,} customers of this run's profile sample both runs share, "
               f"{shared['kept_share']:.1%} kept their id; an optimal relabelling: {shared['optimal_share']:.1%})"
               if shared.get("customers")
               else f" ({matching['note']})" if matching.get("note") else "")
        lines.append(f"ids kept from {matching['previous_run']}{how}: new segments {matching['new_ids'] or 'none'}, "
                     f"vanished {matching['vanished_ids'] or 'none'}")
    lines.append(f"outputs in {result.out}")
    _render.print_lines(lines)


def _emit_done(status: str, run_id: str, out: str | Path, **more: Any) -> None:
    """The ``done`` event a command's --json ends with: its output, run.json and run id, and ``more``."""
    _render.emit_json({"event": "done", "status": status, "seconds": _elapsed(), "out": str(out),
                       "run_json": _join(_root(out, run_id), "run.json"), "run_id": run_id, **more})


def _done(manifest: dict, out: str, json_logs: bool, text: str) -> None:
    if json_logs:
        _emit_done(manifest["status"], manifest["run_id"], out, message=text)
    else:
        _render.print_lines([text, *filter(None, [_repeats_warning(manifest), _as_of_warning(manifest)])])


def _as_of_warning(manifest: dict) -> str | None:
    """A line where the derived as-of is later than the last row kept: the latest rows were of customers set aside
    (returns only), and every customer's recency and tenure were measured from a time no kept row reaches, without
    a word (a stray refund in next month's export moved them by 15 days). Said in the text summary of each command
    that measures at the as-of (with --json, run.json's as_of and time_range say it): run, assign and features
    (recency, tenure, status), clv (each customer's age, and so the CLV) and cohorts, whose table runs to the
    as-of's month: months after the last row kept, with no activity, counted as complete (a retention cliff no
    data shows; said where the as-of's month is later, the one case that changes the table); and validate, which
    measures nothing but is where a user checks the data before a run (its JSON event has as_of and last_ts)."""
    last = (manifest.get("time_range") or [None, None])[1]
    as_of = manifest["as_of"]
    if last is None or (manifest.get("config") or {}).get("as_of") or as_of <= last:
        return None
    said = (f"warning: the as-of {as_of} (the latest valid row) is later than the last row kept ({last}): the latest "
            f"rows were set aside (customers with returns only, or --dedupe-on duplicates); ")
    if manifest.get("command") == "cohorts":
        if as_of[:7] <= last[:7]:   # ISO text: year and month
            return None
        return (said + f"the table runs to {as_of[:7]}, its months after {last[:7]} with no activity and counted as "
                       f"complete; pass --as-of with the date the data runs to")
    measured = {"clv": "each customer's age, and so the CLV, is", "validate": "a run's recency, tenure and status "
                "would be"}.get(manifest.get("command"), "recency, tenure and status are")
    return said + f"{measured} measured at the as-of; pass --as-of {last} to measure at the last row kept"


def _repeats_warning(manifest: dict) -> str | None:
    """A line where a fifth or more of the rows repeat an earlier one on every mapped column and are kept: two
    copies of one export in an input folder doubled every customer's spend and CLV, and no command said so."""
    rows = manifest.get("rows") or {}
    # Repeats count rejected rows too (3,000 empty rows repeat each other): at least this many were used.
    used, kept = rows.get("used", 0), rows.get("repeats_on_mapped_columns", 0) - rows.get("rejected", 0)
    if not used or 5 * kept < used or (manifest.get("config") or {}).get("dedupe_on"):
        return None
    return (f"warning: at least {kept:,} of the {used:,} rows used ({kept / used:.0%}) repeat an earlier row on "
            f"every mapped column and were kept as purchases: two copies of one export? --dedupe-on with the "
            f"mapped columns drops them")


def _join(base: str | Path, name: str) -> str:
    from segmint.engine.io.store import join

    return join(str(base), name)


def _root(out: str | Path, run_id: str) -> str:
    """Where a committed run's files are: its version folder on an object store (OUT/run-<id>/, which
    OUT/_SUCCESS names), the output folder itself locally."""
    from segmint.engine.io.sink import version_root
    from segmint.engine.io.store import is_remote

    return version_root(out, run_id) if is_remote(str(out)) else str(out)


def _install_handlers() -> None:
    """The command's SIGTERM and SIGINT handlers, which note the signal they raise as an exception (a library that
    catches it and goes on commits nothing: runtime.stop_if_signalled); put back when the command ends
    (``_errors``), so that a caller of the CLI in its own process keeps its own. An ignored signal stays ignored
    (a script's `segmint ... &` ignores SIGINT)."""
    from segmint.engine.runtime import note_signal

    note_signal(None)
    with contextlib.suppress(ValueError):  # only the main thread may install handlers
        for sig, handler in ((signal.SIGTERM, _on_sigterm), (signal.SIGINT, _on_sigint)):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                _state.setdefault("handlers", {}).setdefault(sig, signal.signal(sig, handler))


def _on_sigterm(signum: int, frame: object) -> None:
    from segmint.engine.runtime import note_signal

    note_signal(signum)   # noted: a library that catches the exception and goes on commits nothing
    raise Terminated


def _on_sigint(signum: int, frame: object) -> None:
    from segmint.engine.runtime import note_signal

    note_signal(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _errors(json_logs: bool, handlers: bool = True) -> Iterator[None]:
    """Domain errors -> one line and their exit code; anything else -> exit 1. --debug prints the traceback
    first, and the exit code stays the same (a script's handling of a refusal does not change under it).
    Under --json the line is an ``error`` event. A command's signal handlers (``handlers``) are set here, once its
    arguments are parsed, and put back with the signals they noted forgotten when it ends (set by the group's
    callback, a usage error or --help left them in the caller's process)."""
    from segmint.engine.runtime import note_signal

    if handlers:
        _install_handlers()
    try:
        yield
    except SegmintError as exc:
        if _state["debug"]:
            traceback.print_exc()
        _fail(str(exc), exc.exit_code, json_logs, getattr(exc, "__notes__", None))
    except KeyboardInterrupt as exc:
        _fail(_stopped("interrupted", exc), 130, json_logs, getattr(exc, "__notes__", None))
    except Terminated as exc:
        _fail(_stopped("terminated", exc), 143, json_logs, getattr(exc, "__notes__", None))
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: never a bare traceback
        if _state["debug"]:
            traceback.print_exc()
        # A signal raised inside a library's call (a Numba kernel) comes out as its SystemError: exit 1 it read.
        signalled = next((e for e in _chain(exc) if isinstance(e, (KeyboardInterrupt, Terminated))), None)
        if signalled is not None:
            how, code = ("interrupted", 130) if isinstance(signalled, KeyboardInterrupt) else ("terminated", 143)
            _fail(_stopped(how, exc), code, json_logs, getattr(exc, "__notes__", None))
        if _disk_full(exc):
            _fail(_DISK_FULL, 2, json_logs, getattr(exc, "__notes__", None))
        hint = "" if _state["debug"] else " (rerun with --debug for the traceback)"
        _fail(f"unexpected {type(exc).__name__}: {exc}{hint}", 1, json_logs, getattr(exc, "__notes__", None))
    finally:
        note_signal(None)
        with contextlib.suppress(ValueError):
            for sig, handler in _state.pop("handlers", {}).items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _stopped(how: str, exc: BaseException) -> str:
    """What a signal left: the output as it was, or (one at the commit) the new output in place."""
    if getattr(exc, "output_committed", False):   # engine.io.sink: the commit had taken place
        return f"{how} after the output was committed: it is complete; the next run on it removes what is left over"
    return f"{how}; no output was changed"


# Before a partition the run checks the scratch's free space (engine.pipeline.partition); the feature tables
# between stages and the outputs can still fill a disk, and each library says so in its own words.
_DISK_FULL = ("a disk the command writes to is full (no space left on device): free some space, or write --out to "
              "a disk with room (a run's scratch goes beside --out, or to the temp folder without one, unless "
              "--work-dir names another disk; compress_scratch = true in [run] about halves it)")
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "(os error 28)", "(os error 122)")


def _disk_full(exc: BaseException | None) -> bool:
    """A full disk or quota, as an OSError (Python, Arrow) or in the text of Polars' and Ray's errors, here or
    in what the error was raised from."""
    import errno

    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
               or any(text in str(e).lower() for text in _DISK_FULL_TEXT) for e in _chain(exc))


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or during, in turn."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _fail(message: str, code: int, json_logs: bool, notes: list[str] | None = None) -> None:
    message = "; ".join([message, *(notes or [])])
    _render.stop_progress()
    if json_logs:
        _render.emit_json({"event": "error", "status": "failed", "exit_code": code, "message": message,
                           "seconds": _elapsed()})
    else:
        _render.print_error(message)
    raise typer.Exit(code) from None


if __name__ == "__main__":
    sys.exit(main())
