"""``segmint demo``: generate a sample, segment it, write everything under one folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from segmint.engine.config import CustomerSource, EventSource, RunConfig
from segmint.engine.errors import OutputExistsError
from segmint.engine.pipeline import RunResult, compute_cohorts, run
from segmint.engine.report import write_report
from segmint.engine.progress import Progress, StageClock
from segmint.engine.synth import generate

__all__ = ["DEMO_CUSTOMERS", "run_demo"]

DEMO_CUSTOMERS = 200_000
_MARKER = "SEGMINT_DEMO"


def run_demo(out: str | Path, cfg: RunConfig, *, customers: int = DEMO_CUSTOMERS, seed: int = 0,
             progress: Progress | None = None) -> RunResult:
    """Write ``out/data`` (generated transactions, events, customers), ``out/run`` (the
    segmentation, with funnel stages and the segment mix by region and age band),
    ``out/cohorts`` and ``out/report.html``.

    A previous demo at ``out`` is replaced; any other existing path is left
    alone unless ``cfg.overwrite``.
    """
    out = Path(out)
    if out.exists() and not (out / _MARKER).exists() and not cfg.overwrite:
        msg = f"{out} exists and is not a segmint demo folder; pass --overwrite or choose another --out"
        raise OutputExistsError(msg)
    clock = StageClock(progress)
    with clock.stage("generate") as info:
        out.mkdir(parents=True, exist_ok=True)
        (out / _MARKER).write_text("written by segmint demo; safe to delete\n")
        # Both writes are atomic, so an interrupted demo leaves the previous one whole.
        data = generate(out / "data", customers=customers, seed=seed, overwrite=True)
        info.update(customers=data.customers, lines=data.lines)
    tx = [out / "data" / "transactions"]
    cfg = dataclasses.replace(
        cfg, overwrite=True,
        events=EventSource(paths=(str(out / "data" / "events"),)),
        customers=CustomerSource(paths=(str(out / "data" / "customers.parquet"),),
                                 attributes=("region", "age_band")))
    result = run(tx, out / "run", cfg, progress)
    cohorts = compute_cohorts(tx, out / "cohorts", dataclasses.replace(cfg, events=None, customers=None)).cohorts
    with clock.stage("report") as info:
        info["path"] = str(write_report(out / "run", out / "report.html", cohorts=cohorts, overwrite=True))
    return result
