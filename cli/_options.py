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

from segmint.engine.config import CustomerSource, EventSource, RunConfig, load_toml
from segmint.engine.errors import ConfigError

__all__ = ["Inputs", "Out", "ConfigFile", "Json", "Overwrite", "Seed", "AsOf", "K", "Device",
           "DedupeOn", "MemoryLimit", "Buckets", "Pseudonymize", "column_options", "side_table_options", "build_config"]

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
MemoryLimit = Annotated[str | None, typer.Option(
    "--memory-limit", rich_help_panel=_RUN, show_default=False,
    help="Memory budget, e.g. 2GB; larger input runs bucket by bucket [default: a quarter of the available "
         "memory].")]
Buckets = Annotated[int | None, typer.Option("--buckets", rich_help_panel=_RUN, show_default=False,
                                             help="Force this many customer buckets (1: all in memory).")]
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
    return _inject(fn, "columns", _COLUMN_OPTIONS,
                   lambda kwargs: {field: kwargs.pop(name) for name, field, _ in _COLUMN_OPTIONS})


def _inject(fn: Callable[..., None], target: str, options: tuple, collect: Callable[[dict], Any]) -> Callable:
    """Append ``options`` (name, _, annotation) to ``fn``'s signature; pass ``collect(kwargs)`` as ``target``."""
    sig = inspect.signature(fn, eval_str=True)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
             for name, _, ann in options]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        return fn(*args, **{target: collect(kwargs)}, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name != target]
    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != target},
                               **{name: ann for name, _, ann in options}}
    return wrapper


_SIDE = "Events and customers tables"


def _side(flag: str, help_: str, kind: Any = str | None) -> Any:
    return Annotated[kind, typer.Option(flag, help=help_, rich_help_panel=_SIDE, show_default=False)]


# (parameter name, (table, field), annotation)
_SIDE_OPTIONS = (
    ("events", ("events", "paths"), _side("--events", "Events input (repeatable): customer, time, event type, "
                                      "optional session.", list[str] | None)),
    ("event_customer_col", ("events", "customer"), _side("--event-customer-col", "[default: customer_id]")),
    ("event_time_col", ("events", "time"), _side("--event-time-col", "[default: ts]")),
    ("event_time_format", ("events", "time_format"), _side("--event-time-format", "strftime format.")),
    ("event_type_col", ("events", "event_type"), _side("--event-type-col", "[default: event_type]")),
    ("event_session_col", ("events", "session"), _side("--event-session-col", "[default: session_id; '' for "
                                                       "none]")),
    ("customers", ("customers", "paths"), _side("--customers", "Customers table (repeatable) with attributes "
                                                "to profile by.", list[str] | None)),
    ("customers_id_col", ("customers", "customer"), _side("--customers-id-col", "[default: customer_id]")),
    ("customer_attrs", ("customers", "attributes"), _side("--customer-attrs", "Comma-separated attribute "
                                                          "columns to carry, e.g. region,age_band.")),
)


def side_table_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Add the events/customers flags; the command receives ``side={"events": {...}, "customers": {...}}``."""
    return _inject(fn, "side", _SIDE_OPTIONS, _side_values)


def _side_values(kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    side: dict[str, dict[str, Any]] = {"events": {}, "customers": {}}
    for name, (table, field), _ in _SIDE_OPTIONS:
        value = kwargs.pop(name)
        if value is not None:
            side[table][field] = value
    return side


def build_config(config: Path | None, *, columns: dict[str, str | None] | None = None,
                 cluster: dict[str, Any] | None = None, clv: dict[str, Any] | None = None,
                 side: dict[str, dict[str, Any]] | None = None, **run: Any) -> RunConfig:
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
    for table, cls in (("events", EventSource), ("customers", CustomerSource)):
        values = dict((side or {}).get(table, {}))
        if not values:
            continue
        if "paths" not in values and getattr(cfg, table) is None:
            msg = f"--{table} is needed with the other --{table[:-1]}-... flags"
            raise ConfigError(msg)
        values = {k: (tuple(v) if k == "paths" else tuple(a.strip() for a in v.split(",") if a.strip())
                      if k == "attributes" else (v or None)) for k, v in values.items()}
        current = getattr(cfg, table)
        run_updates[table] = dataclasses.replace(current, **values) if current else cls(**values)
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
