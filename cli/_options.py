"""Option bundles shared by several commands, and the flags -> RunConfig merge.

Flags default to None so that only what the user typed overrides the
``--config`` file, which itself overrides the built-in defaults. Every flag has
one meaning across commands. Flags show no ``<bool>`` marker in help: they take
no value (``--overwrite``, not ``--overwrite true``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from segmint.engine.config import CustomerSource, EventSource, RunConfig, load_toml, parse_size
from segmint.engine.errors import ConfigError

__all__ = ["Inputs", "Out", "ConfigFile", "Json", "Overwrite", "Seed", "AsOf", "K", "Device", "DedupeOn",
           "MemoryLimit", "Buckets", "Pseudonymize", "MaxRejectShare", "Executor", "RayAddress", "StorageOption",
           "WorkDir", "Threads", "AppThreads",
           "column_options", "side_table_options", "build_config", "flag", "parse_storage_options"]

_COLS = "Column mapping"
_RUN = "Run"
_SCALE = "Scale"


def flag(*names: str, help: str, panel: str | None = _RUN) -> Any:  # noqa: A002 - typer's own word
    """A value-less switch: no type marker in help."""
    return typer.Option(*names, help=help, metavar="", rich_help_panel=panel, show_default=False)


def _value(name: str, help_: str, metavar: str, panel: str = _RUN) -> Any:
    return typer.Option(name, help=help_, metavar=metavar, rich_help_panel=panel, show_default=False)


Inputs = Annotated[list[str], typer.Argument(help="Parquet/CSV files, directories or globs.", metavar="INPUT...",
                                             show_default=False)]
# Text, not Path: an object-store URI (s3://...) must keep its double slash.
Out = Annotated[str, typer.Option("--out", "-o", help="Output folder (a path or s3://, gs://, az:// URI).",
                                  metavar="DIR", show_default=False)]
ConfigFile = Annotated[Path | None, _value("--config", "segmint.toml with defaults for any option but --threads, --json and --debug.", "FILE")]
Json = Annotated[bool, flag("--json", help="JSON-lines events on stderr instead of the progress display.")]
Overwrite = Annotated[bool | None, flag("--overwrite", help="Replace an existing output (once the new one is "
                                        "complete).")]
Seed = Annotated[int | None, _value("--seed", "Random seed [default: 0].", "N")]
AsOf = Annotated[str | None, _value("--as-of", "As-of date or datetime (a date means its end) "
                                    "[default: the latest valid time, not after now].", "DATE")]
K = Annotated[str | None, _value("--k", "Number of segments, or 'auto' (scans 4..16) [default: 8].", "N|auto")]
Device = Annotated[str | None, _value("--device", "auto | cpu | gpu [default: auto].", "DEVICE")]
DedupeOn = Annotated[str | None, _value("--dedupe-on", "Comma-separated source columns, the customer's among "
                                        "them: reject every repeat of a row on exactly these (assign: by default "
                                        "the model's run's).", "COLS")]
MaxRejectShare = Annotated[float | None, _value("--max-reject-share", "Refuse input (exit 3) when more than this "
                                                "share of rows is rejected (rows after a given --as-of not counted) "
                                                "[default: 0.5].", "SHARE")]
Pseudonymize = Annotated[bool | None, flag("--pseudonymize-ids", help="Replace customer ids by HMAC-SHA256 "
                                           "pseudonyms (key from SEGMINT_ID_KEY) as they are read.")]
MemoryLimit = Annotated[str | None, _value("--memory-limit", "Memory budget, e.g. 2GB; larger input runs bucket "
                                           "by bucket [default: a quarter of the available memory].", "SIZE",
                                           _SCALE)]
Buckets = Annotated[int | None, _value("--buckets", "Force this many customer buckets (1: all in memory).",
                                       "N", _SCALE)]
Resume = Annotated[bool | None, flag("--resume", help="If the run fails, keep its finished buckets; the same "
                                    "command with --resume goes on from them.", panel=_SCALE)]
Executor = Annotated[str | None, _value("--executor", "local | ray: where bucket work runs [default: local].",
                                        "NAME", _SCALE)]
RayAddress = Annotated[str | None, _value("--ray-address", "With --executor ray: 'auto' or ray://host:port joins a "
                                          "cluster [default: a local Ray started for the job].", "ADDRESS", _SCALE)]
StorageOption = Annotated[list[str] | None, _value("--storage-option", "Object-store option KEY=VALUE (repeatable), "
                                                   "e.g. aws_region=eu-west-1; never written out.", "KEY=VALUE",
                                                   _SCALE)]
WorkDir = Annotated[str | None, _value("--work-dir", "Scratch folder for bucket files [default: beside a "
                                       "local output, else the temp folder]; shared storage for a cluster.", "DIR", _SCALE)]
_THREADS_HELP = "Threads for Polars, Numba and Faiss [default: the CPUs this process may use]."
# SEGMINT_THREADS is read once, before the command (segmint's own option): read again by the command's, it
# replaced a --threads given before the command (SEGMINT_THREADS=1 segmint --threads 2 run: 1 thread).
AppThreads = Annotated[int | None, typer.Option(
    "--threads", envvar="SEGMINT_THREADS", metavar="N", show_default=False, rich_help_panel=_SCALE,
    help=_THREADS_HELP)]
Threads = Annotated[int | None, typer.Option(
    "--threads", metavar="N", show_default=False, rich_help_panel=_SCALE, help=_THREADS_HELP)]


def _col(flag_: str, help_: str) -> Any:
    return Annotated[str | None, _value(flag_, help_, "COL", _COLS)]


# (parameter name, Columns field, annotation)
_COLUMN_OPTIONS = (
    ("customer_col", "customer", _col("--customer-col", "Customer id column [default: customer_id].")),
    ("time_col", "time", _col("--time-col", "Timestamp column [default: ts].")),
    ("time_format", "time_format", Annotated[str | None, _value(
        "--time-format", "How times are written, when not ISO 8601: strftime (e.g. %d/%m/%Y %H:%M) or "
        "epoch_s, epoch_ms, epoch_us or epoch_ns; iso says ISO 8601 where a model's format would apply "
        "(assign).", "FORMAT", _COLS)]),
    ("amount_col", "amount", _col("--amount-col", "Amount column, negative = return [default: amount].")),
    ("quantity_col", "quantity", _col("--quantity-col", "Quantity column (amount = quantity x price).")),
    ("price_col", "price", _col("--price-col", "Unit price column (with --quantity-col).")),
    ("order_col", "order", _col("--order-col", "Order id column; lines of one order count as one order "
                                "[default: order_id if present; '' to ignore].")),
    ("channel_col", "channel", _col("--channel-col", "Channel column [default: channel if present; "
                                    "'' to ignore].")),
    ("category_col", "category", _col("--category-col", "Category column [default: category if present; "
                                      "'' to ignore].")),
)


# assign takes the model's column mapping, but its batch's times may be written another way.
TimeFormat = next(ann for name, _, ann in _COLUMN_OPTIONS if name == "time_format")


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


def _side(flag_: str, help_: str, metavar: str = "COL", kind: Any = str | None) -> Any:
    return Annotated[kind, _value(flag_, help_, metavar, _SIDE)]


# (parameter name, (table, field), annotation)
_SIDE_OPTIONS = (
    ("events", ("events", "paths"), _side("--events", "Events input (repeatable): customer, time, event type, "
                                      "optional session.", "PATH", list[str] | None)),
    ("event_customer_col", ("events", "customer"), _side("--event-customer-col", "[default: customer_id]")),
    ("event_time_col", ("events", "time"), _side("--event-time-col", "[default: ts]")),
    ("event_time_format", ("events", "time_format"), _side("--event-time-format", "As --time-format.",
                                                           "FORMAT")),
    ("event_type_col", ("events", "event_type"), _side("--event-type-col", "[default: event_type]")),
    ("event_session_col", ("events", "session"), _side("--event-session-col", "[default: session_id; '' for "
                                                       "none]")),
    ("customers", ("customers", "paths"), _side("--customers", "Customers table (repeatable) with attributes "
                                                "to profile by.", "PATH", list[str] | None)),
    ("customers_id_col", ("customers", "customer"), _side("--customers-id-col", "[default: customer_id]")),
    ("customer_attrs", ("customers", "attributes"), _side("--customer-attrs", "Comma-separated attribute "
                                                          "columns to carry, e.g. region,age_band.", "COLS")),
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
    elif col_updates.get("amount"):   # over a config's quantity and price: the flag wins, as flags do
        col_updates.setdefault("quantity", None)
        col_updates.setdefault("price", None)
    cluster_updates = {k: v for k, v in (cluster or {}).items() if v is not None}
    run_updates = {k: v for k, v in run.items() if v is not None}
    if "dedupe_on" in run_updates:
        run_updates["dedupe_on"] = tuple(c.strip() for c in run_updates["dedupe_on"].split(",") if c.strip())
    if "memory_limit" in run_updates:
        run_updates["memory_limit"] = parse_size(run_updates["memory_limit"])
    if "storage_options" in run_updates:
        run_updates["storage_options"] = cfg.storage_options + parse_storage_options(run_updates["storage_options"])
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


def parse_storage_options(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``--storage-option KEY=VALUE`` flags as (key, value) pairs."""
    return tuple(_key_value(text) for text in values)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        # The value may be a secret: name the key (or its absence), never echo the text.
        shown = f"the option {key.strip()!r}" if key.strip() and sep else "a value without KEY="
        msg = f"--storage-option takes KEY=VALUE (e.g. aws_region=eu-west-1), got {shown}"
        raise ConfigError(msg)
    return key.strip(), value.strip()


def _hide_flag_types() -> None:
    """Typer marks every option with its type, ``--help <bool>`` included; a flag takes no value."""
    shown = typer.core.TyperOption.display_type_rich

    def display(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    typer.core.TyperOption.display_type_rich = display  # type: ignore[method-assign]


_hide_flag_types()
