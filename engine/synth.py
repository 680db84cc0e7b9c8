"""Synthetic transaction data with planted personas, for the demo, tests and benchmarks.

``generate`` writes ``DIR/transactions/part-*.parquet`` (customer_id, ts,
amount, order_id, channel, category: the default column mapping) and
``DIR/personas.parquet`` (customer_id, persona), so that clustering recovery
can be measured. Same arguments, same bytes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from segmint.engine.errors import ConfigError
from segmint.engine.io.sink import staged_dir
from segmint.kernels.synth import simulate_purchases

__all__ = ["PERSONAS", "CHANNELS", "CATEGORIES", "GenerateResult", "generate"]

CHANNELS = ("web", "app", "store")
CATEGORIES = ("books", "music", "electronics", "fashion", "home", "beauty",
              "sports", "toys", "grocery", "garden")
WINDOW_DAYS = 730.0
DEFAULT_END = dt.datetime(2026, 6, 30, 23, 59, 59)
ROWS_PER_FILE = 1_000_000


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


def generate(out: str | Path, *, customers: int, seed: int = 0,
             end: dt.datetime = DEFAULT_END, overwrite: bool = False) -> GenerateResult:
    """Write a synthetic dataset of ``customers`` customers to ``out`` (atomically)."""
    if customers < 1:
        msg = f"--customers must be >= 1, got {customers}"
        raise ConfigError(msg)
    lines = _simulate(customers, seed, end)
    personas = pl.DataFrame({
        "customer_id": _customer_ids(np.arange(customers)),
        "persona": pl.Series([p.name for p in PERSONAS])[_persona_of(customers, seed)],
    })
    with staged_dir(out, overwrite=overwrite) as stage:
        (stage / "transactions").mkdir()
        n_files = max(1, -(-lines.height // ROWS_PER_FILE))
        for f in range(n_files):
            part = lines.slice(f * ROWS_PER_FILE, ROWS_PER_FILE)
            part.write_parquet(stage / "transactions" / f"part-{f:05d}.parquet")
        personas.write_parquet(stage / "personas.parquet")
    return GenerateResult(out=Path(out), customers=customers, lines=lines.height, files=n_files)


def _persona_of(customers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    shares = np.array([p.share for p in PERSONAS])
    return rng.choice(len(PERSONAS), size=customers, p=shares / shares.sum())


def _customer_ids(index: np.ndarray) -> np.ndarray:
    return (1_000_000 + index).astype(np.int64)


def _simulate(customers: int, seed: int, end: dt.datetime) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 2])
    persona = _persona_of(customers, seed).astype(np.int64)
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
        seed, persona, birth, rate, dropout, spend_mu, favourite, WINDOW_DAYS,
        np.array([p.spend_sigma for p in table]), np.array([p.refund_p for p in table]),
        np.array([p.lines_mean for p in table]), chan_cum,
        np.array([p.cat_focus for p in table]), len(CATEGORIES))
    start = end.replace(tzinfo=dt.timezone.utc) - dt.timedelta(days=WINDOW_DAYS)
    ts_us = (int(start.timestamp()) + np.round(day * 86_400.0).astype(np.int64)) * 1_000_000
    # A transaction log is ordered by time; the stable sort keeps ties in simulation order.
    perm = np.argsort(ts_us, kind="stable")
    return pl.DataFrame({
        "customer_id": _customer_ids(cust[perm]),
        "ts": pl.Series(ts_us[perm]).cast(pl.Datetime("us")),
        "amount": amount[perm],
        "order_id": (50_000_000 + order[perm]).astype(np.int64),
        "channel": pl.Series(np.array(CHANNELS)[channel[perm]]),
        "category": pl.Series(np.array(CATEGORIES)[category[perm]]),
    })
