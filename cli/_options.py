"""Option bundles shared by several commands, and the flags -> RunConfig merge.

Flags default to None so that only what the user typed overrides the
``--config`` file, which itself overrides the built-in defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from segmint.engine.config import RunConfig, load_toml
from segmint.engine.errors import ConfigError

__all__ = ["Inputs", "Out", "ConfigFile", "Json", "Overwrite", "Seed", "AsOf", "K", "Device",
           "DedupeOn", "Pseudonymize", "column_options", "build_config"]

_COLS = "Column mapping"
_RUN = "Run"

Inputs = Annotated[list[str], typer.Argument(help="Parquet/CSV files, directories (hive too) or globs.",
                                             show_default=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output path.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="segmint.toml with defaults for any option.",
                                                 rich_help_panel=_RUN)]
Json = Annotated[bool, typer.Option("--json", help="JSON-lines logs on stderr instead of progress display.",
                                    rich_help_panel=_RUN)]
Overwrite = Annotated[bool | None, typer.Option("--overwrite", help="Replace an existing output.",
                                                rich_help_panel=_RUN, show_default=False)]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed [default: 0].", rich_help_panel=_RUN,
                                          show_default=False)]
AsOf = Annotated[str | None, typer.Option("--as-of", help="As-of date or datetime (a date means its end) "
                                          "[default: latest valid timestamp].", rich_help_panel=_RUN)]
K = Annotated[str | None, typer.Option("--k", help="Number of segments, or 'auto' [default: 8].",
                                       rich_help_panel=_RUN, show_default=False)]
Device = Annotated[str | None, typer.Option("--device", help="auto | cpu | gpu [default: auto].",
                                            rich_help_panel=_RUN, show_default=False)]
DedupeOn = Annotated[str | None, typer.Option("--dedupe-on", help="Comma-separated source columns: reject "
                                              "every repeat of a row on exactly these (reason: duplicate).",
                                              rich_help_panel=_RUN)]
Pseudonymize = Annotated[bool | None, typer.Option("--pseudonymize-ids", help="Write HMAC-SHA256 pseudonyms "
                                                   "(key from SEGMINT_ID_KEY) instead of customer ids.",
                                                   rich_help_panel=_RUN, show_default=False)]


def _col(flag: str, help_: str) -> Any:
    return Annotated[str | None, typer.Option(flag, help=help_, rich_help_panel=_COLS, show_default=False)]


# (parameter name, Columns field, annotation)
_COLUMN_OPTIONS = (
    ("customer_col", "customer", _col("--customer-col", "Customer id column [default: customer_id].")),
    ("time_col", "time", _col("--time-col", "Timestamp column [default: ts].")),
    ("time_format", "time_format", _col("--time-format", "strftime format for string/integer times, "
                                        "e.g. %Y%m%d.")),
    ("amount_col", "amount", _col("--amount-col", "Amount column, negative = refund [default: amount].")),
    ("quantity_col", "quantity", _col("--quantity-col", "Quantity column (amount = quantity x price).")),
    ("price_col", "price", _col("--price-col", "Unit price column (with --quantity-col).")),
    ("order_col", "order", _col("--order-col", "Order id column; lines of one order count as one order "
                                "[default: order_id if present; '' to ignore].")),
    ("channel_col", "channel", _col("--channel-col", "Channel column [default: channel if present; "
                                    "'' to ignore].")),
    ("category_col", "category", _col("--category-col", "Category column [default: category if present; "
                                      "'' to ignore].")),
)


def column_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Add the column-mapping flags to a command; it receives them as ``columns={field: value}``."""
    sig = inspect.signature(fn, eval_str=True)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
             for name, _, ann in _COLUMN_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        columns = {field: kwargs.pop(name) for name, field, _ in _COLUMN_OPTIONS}
        return fn(*args, columns=columns, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name != "columns"]
    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, **{name: ann for name, _, ann in _COLUMN_OPTIONS}}
    wrapper.__annotations__.pop("columns", None)
    return wrapper


def build_config(config: Path | None, *, columns: dict[str, str | None] | None = None,
                 cluster: dict[str, Any] | None = None, clv: dict[str, Any] | None = None,
                 **run: Any) -> RunConfig:
    """Defaults <- config file <- flags that were given (not None)."""
    cfg = load_toml(config) if config else RunConfig()
    col_updates = {k: (v or None) for k, v in (columns or {}).items() if v is not None}
    if col_updates.get("quantity"):
        col_updates.setdefault("amount", None)
    cluster_updates = {k: v for k, v in (cluster or {}).items() if v is not None}
    if "k" in cluster_updates:
        cluster_updates["k"] = parse_k(cluster_updates["k"])
    run_updates = {k: v for k, v in run.items() if v is not None}
    if "dedupe_on" in run_updates:
        run_updates["dedupe_on"] = tuple(c.strip() for c in run_updates["dedupe_on"].split(",") if c.strip())
    return dataclasses.replace(
        cfg,
        columns=dataclasses.replace(cfg.columns, **col_updates),
        cluster=dataclasses.replace(cfg.cluster, **cluster_updates),
        clv=dataclasses.replace(cfg.clv, **{k: v for k, v in (clv or {}).items() if v is not None}),
        **run_updates,
    )


def parse_k(text: str | int | None) -> int | None:
    if text is None or isinstance(text, int):
        return text
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        msg = f"--k must be a positive integer or 'auto', got {text!r}"
        raise ConfigError(msg) from None
