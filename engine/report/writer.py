"""Write the report file: read the run, render the page, put it in place atomically."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import polars as pl

from segmint.engine.io import store
from segmint.engine.io.sink import check_not_inside, check_writable, staged_file
from segmint.engine.report.html import render_page
from segmint.engine.report.inputs import check_cohorts, check_migration, read_run

__all__ = ["write_report"]


def write_report(run_dir: str | Path, out_html: str | Path, *, cohorts: pl.DataFrame | None = None,
                 migration: pl.DataFrame | None = None, settings_differ: Sequence[str] = (),
                 overwrite: bool = False) -> Path:
    """Write the report of ``run_dir`` to ``out_html`` and return its path.

    Parameters
    ----------
    run_dir
        A finished ``segmint run`` or ``segmint assign`` output folder.
    out_html
        The file to write (atomically: renamed into place once complete).
    cohorts
        Optional long cohort table written by ``segmint cohorts`` (cohort, months_since_first,
        retention, complete_month; cohort_size when present): drawn as a retention heatmap.
    migration
        Optional table with old_segment, new_segment, customers, revenue (null old_segment:
        new customers; null new_segment: lost customers): drawn as a migration matrix.
    settings_differ
        How the two runs' settings differ (``compare``'s ``settings_differ``): said beside the migration.
    overwrite
        Replace an existing ``out_html``; without it an existing file is an error (exit 4).
    """
    store.local_only(out_html, "segmint report's page", writing=True)
    check_not_inside(out_html, {"RUN_DIR": [str(run_dir)]})   # a run's own file replaced by the page
    check_writable(out_html, overwrite=overwrite, file=True)  # before any work; staged_file checks again
    cohorts = check_cohorts(cohorts) if cohorts is not None else None
    migration = check_migration(migration) if migration is not None else None
    page = render_page(read_run(run_dir), cohorts=cohorts, migration=migration, settings_differ=settings_differ,
                       version=version("segmint"))
    out_html = store.local(out_html)
    with staged_file(out_html, overwrite=overwrite) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out_html
