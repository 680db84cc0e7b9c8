"""``abtest split`` and ``abtest evaluate``: read a run's assignments or outcomes, write groups or lifts."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from segmint.engine.analytics.abtest import evaluate, split_groups
from segmint.engine.errors import InputContractError
from segmint.engine.io import store
from segmint.engine.io.committed import open_output
from segmint.engine.io.pseudonym import pseudonymized, require_key
from segmint.engine.io.sink import check_not_inside, check_writable, staged_dir, staged_file, write_json
from segmint.engine.io.sources import first_line

__all__ = ["abtest_split", "abtest_evaluate"]


def abtest_split(run_dir: str | Path, out: str | Path, *, ratio: float, salt: str, overwrite: bool = False,
                 options: tuple[tuple[str, str], ...] = ()) -> pl.DataFrame:
    """Write ``out`` (Parquet: customer_id, segment, group) for the customers of a run (its committed
    assignments; ``options`` reach an object store)."""
    store.local_only(out, "abtest split's --out", writing=True)
    check_not_inside(out, {"RUN_DIR": [str(run_dir)]})
    check_writable(out, overwrite=overwrite, file=True)
    assignments = open_output(run_dir, dict(options)).scan("assignments", ["customer_id", "segment"])
    groups = split_groups(assignments.collect(), ratio, salt)
    with staged_file(out, overwrite=overwrite) as tmp:
        groups.write_parquet(tmp)
    return groups


def abtest_evaluate(assignments: str | Path, outcomes: str | Path, out: str | Path, *,
                    cost_per_contact: float, overwrite: bool = False, pseudonymize_ids: bool = False) -> pl.DataFrame:
    """Write ``out/abtest.parquet`` and ``out/abtest.json``: per-segment and overall lift.
    Measures that are undefined (no holdout, no variance) are null, never NaN. ``pseudonymize_ids``: the
    outcomes' raw ids become their pseudonyms, to meet a split of a pseudonymised run."""
    if pseudonymize_ids:
        require_key()   # before anything is read
    for flag, path in (("--assignments", assignments), ("--outcomes", outcomes)):
        store.local_only(path, f"abtest evaluate's {flag}")
    store.local_only(out, "abtest evaluate's --out", writing=True)
    check_not_inside(out, {"--assignments": [str(assignments)], "--outcomes": [str(outcomes)]})
    check_writable(out, overwrite=overwrite)
    results = _read_table(outcomes, "outcomes", as_text=True)
    if pseudonymize_ids and "customer_id" in results.columns:
        results = pseudonymized(results, "customer_id")
    result = evaluate(_read_table(assignments, "assignments"), results, cost_per_contact)
    result = result.with_columns(pl.col(c).fill_nan(None) for c, t in result.schema.items() if t.is_float())
    with staged_dir(out, overwrite=overwrite) as stage:
        result.write_parquet(stage / "abtest.parquet")
        write_json(stage / "abtest.json", result.to_dicts())
    return result


def _read_table(path: str | Path, what: str, *, as_text: bool = False) -> pl.DataFrame:
    """A Parquet or CSV file; ``as_text``: a CSV's every column as text, for the reader to check (outcomes: types
    guessed from the first 100 rows refused a revenue of 12.5 after rows of 0, or converted "true" after rows of
    0, exit 3 for a valid file)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, glob=False, **({"infer_schema": False} if as_text else
                                                    {"schema_overrides": {"customer_id": pl.String}}))
        return pl.read_parquet(path, glob=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read the {what} file {path}: {first_line(exc)}"
        raise InputContractError(msg) from None
