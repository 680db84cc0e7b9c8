"""The ``segmint`` command line. Parses, calls the engine, renders; no business logic here."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from segmint.cli import _render
from segmint.cli._options import (AsOf, Buckets, ConfigFile, DedupeOn, Device, Inputs, Json, K, MemoryLimit, Out,
                                  Overwrite, Pseudonymize, Seed, build_config, column_options, side_table_options)
from segmint.engine.errors import SegmintError

__all__ = ["app", "main"]

app = typer.Typer(
    name="segmint",
    help="Segment very large customer bases: Parquet transactions in, actionable segments out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
abtest_app = typer.Typer(help="Holdout groups per segment, and campaign evaluation.", no_args_is_help=True)
app.add_typer(abtest_app, name="abtest")
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    threads: Annotated[int | None, typer.Option(
        "--threads", envvar="SEGMINT_THREADS", show_default=False,
        help="Threads for Polars, Numba and Faiss [default: the CPUs this process may use, cgroup-aware].")] = None,
) -> None:
    from segmint.engine.runtime import configure

    _state["debug"] = debug or bool(os.environ.get("SEGMINT_DEBUG"))
    with _errors():
        _, late = configure(threads)
        for problem in late:
            _render.print_error(f"--threads not fully applied: {problem}")


@app.command()
def demo(
    out: Out = Path("segmint-demo"),
    customers: Annotated[int, typer.Option(help="Customers to generate.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Seed for data and clustering.")] = 0,
    k: K = None,
    overwrite: Overwrite = None,
    json_logs: Json = False,
) -> None:
    """Generate a sample, segment it, print the summary and write the outputs.

    Example: `segmint demo --out segmint-demo`

    Writes OUT/data (transactions + planted personas) and OUT/run (segments,
    profiles, model, report files). A previous demo at OUT is replaced.
    """
    from segmint.engine.demo import run_demo

    with _errors():
        cfg = build_config(None, cluster={"k": k, "seed": seed}, overwrite=overwrite)
        result = run_demo(out, cfg, customers=customers, seed=seed, progress=_render.make_progress(json_logs))
        _finish(result, json_logs)


@app.command()
def generate(
    out: Out,
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    events: Annotated[bool, typer.Option("--events/--no-events", help="Also write web/app events.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Write a synthetic transaction dataset with planted personas.

    Example: `segmint generate --out data --customers 100000 --seed 7`

    Layout: OUT/transactions/part-*.parquet (customer_id, ts, amount,
    order_id, channel, category), OUT/personas.parquet (customer_id, persona),
    OUT/events/part-*.parquet and OUT/customers.parquet.
    """
    from segmint.engine.synth import generate as gen

    with _errors():
        r = gen(out, customers=customers, seed=seed, events=events, overwrite=overwrite)
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
    dedupe_on: DedupeOn = None, pseudonymize_ids: Pseudonymize = None, overwrite: Overwrite = None,
    memory_limit: MemoryLimit = None, buckets: Buckets = None,
    json_logs: Json = False,
) -> None:
    """Segment customers: scan, clean, features, cluster, assign, profile, write.

    Example: `segmint run data/transactions --out runs/2026-06 --k auto`

    Writes OUT/assignments/segment=N/, profiles.parquet/.json, model/,
    rejects/, run.json and _SUCCESS, atomically.
    """
    from segmint.engine.config import parse_size
    from segmint.engine.pipeline import run as run_pipeline

    with _errors():
        cfg = build_config(config, columns=columns, cluster={"k": k, "seed": seed, "device": device},
                           side=side, as_of=as_of, dedupe_on=dedupe_on, pseudonymize_ids=pseudonymize_ids,
                           overwrite=overwrite, buckets=buckets,
                           memory_limit=parse_size(memory_limit) if memory_limit else None)
        result = run_pipeline(inputs, out, cfg, _render.make_progress(json_logs))
        _finish(result, json_logs)


@app.command()
@column_options
def features(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None, dedupe_on: DedupeOn = None, pseudonymize_ids: Pseudonymize = None,
    overwrite: Overwrite = None, json_logs: Json = False,
) -> None:
    """Write only the per-customer feature table to one Parquet file.

    Example: `segmint features data/transactions --out features.parquet`
    """
    from segmint.engine.pipeline import compute_feature_table

    with _errors():
        cfg = build_config(config, columns=columns, as_of=as_of, dedupe_on=dedupe_on,
                           pseudonymize_ids=pseudonymize_ids, overwrite=overwrite)
        table = compute_feature_table(inputs, out, cfg, _render.make_progress(json_logs))
        _done_line(f"wrote features of {table.height:,} customers ({table.width - 1} columns) to {out}", json_logs)


@app.command()
def assign(
    model: Annotated[Path, typer.Argument(help="A run directory (or its model/ folder).")],
    inputs: Inputs,
    out: Out,
    as_of: AsOf = None, device: Device = None, dedupe_on: DedupeOn = None, pseudonymize_ids: Pseudonymize = None,
    overwrite: Overwrite = None, memory_limit: MemoryLimit = None, buckets: Buckets = None, json_logs: Json = False,
) -> None:
    """Score new customers with a saved model (same features, scaler, cut points, centroids).

    Example: `segmint assign runs/2026-06 new/transactions --out runs/2026-07-scored`

    The model fixes the column mapping; output has the same layout as `run`.
    """
    from segmint.engine.config import parse_size
    from segmint.engine.pipeline import assign_customers

    with _errors():
        cfg = build_config(None, cluster={"device": device}, as_of=as_of, dedupe_on=dedupe_on,
                           pseudonymize_ids=pseudonymize_ids, overwrite=overwrite, buckets=buckets,
                           memory_limit=parse_size(memory_limit) if memory_limit else None)
        result = assign_customers(model, inputs, out, cfg, _render.make_progress(json_logs))
        _finish(result, json_logs)


@app.command()
@column_options
def clv(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None,
    time_unit: Annotated[str | None, typer.Option("--time-unit", help="day | week [default: week].",
                                                  show_default=False)] = None,
    horizon: Annotated[float | None, typer.Option("--horizon", help="Prediction horizon in time units "
                                                  "[default: 52].", show_default=False)] = None,
    discount_rate: Annotated[float | None, typer.Option("--discount-rate", help="Annual discount rate "
                                                        "[default: 0.10].", show_default=False)] = None,
    dedupe_on: DedupeOn = None, pseudonymize_ids: Pseudonymize = None, overwrite: Overwrite = None,
    json_logs: Json = False,
) -> None:
    """Fit BG/NBD + Gamma-Gamma by maximum likelihood and predict each customer's CLV.

    Example: `segmint clv data/transactions --as-of 2026-06-30 --time-unit week --horizon 52 --out clv`

    Writes OUT/clv_params.json (r, alpha, a, b, p, q, v, log-likelihoods, n) and
    OUT/clv.parquet (p_alive, expected_purchases, expected_avg_value, clv).
    """
    from segmint.engine.pipeline import compute_clv

    with _errors():
        cfg = build_config(config, columns=columns, as_of=as_of, dedupe_on=dedupe_on,
                           pseudonymize_ids=pseudonymize_ids, overwrite=overwrite,
                           clv={"time_unit": time_unit, "horizon": horizon, "discount_rate": discount_rate})
        p = compute_clv(inputs, out, cfg, _render.make_progress(json_logs))
        _done_line(f"BG/NBD r={p.r:.4g} alpha={p.alpha:.4g} a={p.a:.4g} b={p.b:.4g} (LL {p.log_likelihood:.2f}, "
                   f"n={p.n:,}); Gamma-Gamma p={p.p:.4g} q={p.q:.4g} v={p.v:.4g} (n={p.n_gg:,}); "
                   f"written to {out}", json_logs)


@app.command()
@column_options
def cohorts(
    inputs: Inputs,
    out: Out,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None, dedupe_on: DedupeOn = None, overwrite: Overwrite = None, json_logs: Json = False,
) -> None:
    """Acquisition-month cohorts x months since first purchase: retention and revenue.

    Example: `segmint cohorts data/transactions --out cohorts`

    Writes OUT/cohorts.parquet (long: cohort, months_since_first, cohort_size,
    active_customers, retention, revenue, revenue_per_customer,
    revenue_per_active) and OUT/retention_pivot.parquet (cohorts x m0, m1, ...).
    """
    from segmint.engine.pipeline import compute_cohorts

    with _errors():
        cfg = build_config(config, columns=columns, as_of=as_of, dedupe_on=dedupe_on, overwrite=overwrite)
        table = compute_cohorts(inputs, out, cfg, _render.make_progress(json_logs))
        _done_line(f"{table['cohort'].n_unique()} cohorts, {table.height} cohort-months written to {out}",
                   json_logs)


@app.command()
@column_options
def validate(
    inputs: Inputs,
    config: ConfigFile = None,
    columns: dict | None = None,
    as_of: AsOf = None, dedupe_on: DedupeOn = None, json_logs: Json = False,
) -> None:
    """Check the data contract and report data-quality counts; writes nothing.

    Example: `segmint validate data/transactions --time-col date --time-format %Y%m%d`

    Exit code 0 when the input is usable (rejected rows are counted, not
    fatal), 3 when the contract is violated.
    """
    from segmint.engine.pipeline import validate as run_validate

    with _errors():
        cfg = build_config(config, columns=columns, as_of=as_of, dedupe_on=dedupe_on)
        rep = run_validate(inputs, cfg, _render.make_progress(json_logs))
        if json_logs:
            _render.emit_json({"event": "validation", **rep.__dict__})
            return
        lines = [f"rows in        {rep.rows_in:,}", f"rows usable    {rep.rows_used:,}",
                 *[f"  rejected {reason:<22} {n:,}" for reason, n in rep.rejected.items()],
                 f"repeated lines {rep.repeated_lines:,} (kept; use --dedupe-on to reject)",
                 f"customers      {rep.customers:,}",
                 f"time range     {rep.first_ts} .. {rep.last_ts}", f"as of          {rep.as_of}"]
        _render.print_lines(lines)


@abtest_app.command("split")
def abtest_split(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (its assignments are split).")],
    out: Out,
    ratio: Annotated[float, typer.Option(help="Share of each segment held out.")] = 0.1,
    salt: Annotated[str, typer.Option(help="Campaign salt; same salt, same groups.")] = "segmint",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Deterministic holdout per customer, independent of the segment.

    Example: `segmint abtest split runs/2026-06 --ratio 0.1 --salt spring-promo --out groups.parquet`
    """
    from segmint.engine.pipeline import abtest_split as split

    with _errors():
        groups = split(run_dir, out, ratio=ratio, salt=salt, overwrite=overwrite)
        held = int((groups["group"] == "holdout").sum())
        _render.print_lines([f"{held:,} of {groups.height:,} customers held out ({held / groups.height:.1%}); "
                             f"groups written to {out}"])


@abtest_app.command("evaluate")
def abtest_evaluate(
    assignments: Annotated[Path, typer.Option("--assignments", help="The file written by abtest split.")],
    outcomes: Annotated[Path, typer.Option("--outcomes", help="Parquet/CSV: customer_id, converted, revenue.")],
    cost_per_contact: Annotated[float, typer.Option("--cost-per-contact", help="Cost of contacting one "
                                                    "treated customer.")],
    out: Out,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Lift, 95% CI, p-value, incremental revenue and ROI per segment and overall.

    Example: `segmint abtest evaluate --assignments groups.parquet --outcomes outcomes.csv --cost-per-contact 0.5 --out ab`
    """
    from segmint.engine.pipeline import abtest_evaluate as run_evaluate

    with _errors():
        result = run_evaluate(assignments, outcomes, out, cost_per_contact=cost_per_contact, overwrite=overwrite)
        lines = ["segment  treated  holdout  conv_t  conv_h  abs lift  p-value   ROI %"]
        for r in result.iter_rows(named=True):
            seg = "all" if r["segment"] is None else str(r["segment"])
            lines.append(f"{seg:>7}  {r['n_t']:>7,}  {r['n_h']:>7,}  {_pct(r['conv_t'])}  {_pct(r['conv_h'])}  "
                         f"{_pct(r['abs_lift']):>8}  {_num(r['p_value'], '.4f'):>7}  {_num(r['roi_pct'], '.1f'):>6}")
        lines.append(f"written to {out}")
        _render.print_lines(lines)


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.1%}"


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


@app.command()
def bench(
    scenario: Annotated[str, typer.Option(help="S (1M lines), M (20M), L (200M lines, 10M customers), or GPU "
                                          "(k-means 10M x 16, k=256, and 100M assignments on the card).")] = "S",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write every figure to this JSON file.")] = None,
    seed: Annotated[int, typer.Option(help="Data and clustering seed.")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Cache folder for generated data "
                                                  "[default: SEGMINT_BENCH_DIR or ~/.cache/segmint/bench].")] = None,
) -> None:
    """Time every stage against DuckDB, scikit-learn and Faiss on the same data; print the ratios.

    Example: `segmint bench --scenario S --out bench-S.json`

    Needs the bench extra: pip install 'segmint[bench]'.
    """
    from segmint.engine.errors import ConfigError

    with _errors():
        if scenario == "GPU":
            return _bench_gpu(seed, out)
        try:
            from segmint.bench.run import run_benchmark
            from segmint.bench.scenarios import SCENARIOS
            import duckdb, sklearn  # noqa: E401, F401 - peers must be installed
        except ImportError as exc:
            msg = f"segmint bench needs the peers installed: pip install 'segmint[bench]' ({exc.name} is missing)"
            raise ConfigError(msg) from None
        if scenario not in SCENARIOS:
            msg = f"--scenario must be one of {', '.join(SCENARIOS)} or GPU, got {scenario!r}"
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
        out.write_text(json.dumps(res, indent=1))
    _render.print_lines([ratio_table(res)] + ([f"figures written to {out}"] if out else []))


@app.command()
def warmup() -> None:
    """Compile every Numba kernel into the cache ahead of a batch job.

    Example: `segmint warmup` (set NUMBA_CACHE_DIR to choose the cache folder)

    Run it on the machine model that runs the job: the cache is keyed to the CPU.
    """
    from segmint.engine.runtime import numba_cache_dir
    from segmint.engine.warmup import warmup as run_warmup

    with _errors():
        seconds = run_warmup()
        _render.print_lines([f"{name:<28} {sec:6.2f} s" for name, sec in seconds.items()]
                            + [f"{len(seconds)} kernels ready; cache in {numba_cache_dir()}"])


def main() -> None:
    app()


def _finish(result, json_logs: bool) -> None:
    m = result.manifest
    if json_logs:
        _render.emit_json({"event": "done", "out": str(result.out), "customers": m["customers"],
                           "k": m["k"], "rows": m["rows"]})
        return
    _render.print_summary(result.summary, f"{m['customers']:,} customers in {m['k']} segments")
    rows = m["rows"]
    lines = [f"rows: {rows['in']:,} in, {rows['used']:,} used, {rows['rejected']:,} rejected"
             + (" (" + ", ".join(f"{r}: {n:,}" for r, n in rows["rejected_by_reason"].items() if n) + ")"
                if rows["rejected"] else "")
             + f"; {rows['repeated_lines']:,} repeated lines kept"]
    note = m["clustering"].get("note", "every customer assigned to the model's nearest centroid")
    lines.append(f"clustering ({m['clustering']['device']}): {note}")
    clv = m.get("clv") or {}
    if "r" in clv:
        lines.append(f"CLV: BG/NBD + Gamma-Gamma fitted on {clv['n']:,} customers; expected value over the "
                     f"horizon {result.summary['clv_total'].sum():,.0f} in total")
    elif "skipped" in clv:
        lines.append(f"CLV skipped: {clv['skipped']}")
    if "events" in m:
        lines.append("funnel: " + ", ".join(f"{stage} {n:,}" for stage, n in m["events"]["funnel"].items()))
    lines.append(f"outputs in {result.out}")
    _render.print_lines(lines)


def _done_line(text: str, json_logs: bool) -> None:
    if json_logs:
        _render.emit_json({"event": "done", "message": text})
    else:
        _render.print_lines([text])


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Domain errors -> one line and their exit code; anything else -> exit 1 (traceback with --debug)."""
    try:
        yield
    except SegmintError as exc:
        if _state["debug"]:
            raise
        _render.print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _render.print_error("interrupted; no output was changed")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: never a bare traceback
        if _state["debug"]:
            raise
        _render.print_error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        raise typer.Exit(1) from None


if __name__ == "__main__":
    sys.exit(main())
