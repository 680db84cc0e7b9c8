"""``abtest split`` and ``abtest evaluate``: read a run's assignments or outcomes, write groups or lifts."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from segmint.engine.analytics.abtest import evaluate, split_groups
from segmint.engine.errors import ConfigError, InputContractError
from segmint.engine.io import store
from segmint.engine.io.committed import open_output
from segmint.engine.io.sink import check_not_inside, check_writable, staged_dir, staged_file, write_json
from segmint.engine.io.sources import first_line

__all__ = ["abtest_split", "abtest_evaluate"]


def abtest_split(run_dir: str | Path, out: str | Path, *, ratio: float, salt: str, overwrite: bool = False,
                 options: tuple[tuple[str, str], ...] = ()) -> pl.DataFrame:
    """Write ``out`` (Parquet: customer_id, segment, group) for the customers of a run (its committed
    assignments; ``options`` reach an object store)."""
    _check_local({"--out": out})
    check_not_inside(out, {"RUN_DIR": [str(run_dir)]})
    check_writable(out, overwrite=overwrite, file=True)
    assignments = open_output(run_dir, dict(options)).scan("assignments", ["customer_id", "segment"])
    groups = split_groups(assignments.collect(), ratio, salt)
    with staged_file(out, overwrite=overwrite) as tmp:
        groups.write_parquet(tmp)
    return groups


def abtest_evaluate(assignments: str | Path, outcomes: str | Path, out: str | Path, *,
                    cost_per_contact: float, overwrite: bool = False) -> pl.DataFrame:
    """Write ``out/abtest.parquet`` and ``out/abtest.json``: per-segment and overall lift.
    Measures that are undefined (no holdout, no variance) are null, never NaN."""
    _check_local({"--assignments": assignments, "--outcomes": outcomes, "--out": out})
    check_not_inside(out, {"--assignments": [str(assignments)], "--outcomes": [str(outcomes)]})
    check_writable(out, overwrite=overwrite)
    result = evaluate(_read_table(assignments, "assignments"), _read_table(outcomes, "outcomes"), cost_per_contact)
    result = result.with_columns(pl.col(c).replace([float("inf"), float("-inf")], None).fill_nan(None)
                                 for c, t in result.schema.items() if t.is_float())
    with staged_dir(out, overwrite=overwrite) as stage:
        result.write_parquet(stage / "abtest.parquet")
        write_json(stage / "abtest.json", result.to_dicts())
    return result


def _check_local(paths: dict[str, str | Path]) -> None:
    """Refuse a URI where these files are local: Path("s3://b/x") is the local file "s3:/b/x", written or
    looked for there (exit 0 for a written one)."""
    for flag, path in paths.items():
        if store.is_remote(path):
            fix = "write it to a local path, then copy it" if flag == "--out" else "copy it to a local path first"
            msg = f"abtest {flag} takes a local path, not {path}; {fix}"
            raise ConfigError(msg)


def _read_table(path: str | Path, what: str) -> pl.DataFrame:
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, schema_overrides={"customer_id": pl.String})
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"cannot read the {what} file {path}: {first_line(exc)}"
        raise InputContractError(msg) from None
