"""``segmint demo``: generate a sample, segment it, write everything under one folder."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from segmint.engine.config import CustomerSource, EventSource, RunConfig
from segmint.engine.errors import ConfigError, InputContractError, OutputExistsError, SegmintError
from segmint.engine.io import store
from segmint.engine.io.sink import check_writable
from segmint.engine.pipeline import RunResult, run
from segmint.engine.progress import Progress, StageClock
from segmint.engine.warmup import warmup

__all__ = ["DEMO_CUSTOMERS", "run_demo"]

DEMO_CUSTOMERS = 200_000
_MARKER = "SEGMINT_DEMO"


def run_demo(out: str | Path, cfg: RunConfig, *, customers: int = DEMO_CUSTOMERS, seed: int = 0,
             progress: Progress | None = None) -> RunResult:
    """Write ``out/data`` (generated transactions, events, customers), ``out/run`` (the
    segmentation, with funnel stages and the segment mix by region and age band),
    ``out/cohorts`` and ``out/report.html``.

    A previous demo at ``out`` is replaced; another existing folder is taken only when it is empty, and with
    ``cfg.overwrite`` (as ``--overwrite`` replaces only what segmint wrote).
    """
    # As a Path, s3://b/x was the local folder "s3:/b/x": written into, then refused (exit 3).
    out = store.local_only(out, "demo's --out", writing=True)
    foreign = out.exists() and not (out / _MARKER).exists()
    if foreign and (not out.is_dir() or any(out.iterdir())):
        # With --overwrite the demo's folders and report were written beside the files there.
        what = "is not a segmint demo folder and is not empty" if out.is_dir() else "is a file"
        msg = (f"{out} {what}: the demo writes into a new or empty folder or a previous demo's, whatever "
               f"--overwrite; choose another --out")
        raise OutputExistsError(msg)
    if foreign and not cfg.overwrite:
        msg = f"{out} exists and is not a segmint demo folder; pass --overwrite or choose another --out"
        raise OutputExistsError(msg)
    # Each step's output checked before the first is written: a refusal of run/ (a file of the user's saved in it)
    # came after data/ and cohorts/ were replaced, and left them.
    for step in ("data", "cohorts", "run"):
        check_writable(out / step, overwrite=True)
    check_writable(out / "report.html", overwrite=True, file=True)
    # Marked before the first step writes: every step's output is checked above, and a demo interrupted in an empty
    # folder of the user's (--overwrite) left it unmarked beside its data/, refused by every later demo there.
    clock = StageClock(progress)
    with clock.stage("generate") as info:
        out.mkdir(parents=True, exist_ok=True)
        _mark(out)
        # While the child generates, this process compiles the kernels the later steps use (the
        # first demo after an install spent 20 s compiling); not the generator's own, which the
        # child compiles (two processes compiling one kernel into a cold cache race).
        compiled = _in_background(lambda: warmup(skip=("simulate_purchases",)))
        _child("generate", "--out", out / "data", "--n-customers", customers, "--seed", seed, "--overwrite")
        compiled()
        info.update(customers=customers)
    tx = [out / "data" / "transactions"]
    cfg = dataclasses.replace(
        cfg, overwrite=True,
        events=EventSource(paths=(str(out / "data" / "events"),)),
        customers=CustomerSource(paths=(str(out / "data" / "customers.parquet"),),
                                 attributes=("region", "age_band")))
    with clock.stage("cohorts"):
        limit = ("--memory-limit", cfg.memory_limit) if cfg.memory_limit else ()
        _child("cohorts", tx[0], "--out", out / "cohorts", "--overwrite", *limit)
    result = run(tx, out / "run", cfg, progress)
    with clock.stage("report") as info:
        from segmint.engine.report import read_cohorts, write_report  # Matplotlib: loaded after the run

        info["path"] = str(write_report(out / "run", out / "report.html", cohorts=read_cohorts(out / "cohorts"),
                                        overwrite=True))
    return result


def _mark(out: Path) -> None:
    (out / _MARKER).write_text("written by segmint demo; safe to delete\n")


def _in_background(fn: Callable[[], object]) -> Callable[[], None]:
    """Start ``fn`` in a thread; the returned function waits for it and raises what it raised."""
    failed: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]
    return wait


def _child(*args: object) -> None:
    """One segmint command in a child process: the memory it used is given back before the next
    step plans its budget. Its outputs are written atomically, so an interrupted demo leaves the
    previous one whole."""
    child = subprocess.run([sys.executable, "-m", "segmint.cli.app", *map(str, args)], capture_output=True, text=True)
    if child.returncode:
        last = (child.stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1].removeprefix("error: ")
        # The child's own exit code (a full disk is 2, like a bad option): not every failure is the input's.
        error = {2: ConfigError, 3: InputContractError, 4: OutputExistsError}.get(child.returncode, SegmintError)
        raise error(f"segmint {args[0]} failed in the demo: {last}")
