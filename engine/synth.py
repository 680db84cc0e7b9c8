"""Synthetic transaction data with planted personas, for the demo, tests and benchmarks.

``generate`` writes ``DIR/transactions/part-*.parquet`` (customer_id, ts,
amount, order_id, channel, category: the default column mapping),
``DIR/personas.parquet`` (customer_id, persona), so that clustering recovery
can be measured, ``DIR/events/part-*.parquet`` (customer_id, ts, event_type,
session_id: a session before every order, browse-only sessions, and prospects
who never buy) and ``DIR/customers.parquet`` (customer_id, region, age_band,
signup_date). Same arguments, same bytes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from segmint.engine.errors import ConfigError
from segmint.engine.io import store
from segmint.engine.io.sink import staged_dir
from segmint.kernels.synth import simulate_purchases

__all__ = ["GENERATOR_VERSION", "PERSONAS", "CHANNELS", "CATEGORIES", "REGIONS", "AGE_BANDS", "GenerateResult", "generate"]

CHANNELS = ("web", "app", "store")
CATEGORIES = ("books", "music", "electronics", "fashion", "home", "beauty",
              "sports", "toys", "grocery", "garden")
REGIONS = ("north", "south", "east", "west", "central")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
WINDOW_DAYS = 730.0
PROSPECT_SHARE = 0.25          # visitors who never buy, per customer
_MINUTE_US = 60_000_000
DEFAULT_END = dt.datetime(2026, 6, 30, 23, 59, 59)
ROWS_PER_FILE = 1_000_000
# Customers simulated (and written) together: the generator's memory does not grow with the size.
BLOCK_CUSTOMERS = 10_000
# Bumped whenever the same arguments would give other bytes (benchmark caches key on it).
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    birth_days_ago: tuple[float, float]   # first purchase, uniform in this range
    mean_gap_days: float                  # mean days between orders while alive
    dropout: float                        # probability of churning after an order
    order_value: float                    # median order value
    spend_sigma: float
    refund_p: float                       # probability a line is refunded later
    lines_mean: float                     # mean lines per order
    channel_p: tuple[float, float, float] # web, app, store
    cat_focus: float                      # probability a line is the favourite category


PERSONAS: tuple[Persona, ...] = (
    Persona("frequent high spender", .08, (120, 730), 12, .01, 140, .35, .04, 2.0, (.3, .6, .1), .6),
    Persona("loyal regular", .20, (200, 730), 30, .01, 55, .30, .03, 1.6, (.45, .15, .4), .7),
    Persona("bargain hunter", .20, (60, 730), 20, .02, 18, .35, .20, 2.4, (.8, .15, .05), .2),
    Persona("new customer", .15, (0, 45), 20, .05, 45, .40, .05, 1.5, (.5, .3, .2), .5),
    Persona("lapsed", .27, (400, 730), 35, .35, 40, .40, .05, 1.4, (.5, .2, .3), .5),
    Persona("big-ticket occasional", .10, (120, 730), 110, .01, 520, .30, .06, 1.1, (.15, .05, .8), .9),
)


@dataclass(frozen=True)
class GenerateResult:
    out: Path
    customers: int
    lines: int
    files: int
    events: int


def generate(out: str | Path, *, customers: int, seed: int = 0, events: bool = True,
             end: dt.datetime = DEFAULT_END, overwrite: bool = False) -> GenerateResult:
    """Write a synthetic dataset of ``customers`` customers to ``out`` (atomically).

    Customers are simulated in blocks of BLOCK_CUSTOMERS, each seeded from
    (seed, block), so memory stays flat however many customers are asked for.
    """
    out = store.local_only(out, "generate's --out", writing=True)   # staged_dir took s3://b/x for a Path: exit 1
    if customers < 1:
        msg = f"--n-customers must be >= 1, got {customers}"
        raise ConfigError(msg)
    if seed < 0:   # NumPy's generators take none below 0: a traceback, exit 1
        msg = f"--seed must be >= 0, got {seed}"
        raise ConfigError(msg)
    n_lines = n_events = n_files = n_event_files = 0
    personas, tables = [], []
    with staged_dir(out, overwrite=overwrite) as stage:
        for block, start in enumerate(range(0, customers, BLOCK_CUSTOMERS)):
            count = min(BLOCK_CUSTOMERS, customers - start)
            persona = _persona_of(count, seed, block)
            lines = _simulate(start, persona, seed, block, end)
            n_files += _write_parts(lines, stage / "transactions", first=n_files)
            n_lines += lines.height
            if events:
                ev = _events(lines, customers, start, count, seed, block)
                n_event_files += _write_parts(ev, stage / "events", first=n_event_files)
                n_events += ev.height
            who = pl.DataFrame({"customer_id": _customer_ids(start + np.arange(count)),
                                "persona": pl.Series([p.name for p in PERSONAS])[persona]})
            personas.append(who)
            tables.append(_customers_table(lines, who, seed, block))
        pl.concat(personas).write_parquet(stage / "personas.parquet")
        pl.concat(tables).write_parquet(stage / "customers.parquet")
    return GenerateResult(out=Path(out), customers=customers, lines=n_lines, files=n_files, events=n_events)


def _write_parts(frame: pl.DataFrame, folder: Path, *, first: int) -> int:
    """Write ``frame`` as part files numbered from ``first``; returns how many."""
    folder.mkdir(exist_ok=True)
    n_files = max(1, -(-frame.height // ROWS_PER_FILE))
    for f in range(n_files):
        frame.slice(f * ROWS_PER_FILE, ROWS_PER_FILE).write_parquet(folder / f"part-{first + f:05d}.parquet")
    return n_files


def _events(lines: pl.DataFrame, customers: int, first: int, count: int, seed: int, block: int) -> pl.DataFrame:
    """A session before each order (visit, views, cart, purchase), browse-only sessions, prospects."""
    rng = np.random.default_rng([seed, 5, block])
    orders = (lines.filter(pl.col("amount") > 0).group_by("order_id")
              .agg(pl.col("customer_id").first(), pl.col("ts").min()).sort("order_id"))
    cust = orders["customer_id"].to_numpy()
    ts = orders["ts"].dt.epoch("us").to_numpy()
    n = cust.size
    views = 1 + rng.poisson(0.6, n)
    cart = rng.random(n) < 0.7
    # Purchase sessions: visit, views spread over the minutes before, optional cart, purchase.
    parts = [(cust, ts - rng.integers(10, 30, n) * _MINUTE_US, "visit", np.arange(n)),
             (np.repeat(cust, views), np.repeat(ts, views) - rng.integers(2, 10, views.sum()) * _MINUTE_US,
              "product_view", np.repeat(np.arange(n), views)),
             (cust[cart], ts[cart] - _MINUTE_US, "add_to_cart", np.arange(n)[cart]),
             (cust, ts, "purchase", np.arange(n))]
    # Browse-only sessions of buyers (around their orders) and of prospects (never buy).
    browse = rng.random(n) < 0.3
    # Prospect ids follow all customer ids, in the same block order.
    first_prospect = 1_000_000 + customers + int(first * PROSPECT_SHARE)
    prospects = np.arange(first_prospect, first_prospect + int(count * PROSPECT_SHARE))
    end = int(ts.max()) if n else 0
    b_cust = np.concatenate([cust[browse], prospects])
    b_ts = np.concatenate([ts[browse] - rng.integers(1, 20, browse.sum()) * 86_400_000_000,
                           end - rng.integers(0, int(WINDOW_DAYS), prospects.size) * 86_400_000_000])
    b_sess = n + np.arange(b_cust.size)
    b_views = rng.poisson(0.8, b_cust.size)
    parts += [(b_cust, b_ts, "visit", b_sess),
              (np.repeat(b_cust, b_views), np.repeat(b_ts, b_views) + _MINUTE_US, "product_view",
               np.repeat(b_sess, b_views))]
    frame = pl.concat([pl.DataFrame({"customer_id": c, "ts": pl.Series(t).cast(pl.Datetime("us")),
                                     "event_type": kind,
                                     "session_id": 70_000_000 + block * 1_000_000_000 + sid})
                       for c, t, kind, sid in parts])
    return frame.sort("ts", "session_id", "event_type", maintain_order=True)


def _customers_table(lines: pl.DataFrame, personas: pl.DataFrame, seed: int, block: int) -> pl.DataFrame:
    """Region and age band, mildly persona-dependent; signup up to 60 days before the first order."""
    mix = np.random.default_rng([seed, 6])  # persona -> region/age mix: one for the whole dataset
    tilt = mix.dirichlet(np.ones(len(REGIONS)) * 3, len(PERSONAS))
    age = mix.dirichlet(np.ones(len(AGE_BANDS)) * 3, len(PERSONAS))
    rng = np.random.default_rng([seed, 6, block])
    first = lines.group_by("customer_id").agg(pl.col("ts").min()).sort("customer_id")
    persona = personas.join(first, on="customer_id").sort("customer_id")
    code = persona["persona"].replace_strict([p.name for p in PERSONAS], list(range(len(PERSONAS)))).to_numpy()
    u1, u2 = rng.random(code.size), rng.random(code.size)
    region = (u1[:, None] > np.cumsum(tilt, axis=1)[code]).sum(axis=1)
    band = (u2[:, None] > np.cumsum(age, axis=1)[code]).sum(axis=1)
    return pl.DataFrame({
        "customer_id": persona["customer_id"],
        "region": np.array(REGIONS)[np.minimum(region, len(REGIONS) - 1)],
        "age_band": np.array(AGE_BANDS)[np.minimum(band, len(AGE_BANDS) - 1)],
        "signup_date": (persona["ts"] - pl.Series(rng.integers(0, 61, code.size)).cast(pl.Duration("ms")) * 86_400_000
                        ).dt.date(),
    })


def _persona_of(customers: int, seed: int, block: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1, block])
    shares = np.array([p.share for p in PERSONAS])
    return rng.choice(len(PERSONAS), size=customers, p=shares / shares.sum())


def _customer_ids(index: np.ndarray) -> np.ndarray:
    return (1_000_000 + index).astype(np.int64)


def _simulate(first: int, persona: np.ndarray, seed: int, block: int, end: dt.datetime) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 2, block])
    customers = persona.size
    persona = persona.astype(np.int64)
    table = PERSONAS
    lo = np.array([p.birth_days_ago[0] for p in table])[persona]
    hi = np.array([p.birth_days_ago[1] for p in table])[persona]
    birth = WINDOW_DAYS - rng.uniform(lo, hi)
    # Customer-level heterogeneity around the persona: gamma purchase rates
    # (as in BG/NBD), beta dropout, lognormal order value.
    rate = rng.gamma(8.0, 1.0 / (8.0 * np.array([p.mean_gap_days for p in table])[persona]))
    drop_mean = np.array([p.dropout for p in table])[persona]
    dropout = rng.beta(20 * drop_mean, 20 * (1 - drop_mean))
    spend_mu = np.log(np.array([p.order_value for p in table])[persona]) + rng.normal(0, .15, customers)
    favourite = rng.integers(0, len(CATEGORIES), customers)
    chan_cum = np.cumsum(np.array([p.channel_p for p in table]), axis=1)
    cust, day, order, amount, channel, category = simulate_purchases(
        int(rng.integers(2**31)), persona, birth, rate, dropout, spend_mu, favourite, WINDOW_DAYS,
        np.array([p.spend_sigma for p in table]), np.array([p.refund_p for p in table]),
        np.array([p.lines_mean for p in table]), chan_cum,
        np.array([p.cat_focus for p in table]), len(CATEGORIES))
    start = end.replace(tzinfo=dt.timezone.utc) - dt.timedelta(days=WINDOW_DAYS)
    ts_us = (int(start.timestamp()) + np.round(day * 86_400.0).astype(np.int64)) * 1_000_000
    # A transaction log is ordered by time; the stable sort keeps ties in simulation order.
    perm = np.argsort(ts_us, kind="stable")
    return pl.DataFrame({
        "customer_id": _customer_ids(first + cust[perm]),
        "ts": pl.Series(ts_us[perm]).cast(pl.Datetime("us")),
        "amount": amount[perm],
        "order_id": (50_000_000 + block * 1_000_000_000 + order[perm]).astype(np.int64),
        "channel": pl.Series(np.array(CHANNELS)[channel[perm]]),
        "category": pl.Series(np.array(CATEGORIES)[category[perm]]),
    })
