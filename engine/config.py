"""The one typed configuration object that flows from the CLI to the engine.

Every option lives here once, with its default. Each dataclass checks the type
and range of its fields on construction (``RunConfig(cluster={"k": 5})`` is refused
with a message naming the field), so the CLI, the TOML loader and library users
get the same errors. ``load_toml`` reads ``--config segmint.toml``; the CLI then
overrides single fields with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import numbers
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from segmint.engine.errors import ConfigError

__all__ = [
    "Columns",
    "FeatureConfig",
    "ClusterConfig",
    "LifecycleConfig",
    "ClvConfig",
    "SamplingConfig",
    "EventSource",
    "CustomerSource",
    "RunConfig",
    "DEFAULT_RFM_GRID",
    "DEFAULT_HORIZON_DAYS",
    "load_toml",
    "config_hash",
    "to_dict",
    "parse_as_of",
    "parse_size",
]

DEFAULT_HORIZON_DAYS = 364.0
MAX_HORIZON_DAYS = 36_525.0   # 100 years

# (name, R scores, F scores): the widely used RFM segment map; every one of the
# 25 (R, F) cells belongs to exactly one name.
DEFAULT_RFM_GRID: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("Champions", (5,), (4, 5)),
    ("Loyal", (3, 4), (4, 5)),
    ("Potential loyalist", (4, 5), (2, 3)),
    ("New", (5,), (1,)),
    ("Promising", (4,), (1,)),
    ("Need attention", (3,), (3,)),
    ("About to sleep", (3,), (1, 2)),
    ("At risk", (1, 2), (3, 4)),
    ("Can't lose", (1, 2), (5,)),
    ("Hibernating", (1, 2), (1, 2)),
)


class _Checked:
    """Type-checks every field against its annotation before the class's own checks."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            # A list for a tuple, as a caller of the API writes one: CustomerSource(paths=["c.parquet"]) was refused.
            if isinstance(value, (list, tuple)) and any(typing.get_origin(m) is tuple for m in _members(hints[f.name])):
                value = _tupled(value)
                object.__setattr__(self, f.name, value)
            if value is None and not _matches(value, hints[f.name]):   # --customer-col '' read "got None"
                msg = f"{self.section}.{f.name} cannot be left out ('' or none): segmint needs it"
                raise ConfigError(msg)
            if not _matches(value, hints[f.name]):
                msg = f"{self.section}.{f.name} must be {_describe(hints[f.name])}, got {_shown(value)}"
                raise ConfigError(msg)
            # An integer for a number (new_days = 30 in TOML) as the float it means: config_hash, and with it
            # --resume's fingerprint, told 30 and 30.0 apart.
            if type(value) is int and float in _members(hints[f.name]) and int not in _members(hints[f.name]):
                object.__setattr__(self, f.name, float(value))
        self.check()

    def check(self) -> None:
        """Combinations and ranges (after the types are known to be right)."""


@dataclass(frozen=True, kw_only=True)
class Columns(_Checked):
    """Mapping from roles to source column names. Only these columns are read."""

    section: ClassVar[str] = "columns"
    customer: str = "customer_id"
    time: str = "ts"
    time_format: str | None = None
    amount: str | None = "amount"
    quantity: str | None = None
    price: str | None = None
    order: str | None = "order_id"
    channel: str | None = "channel"
    category: str | None = "category"

    def check(self) -> None:
        if (self.quantity is None) != (self.price is None):
            msg = "--quantity-col and --price-col go together: give both, or use --amount-col"
            raise ConfigError(msg)
        if self.quantity is not None and self.amount is not None:
            msg = "give either --amount-col or --quantity-col with --price-col, not both"
            raise ConfigError(msg)
        if self.quantity is None and self.amount is None:
            msg = "no amount: give --amount-col, or --quantity-col with --price-col"
            raise ConfigError(msg)
        roles: dict[str, str] = {}
        for role in ("customer", "time", "amount", "quantity", "price", "order", "channel", "category"):
            name = getattr(self, role)
            # One column in two roles read as both: orders of one line each (--order-col customer_id), amounts
            # squared (--quantity-col and --price-col on one column), with exit 0.
            if name is not None and roles.setdefault(name, role) != role:
                optional = [f"--{r}-col ''" for r in (roles[name], role) if r in ("order", "channel", "category")]
                leave = f" (or leave one out: {' or '.join(optional)})" if optional else ""
                msg = (f"column {name!r} is mapped to both --{roles[name]}-col and --{role}-col (given or by "
                       f"default): map each role to its own column{leave}")
                raise ConfigError(msg)

    def source_columns(self) -> list[str]:
        """The source columns that are read, in a fixed order (``check``: no column in two roles)."""
        cols = [self.customer, self.time, self.amount, self.quantity, self.price,
                self.order, self.channel, self.category]
        return [c for c in cols if c is not None]


@dataclass(frozen=True, kw_only=True)
class LifecycleConfig(_Checked):
    """Thresholds of ``activity_status`` (see README, "Features")."""

    section: ClassVar[str] = "lifecycle"
    new_days: float = 30.0
    at_risk_ratio: float = 1.5
    lapsed_ratio: float = 3.0
    one_time_active_days: float = 90.0
    lapsed_days: float = 365.0

    def check(self) -> None:
        # NaN passed every comparison below and stopped the run at its end (exit 1, writing run.json); new_days
        # <= 0 made no customer new (tenure is fractional: a same-day buyer's is above 0), with exit 0.
        bad = [f.name for f in dataclasses.fields(self) if not (math.isfinite(getattr(self, f.name))
                                                                and getattr(self, f.name) > 0)]
        if bad:
            msg = f"lifecycle.{bad[0]} must be a positive number, got {getattr(self, bad[0])}"
            raise ConfigError(msg)
        if not 0 < self.at_risk_ratio <= self.lapsed_ratio:
            msg = (f"lifecycle ratios must satisfy 0 < at_risk_ratio <= lapsed_ratio, "
                   f"got {self.at_risk_ratio} and {self.lapsed_ratio}")
            raise ConfigError(msg)
        if not 0 < self.one_time_active_days <= self.lapsed_days:
            msg = (f"lifecycle days must satisfy 0 < one_time_active_days <= lapsed_days, "
                   f"got {self.one_time_active_days} and {self.lapsed_days}")
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class FeatureConfig(_Checked):
    """Which features cluster, and how they are transformed."""

    section: ClassVar[str] = "features"
    # None: the behavioural default set (engine.pipeline.fit.default_cluster_features).
    cluster_features: tuple[str, ...] | None = None
    # Heavy-tailed features get a signed log1p before standardising.
    log_features: tuple[str, ...] = (
        "recency_days", "tenure_days", "frequency", "monetary_total", "aov",
        "ipt_mean_days", "ipt_std_days", "category_count",
    )
    max_channels: int = 16
    rfm_grid: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = DEFAULT_RFM_GRID
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)

    def check(self) -> None:
        cells = [(r, f) for _, rs, fs in self.rfm_grid for r in rs for f in fs]
        full = {(r, f) for r in range(1, 6) for f in range(1, 6)}
        if len(cells) != 25 or set(cells) != full:
            msg = "rfm grid must assign each of the 25 (R, F) score cells to exactly one segment"
            raise ConfigError(msg)
        if self.max_channels < 0:
            msg = f"features.max_channels must be >= 0, got {self.max_channels}"
            raise ConfigError(msg)
        if self.cluster_features is not None and not self.cluster_features:   # it meant the default set
            msg = "features.cluster_features is empty; name the features to cluster on, or leave it out for the default"
            raise ConfigError(msg)
        twice = sorted({f for f in self.cluster_features or () if self.cluster_features.count(f) > 1})
        if twice:   # the feature weighed twice in every distance, without a word
            msg = f"features.cluster_features names {twice} more than once; name each feature once"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(_Checked):
    """Faiss k-means settings. ``k=None`` (or "auto") means choose k automatically in [k_min, k_max]."""

    section: ClassVar[str] = "cluster"
    k: int | None = 8
    # The auto-k range: below 4 segments are too coarse to act on.
    k_min: int = 4
    k_max: int = 16
    min_segment_share: float = 0.02
    select_sample: int = 20_000
    niter: int = 30
    nredo: int = 5
    seed: int = 0
    # Restarts (nredo) run on init_points_per_centroid * k customers, the best of them then on
    # max_points_per_centroid * k (Faiss defaults to 256, which loses inertia against full-data
    # Lloyd); measured against scikit-learn in bench/README.md. We sample ourselves so the
    # counts are reported.
    max_points_per_centroid: int = 1024
    init_points_per_centroid: int = 256
    device: str = "auto"
    # With --previous: a new centroid within this distance (standard deviations, in the previous
    # model's scaled space) of a previous one keeps its id and name.
    match_distance: float = 1.0
    # Micro-segments inside each segment: a number, "auto" (2..8 by silhouette), or None (off).
    micro_k: int | str | None = None
    # Micro-segments below min_segment_share of their segment or this many customers are dissolved into the
    # nearest remaining siblings.
    min_segment_size: int = 30
    # Customers farther from their centroid than this quantile of their segment are outliers.
    outlier_quantile: float = 0.995
    # Customers-table attributes clustered on too (--cluster-attrs), one-hot: each level is a 0/1
    # column times attribute_weight, so two customers who differ in one attribute are
    # attribute_weight * sqrt(2) apart, as far as 1.4 standard deviations of one feature at 1.0.
    attributes: tuple[str, ...] = ()
    attribute_weight: float = 1.0

    def __post_init__(self) -> None:
        # One reading of k and micro_k for the CLI, a TOML file and the API: text, integers and 'auto' in any case
        # (TOML took k = "5" and refused micro_k = "3", the API refused both, the CLI took both).
        object.__setattr__(self, "k", _count(self.k, "k", auto=None))
        object.__setattr__(self, "micro_k", _count(self.micro_k, "micro_k", auto="auto"))
        super().__post_init__()

    def check(self) -> None:
        # NumPy's seeds are >= 0 and Faiss' a 32-bit int (restart r seeds with seed + r): exit 1 past either.
        if not 0 <= self.seed <= 2**31 - max(self.nredo, 1):
            msg = f"--seed must be in [0, {2**31 - max(self.nredo, 1)}], got {self.seed}"
            raise ConfigError(msg)
        if not (math.isfinite(self.match_distance) and self.match_distance >= 0):
            msg = f"cluster.match_distance must be a number >= 0 (standard deviations), got {self.match_distance}"
            raise ConfigError(msg)
        if not (math.isfinite(self.attribute_weight) and self.attribute_weight > 0):
            msg = f"cluster.attribute_weight must be a positive number, got {self.attribute_weight}"
            raise ConfigError(msg)
        if not 2 <= self.k_min <= self.k_max:
            msg = f"auto-k range must satisfy 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}"
            raise ConfigError(msg)
        if self.niter < 1 or self.nredo < 1:
            msg = f"niter and nredo must be >= 1, got niter={self.niter} nredo={self.nredo}"
            raise ConfigError(msg)
        if self.device not in ("auto", "cpu", "gpu"):
            msg = f"--device must be auto, cpu or gpu, got {self.device!r}"
            raise ConfigError(msg)
        if not 0 <= self.min_segment_share < 1:
            msg = f"min_segment_share must be in [0, 1), got {self.min_segment_share}"
            raise ConfigError(msg)
        if not 0 < self.outlier_quantile <= 1:
            msg = f"cluster.outlier_quantile must be in (0, 1], got {self.outlier_quantile}"
            raise ConfigError(msg)
        if min(self.select_sample, self.max_points_per_centroid, self.init_points_per_centroid) < 1:
            msg = "cluster.select_sample, max_points_per_centroid and init_points_per_centroid must be >= 1"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class ClvConfig(_Checked):
    """BG/NBD + Gamma-Gamma settings. Horizon is in ``time_unit``s (None: 52 weeks, whatever the
    unit); the discount rate is annual."""

    section: ClassVar[str] = "clv"
    enabled: bool = True
    time_unit: str = "week"
    horizon: float | None = None
    discount_rate: float = 0.10
    # "auto": BG/NBD, or its no-dropout limit (NBD, P(alive) = 1) when the data show no dropout in the
    # window (engine.analytics.clv); "bgnbd" or "nbd" to use one of them whatever the data say.
    purchase_model: str = "auto"

    def check(self) -> None:
        if self.time_unit not in ("day", "week"):
            msg = f"--time-unit must be day or week, got {self.time_unit!r}"
            raise ConfigError(msg)
        if self.purchase_model not in ("auto", "bgnbd", "nbd"):
            msg = f"[clv] purchase_model must be auto, bgnbd or nbd, got {self.purchase_model!r}"
            raise ConfigError(msg)
        if self.horizon is not None and not (math.isfinite(self.horizon) and self.horizon > 0):
            msg = f"--horizon must be > 0, got {self.horizon}"
            raise ConfigError(msg)
        if not 0 <= self.discount_rate < 1:
            msg = f"--discount-rate must be in [0, 1) (annual), got {self.discount_rate}"
            raise ConfigError(msg)

    def check_horizon(self) -> None:
        """Refuse a horizon beyond 100 years for a fit to come. CLV is summed over 30-day steps per distinct
        (repeats, age) pair: 100,000 weeks took 930 MB under --memory-limit 700MB and minutes, deaf to SIGTERM
        in one NumPy call. Not on construction: a model or run.json saved with a longer one is still read."""
        if self.horizon is not None and self.horizon * self.unit_days > MAX_HORIZON_DAYS:
            msg = (f"--horizon {self.horizon:g} {self.time_unit}s is beyond 100 years "
                   f"({MAX_HORIZON_DAYS / self.unit_days:g} {self.time_unit}s), which CLV is not computed over")
            raise ConfigError(msg)

    @property
    def unit_days(self) -> float:
        return 7.0 if self.time_unit == "week" else 1.0

    @property
    def horizon_units(self) -> float:
        """The horizon in time units; the default spans 364 days (52 weeks) in either unit."""
        return self.horizon if self.horizon is not None else DEFAULT_HORIZON_DAYS / self.unit_days


@dataclass(frozen=True, kw_only=True)
class SamplingConfig(_Checked):
    """How many customers the global fits hold (samples are customers of lowest hash; below
    these counts every customer is used and the fits are exact)."""

    section: ClassVar[str] = "sampling"
    # RFM cut points and the CLV fit: about 110 bytes per customer (fit.FIT_BYTES_PER_CUSTOMER).
    fit_customers: int = 10_000_000
    # Scaler, k-means, auto-k, segment order, names and the profiles' distribution columns:
    # about 8 bytes per feature per customer.
    profile_customers: int = 1_000_000

    def check(self) -> None:
        if self.fit_customers < 1000 or self.profile_customers < 1000:
            msg = (f"sampling.fit_customers and profile_customers must be >= 1000, got "
                   f"{self.fit_customers} and {self.profile_customers}")
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class EventSource(_Checked):
    """Optional web/app events (``--events``): only these columns are read."""

    section: ClassVar[str] = "events"
    paths: tuple[str, ...]
    customer: str = "customer_id"
    time: str = "ts"
    time_format: str | None = None
    event_type: str = "event_type"
    session: str | None = "session_id"

    def columns(self) -> dict[str, str]:
        """Source column -> the flag that maps it (``check``: no column in two roles)."""
        return {name: flag for flag, name in self._roles()}

    def check(self) -> None:
        # --event-session-col event_type counted each customer's distinct event types as sessions, exit 0.
        seen: dict[str, str] = {}
        for flag, name in self._roles():
            if seen.setdefault(name, flag) != flag:
                leave = " (or --event-session-col '' for none)" if "--event-session-col" in (seen[name], flag) else ""
                msg = (f"column {name!r} is mapped to both {seen[name]} and {flag}: map each role to its own "
                       f"column{leave}")
                raise ConfigError(msg)

    def _roles(self) -> list[tuple[str, str]]:
        roles = [("--event-customer-col", self.customer), ("--event-time-col", self.time),
                 ("--event-type-col", self.event_type)]
        return roles + ([("--event-session-col", self.session)] if self.session is not None else [])


@dataclass(frozen=True, kw_only=True)
class CustomerSource(_Checked):
    """Optional customers table (``--customers``): the id and the attributes to carry."""

    section: ClassVar[str] = "customers"
    paths: tuple[str, ...]
    customer: str = "customer_id"
    attributes: tuple[str, ...] = ()

    def check(self) -> None:
        if not self.attributes:
            msg = "--customers needs --customer-attrs naming the columns to carry (e.g. region,age_band)"
            raise ConfigError(msg)
        if (twice := sorted({a for a in self.attributes if self.attributes.count(a) > 1})):
            msg = f"--customer-attrs names {', '.join(twice)} more than once; name each attribute once"
            raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class RunConfig(_Checked):
    """Everything one run needs. Built once by the CLI (or by library users)."""

    section: ClassVar[str] = "run"
    columns: Columns = field(default_factory=Columns)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    clv: ClvConfig = field(default_factory=ClvConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    events: EventSource | None = None
    customers: CustomerSource | None = None
    # ISO date or datetime; None: the latest valid timestamp. A plain date
    # means the end of that day.
    as_of: str | None = None
    dedupe_on: tuple[str, ...] | None = None
    # A previous run (or its model folder): matched segments keep their ids and names.
    previous: str | None = None
    # With previous: start k-means from the previous centroids and keep their number (None: yes);
    # False clusters afresh with cluster.k and only matches the ids.
    warm_start: bool | None = None
    # Above this share of rejected rows the input is refused (exit 3).
    max_reject_share: float = 0.5
    pseudonymize_ids: bool = False
    overwrite: bool = False
    # Bytes the run may use; None: a quarter of the memory available to this process.
    memory_limit: int | None = None
    # Force this many buckets (1: in memory); None: chosen from memory_limit.
    buckets: int | None = None
    executor: str = "local"
    # Ray: None starts a local Ray for the job; "auto" or "ray://host:port" joins a cluster.
    ray_address: str | None = None
    # Scratch space for bucket files; None: beside the output.
    work_dir: str | None = None
    # LZ4 for the scratch files between stages (the partition's Arrow IPC; the feature tables then LZ4
    # Parquet): None compresses them on an object store only (a local disk takes them uncompressed, about
    # twice the bytes, and memory-maps them); true where the disk is slow or a network volume; false never.
    compress_scratch: bool | None = None
    # Keep finished jobs if the run fails; rerun with resume to go on from them (engine.pipeline.resume).
    resume: bool = False
    # Object-store options ((key, value) pairs, as Polars takes them): credentials, endpoint.
    # Never written to run.json, the model or any log.
    storage_options: tuple[tuple[str, str], ...] = ()
    # One writer per output: a run renews its lease on the output every quarter of this; a
    # lease unrenewed this long is dead and another run may take the output over (engine.io.lease).
    lease_seconds: float = 120.0

    def check(self) -> None:
        if not (math.isfinite(self.lease_seconds) and self.lease_seconds >= 1):
            msg = f"run.lease_seconds must be a number of seconds >= 1, got {self.lease_seconds}"
            raise ConfigError(msg)
        if self.buckets is not None and self.buckets < 1:
            msg = f"--buckets must be >= 1, got {self.buckets}"
            raise ConfigError(msg)
        if self.memory_limit is not None and self.memory_limit < 1:
            # The least that works depends on what the process holds: the plan says how much that is.
            msg = f"--memory-limit must be a positive size (e.g. 2GB), got {self.memory_limit} bytes"
            raise ConfigError(msg)
        if self.as_of is not None:
            parse_as_of(self.as_of)
        missing = [a for a in self.cluster.attributes
                   if self.customers is None or a not in self.customers.attributes]
        if missing:
            msg = (f"--cluster-attrs {','.join(missing)} must come from the customers table: pass --customers "
                   f"with --customer-attrs naming them")
            raise ConfigError(msg)
        if self.warm_start and self.previous is None:
            msg = "--warm-start needs --previous (the run whose centroids to start from)"
            raise ConfigError(msg)
        from segmint.engine.analytics.clv import CLV_COLUMNS   # which imports this module

        clv_named = [f for f in self.features.cluster_features or () if f in CLV_COLUMNS]
        if clv_named and not self.clv.enabled:   # refused after the map and fits as "not available"
            msg = f"features.cluster_features names CLV column(s) {clv_named} but [clv] enabled = false"
            raise ConfigError(msg)
        if not 0 <= self.max_reject_share <= 1:
            msg = f"--max-reject-share must be in [0, 1], got {self.max_reject_share}"
            raise ConfigError(msg)
        if self.dedupe_on is not None:
            unknown = [c for c in self.dedupe_on if c not in self.columns.source_columns()]
            if not self.dedupe_on or unknown:
                msg = (f"--dedupe-on names columns that are not mapped: {unknown or '(none)'}; "
                       f"mapped columns are {self.columns.source_columns()}")
                raise ConfigError(msg)
            if self.columns.customer not in self.dedupe_on:
                msg = (f"--dedupe-on must include the customer column ({self.columns.customer}): a duplicate "
                       f"is a repeat of one customer's row")
                raise ConfigError(msg)


# Options that cannot change a run's outputs: left out of config_hash.
_NOT_HASHED = ("overwrite", "memory_limit", "buckets", "executor", "ray_address", "work_dir", "compress_scratch",
               "resume", "lease_seconds")
# Fields filled from a section of their own ([cluster], [storage], [lifecycle], ...), not keys of their parent's.
_OTHER_SECTIONS = {"columns", "features", "cluster", "clv", "sampling", "events", "customers", "storage_options",
                   "lifecycle"}
# Options never written anywhere (credentials).
_SECRET = ("storage_options",)


def load_toml(path: str | Path) -> RunConfig:
    """Read a ``segmint.toml``. Sections: [columns], [features], [lifecycle], [cluster], [clv],
    [sampling], [events], [customers], [run], [storage] (object-store options, e.g. aws_region)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        msg = f"config file not found: {path}"
        raise ConfigError(msg) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"config file {path} is not valid TOML: {exc}"
        raise ConfigError(msg) from None
    known = {"columns", "features", "lifecycle", "cluster", "clv", "sampling", "events", "customers", "run",
             "storage"}
    if unknown := set(raw) - known:
        msg = f"unknown section(s) {sorted(unknown)} in {path}; known: {sorted(known)}"
        raise ConfigError(msg)
    for name in known:
        if name in raw and not isinstance(raw[name], dict):
            msg = f"[{name}] in {path} must be a table of keys, got {raw[name]!r}"
            raise ConfigError(msg)
    storage = tuple((str(k), str(v)) for k, v in raw.get("storage", {}).items())
    feats = dict(raw.get("features", {}))
    if "rfm_grid" in feats:
        try:
            feats["rfm_grid"] = tuple((g["name"], tuple(g["r"]), tuple(g["f"])) for g in raw["features"]["rfm_grid"])
        except (TypeError, KeyError) as exc:
            msg = f"features.rfm_grid in {path} needs tables with name, r and f ({exc})"
            raise ConfigError(msg) from None
    try:
        cluster = dict(raw.get("cluster", {}))
        run = dict(raw.get("run", {}))
        if isinstance(run.get("dedupe_on"), str):
            run["dedupe_on"] = tuple(c.strip() for c in run["dedupe_on"].split(",") if c.strip())
        if isinstance(run.get("memory_limit"), str):
            run["memory_limit"] = parse_size(run["memory_limit"])
        if isinstance(run.get("as_of"), dt.date):  # an unquoted TOML date or datetime
            run["as_of"] = run["as_of"].isoformat()
        # '' leaves an optional column out, as the flags' '' does (TOML has no null): it named a column ''.
        columns = {k: None if v == "" and k not in ("customer", "time") else v
                   for k, v in raw.get("columns", {}).items()}
        if columns.get("quantity") and "amount" not in columns:   # as --quantity-col: no default amount beside them
            columns["amount"] = None
        return RunConfig(
            columns=_build(Columns, columns),
            features=_build(FeatureConfig, feats, lifecycle=_build(LifecycleConfig, raw.get("lifecycle", {}))),
            cluster=_build(ClusterConfig, cluster),
            clv=_build(ClvConfig, raw.get("clv", {})),
            sampling=_build(SamplingConfig, raw.get("sampling", {})),
            events=_side(EventSource, raw.get("events")),
            customers=_side(CustomerSource, raw.get("customers")),
            storage_options=storage,
            **_known(RunConfig, run),
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_as_of(text: str, name: str = "--as-of") -> dt.datetime:
    """An ISO date (meaning the end of that day, at its offset where one follows) or an ISO datetime, as naive
    UTC. A date is a calendar date in either ISO 8601 form (2026-06-30, 20260630): the basic form was read as
    a datetime, so its day ended at midnight. Date and time are separated by T or a space: Python reads any
    character there, and '2026-06-30+05:00' meant 05:00 on that day, '2026-06-30x12' noon. ``name``: how the
    caller takes it, for messages (``Model.predict``'s as_of=)."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2}|\d{8})(.*)", text.strip())
    try:
        if m is None:
            raise ValueError(text)
        day, rest = m.groups()
        if not rest or re.fullmatch(r"Z|z|[+-]\d{2}(:?\d{2})?", rest):
            value = dt.datetime.combine(dt.date.fromisoformat(day), dt.time.max)
            value = dt.datetime.fromisoformat(value.isoformat() + rest.upper()) if rest else value
        elif rest[0] in "Tt ":
            value = dt.datetime.fromisoformat(f"{day}T{rest[1:]}")
        else:
            raise ValueError(text)
    except ValueError:
        msg = f"{name} {text!r} is not a date or datetime; use e.g. 2026-06-30 or 2026-06-30T18:00"
        raise ConfigError(msg) from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except OverflowError:   # 9999-12-31-05:00 is in year 10000 in UTC: "unexpected OverflowError", exit 1
            msg = f"{name} {text!r} is beyond the years 1-9999 in UTC; give a time within them"
            raise ConfigError(msg) from None
    return value


def parse_size(text: str) -> int:
    """'2GB', '512MiB', '1.5G', '1000000' -> bytes (K/M/G/T, decimal or binary)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", str(text).lower())
    if not m:
        msg = f"--memory-limit {text!r} is not a size; use e.g. 2GB, 512MiB or 6G"
        raise ConfigError(msg)
    base = 1024 if m.group(3).startswith("i") else 1000
    return int(float(m.group(1)) * base ** " kmgt".index(m.group(2) or " "))


def config_hash(cfg: RunConfig) -> str:
    """A stable digest of the options that can change the outputs (recorded in run.json and the model)."""
    doc = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_HASHED}
    if doc.get("warm_start") is None and cfg.previous is not None:
        doc["warm_start"] = True    # the default with --previous, said or not: the same run
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON form of a config dataclass, without secrets (storage options)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _SECRET}


def _count(value: Any, name: str, auto: str | None) -> Any:
    """A positive integer (an int, NumPy's too, or its digits as text) or 'auto' in any case (-> ``auto``)."""
    number = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto":
            return auto
        number = int(text) if text.isascii() and text.isdigit() else None   # int() also took '1_000' and '+5'
    if value is None:
        return None
    if isinstance(number, numbers.Integral) and not isinstance(number, bool) and number >= 1:
        return int(number)
    msg = f"cluster.{name} (--{name.replace('_', '-')}) must be a positive integer or 'auto', got {value!r}"
    raise ConfigError(msg)


def _shown(value: Any) -> str:
    """A value in one short line: a DataFrame given as a path printed the whole frame over many lines."""
    text = repr(value)
    if len(text) <= 120 and "\n" not in text:
        return text
    if isinstance(value, (list, tuple)):   # "must be a tuple of strings, got a tuple" said nothing
        return f"a {type(value).__name__} of {', '.join(sorted({type(v).__name__ for v in value}))}"
    return f"a {type(value).__name__}"


def _tupled(value: Any) -> Any:
    """Lists, and lists in them, as tuples."""
    return tuple(_tupled(v) for v in value) if isinstance(value, (list, tuple)) else value


def _members(hint: Any) -> tuple[Any, ...]:
    """The types of a union (``float | None``: float, NoneType), or the type itself."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if origin is tuple:
        args = typing.get_args(hint)
        each = {str: "strings", int: "integers", float: "numbers"}.get(args[0]) if args[-1:] == (Ellipsis,) else None
        return "a tuple (a list in TOML)" + (f" of {each}" if each else "")
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of one TOML section, refused where a key is not a field of ``cls``; the message lists the keys
    of that section, not the fields other sections fill ([run] listed cluster, clv, storage_options, ...)."""
    names = {f.name for f in dataclasses.fields(cls)} - _OTHER_SECTIONS
    if unknown := set(values) - names:
        # A section's key inside another ([features] lifecycle = {...}) was passed on, then overwritten by the
        # section's defaults without a word, or failed as a keyword given twice ([run] columns, exit 1).
        own = [f"[{'storage' if k == 'storage_options' else k}]" for k in sorted(unknown & _OTHER_SECTIONS)]
        where = f" ({', '.join(own)} is a section of its own)" if own else ""
        msg = f"unknown key(s) {sorted(unknown)} in [{cls.section}]{where}; known: {sorted(names)}"
        raise ConfigError(msg)
    return values


def _side(cls: type, values: dict[str, Any] | None) -> Any:
    if values is None:
        return None
    if "paths" not in values:   # it said "EventSource.__init__() missing 1 required keyword-only argument"
        msg = f"[{cls.section}] needs paths = [\"...\"] (the files or folders of the table), or leave the section out"
        raise ConfigError(msg)
    # '' leaves an optional column out, as in [columns] and as the flags' '' does: session = "" named a column ''.
    optional = {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}
    return _build(cls, {k: None if v == "" and k in optional else v for k, v in values.items()})


def _build(cls: type, values: dict[str, Any], **sections: Any) -> Any:
    """``cls`` of one TOML section's ``values``, with the ``sections`` nested in it (built from their own)."""
    try:
        return cls(**_known(cls, values), **sections)
    except TypeError as exc:
        msg = f"bad value in [{cls.section}]: {exc}"
        raise ConfigError(msg) from None
